"""``fem export``: a run's round as a PEFT folder or a merged transformers model, each with a hub model card.

The merged model must be the base exactly as training loaded it (a GGUF base de-quantised) plus the adapter: its
greedy outputs and logits equal base + adapter through PEFT. Bad input is one error line."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
import yaml
from huggingface_hub import ModelCard
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from fem.cli import main
from fem.models import SMOLLM2_ALIAS, SMOLLM2_HUB_ID, load_model, load_tokenizer

PROMPTS = ["Number: 3", "Number: 10", "Is 7 odd? Answer A or B."]


def fem_export(*args: str) -> int:
    with pytest.raises(SystemExit) as exit_info:
        main(["export", *args])
    return exit_info.value.code


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def encoded(tokenizer, prompt: str) -> dict:
    messages = [{"role": "user", "content": prompt}]
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)


def assert_same_model(merged, reference, tokenizer, new_tokens: int = 8) -> None:
    """Greedy continuations equal and logits close on every prompt."""
    for prompt in PROMPTS:
        inputs = encoded(tokenizer, prompt)
        with torch.no_grad():
            a = merged.generate(**inputs, max_new_tokens=new_tokens, do_sample=False)
            b = reference.generate(**inputs, max_new_tokens=new_tokens, do_sample=False)
            assert a.tolist() == b.tolist(), prompt
            torch.testing.assert_close(merged(a).logits, reference(a).logits, rtol=1e-4, atol=1e-4)


def test_adapter_export_with_a_hub_model_card(tracked_run, tmp_path, capsys):
    out = tmp_path / "adapter"
    assert fem_export(str(tracked_run), "--out", str(out)) == 0
    assert "wrote the adapter" in capsys.readouterr().out
    source = tracked_run / "round_001" / "adapter"  # the last round by default
    for name in ("adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "chat_template.jinja"):
        assert sha(out / name) == sha(source / name), name
    card = ModelCard.load(out / "README.md")
    assert card.data.library_name == "peft" and card.data.pipeline_tag == "text-generation"
    assert {"fem", "lora", "pps", "toy_parity"} <= set(card.data.tags)
    assert card.data.base_model is None  # the tiny random model has no hub id
    lines = {m["round"]: m for m in map(json.loads, (tracked_run / "metrics.jsonl").read_text().splitlines())}
    text = card.text
    for fragment in ("`toy_parity`", "`pps`", "`ancestral`", "round 1 (0-based) of a run of 2 rounds (finished)"):
        assert fragment in text, fragment
    assert f"| eval examples (split size) | {lines[-1]['eval/examples']} | {lines[1]['eval/examples']} |" in text
    assert f"| accuracy | {lines[-1]['eval/accuracy']:.4f} | {lines[1]['eval/accuracy']:.4f} |" in text
    recorded = yaml.safe_load((tracked_run / "config.yaml").read_text())["command_line"]
    assert recorded.startswith("fem train --config ") and "--report_to tensorboard" in recorded
    assert recorded in text
    assert oct((out / "README.md").stat().st_mode & 0o044) != "0o0", "a shared folder must be readable"

    base = load_model("tiny-random-llama")
    tuned = PeftModel.from_pretrained(base, str(out))
    inputs = encoded(AutoTokenizer.from_pretrained(out), PROMPTS[0])
    with torch.no_grad():
        with tuned.disable_adapter():
            plain = tuned(**inputs).logits
        assert not torch.allclose(tuned(**inputs).logits, plain), "the exported adapter changes the model"


def test_round_option_exports_that_round(tracked_run, tmp_path):
    out = tmp_path / "round0"
    assert fem_export(str(tracked_run), "--out", str(out), "--round", "0") == 0
    assert sha(out / "adapter_model.safetensors") == sha(tracked_run / "round_000/adapter/adapter_model.safetensors")
    assert "# run, round 0" in (out / "README.md").read_text()


def test_merged_export_equals_base_plus_adapter(tracked_run, tmp_path):
    out = tmp_path / "merged"
    assert fem_export(str(tracked_run), "--out", str(out), "--merge") == 0
    assert (out / "model.safetensors").is_file() and not list(out.glob("adapter_*"))
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and "quantization_config" not in config
    merged = AutoModelForCausalLM.from_pretrained(out)  # plain transformers: no fem, no PEFT
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.chat_template and tokenizer.eos_token == "<|im_end|>"
    eos = merged.generation_config.eos_token_id
    assert tokenizer.eos_token_id in (eos if isinstance(eos, list) else [eos]), "generation stops at the turn's end"
    reference = PeftModel.from_pretrained(load_model("tiny-random-llama"), str(tracked_run / "round_001/adapter"))
    assert_same_model(merged, reference, tokenizer)
    with torch.no_grad(), reference.disable_adapter():
        ids = encoded(tokenizer, PROMPTS[0])["input_ids"]
        assert not torch.allclose(merged(ids).logits, reference(ids).logits), "the merge must carry the adapter"
    card = ModelCard.load(out / "README.md")
    assert card.data.library_name == "transformers" and "safetensors, float32" in card.text


def test_bad_input_is_one_error_line(tracked_run, tmp_path, capsys):
    def error_of(*args: str) -> str:
        assert fem_export(*args) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("fem export: error:") and "\n" not in err and "Traceback" not in err, err
        return err

    assert "is not a fem training run" in error_of(str(tmp_path), "--out", str(tmp_path / "a"))
    assert "round 7" in error_of(str(tracked_run), "--out", str(tmp_path / "b"), "--round", "7")
    assert "rounds with one: 0, 1" in error_of(str(tracked_run), "--out", str(tmp_path / "b"), "--round", "7")
    (tmp_path / "taken").mkdir()
    assert "already exists" in error_of(str(tracked_run), "--out", str(tmp_path / "taken"))
    empty = tmp_path / "fresh_run"
    empty.mkdir()
    for name in ("config.yaml", "state.json"):
        (empty / name).write_text((tracked_run / name).read_text())
    state = json.loads((empty / "state.json").read_text())
    (empty / "state.json").write_text(json.dumps({**state, "completed": {"0": ["estep"]}}))
    assert "no round with a finished adapter" in error_of(str(empty), "--out", str(tmp_path / "c"))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists() and not (tmp_path / "c").exists()
    assert not list(tmp_path.glob(".*partial*")), "no half-written folder is left"


def test_push_to_hub_offline_fails_in_one_line_and_keeps_the_folder(tracked_run, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "to_push"
    assert fem_export(str(tracked_run), "--out", str(out), "--push_to_hub", "someone/fem-smoke") == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.startswith("fem export: error:") and "\n" not in err and "Traceback" not in err, err
    assert "someone/fem-smoke" in err and "hf upload someone/fem-smoke" in err
    assert "wrote the adapter" in captured.out and (out / "README.md").is_file()


# ------------------------------------------------------------------------------------- slow: the embedded GGUF
def synthetic_run(root: Path, model_name_or_path: str, model, tokenizer) -> Path:
    """A run dir holding one finished round whose adapter is a random (non-zero) LoRA on ``model``."""
    torch.manual_seed(0)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    adapter = root / "round_000" / "adapter"
    get_peft_model(model, lora).save_pretrained(adapter)
    tokenizer.save_pretrained(adapter)
    config = {"model_name_or_path": model_name_or_path, "task": "toy_parity", "scheme": "pps", "rounds": 1}
    (root / "config.yaml").write_text(yaml.safe_dump({"command": "fem train", "config": config}))
    (root / "state.json").write_text(json.dumps({"completed": {"0": ["estep", "mstep", "eval"]}, "finished": True}))
    return root


@pytest.mark.slow
def test_gguf_base_is_merged_from_its_dequantised_weights(tmp_path):
    run = synthetic_run(tmp_path / "run", SMOLLM2_ALIAS, load_model(SMOLLM2_ALIAS), load_tokenizer(SMOLLM2_ALIAS))
    out = tmp_path / "merged"
    assert fem_export(str(run), "--out", str(out), "--merge") == 0
    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config and not list(out.glob("*.gguf"))
    merged = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    reference = PeftModel.from_pretrained(load_model(SMOLLM2_ALIAS), str(run / "round_000" / "adapter"))
    assert_same_model(merged, reference, tokenizer, new_tokens=6)
    card = ModelCard.load(out / "README.md")
    assert card.data.base_model == SMOLLM2_HUB_ID and card.data.base_model_relation == "finetune"
    assert "Q4_1 GGUF" in card.text and "de-quantised" in card.text

    adapter_out = tmp_path / "adapter"
    assert fem_export(str(run), "--out", str(adapter_out)) == 0
    assert json.loads((adapter_out / "adapter_config.json").read_text())["base_model_name_or_path"] == SMOLLM2_HUB_ID
    assert "slightly different model" in (adapter_out / "README.md").read_text()


# ------------------------------------------------------------------------------- vllm: the merged folder as is
VLLM_SCRIPT = """
import json, sys
from vllm import LLM, SamplingParams
if __name__ == "__main__":
    folder, prompts = sys.argv[1], json.loads(sys.argv[2])
    llm = LLM(model=folder, dtype="float32", max_model_len=256, enforce_eager=True, gpu_memory_utilization=0.08)
    params = SamplingParams(max_tokens=8, temperature=0.0)
    outputs = llm.generate([{"prompt_token_ids": ids} for ids in prompts], params)
    chat = llm.get_tokenizer().apply_chat_template([{"role": "user", "content": "q"}], tokenize=False)
    print("RESULT " + json.dumps({"tokens": [list(o.outputs[0].token_ids) for o in outputs], "chat": chat}))
"""


@pytest.mark.vllm
@pytest.mark.slow  # its own engine process; make test keeps fem's vLLM backend serving the same folder (below)
def test_vllm_loads_the_merged_export_as_is(tmp_path):
    """vLLM (no fem, no PEFT) serves the merged folder: same greedy tokens as transformers, the chat template is
    the run's. A tiny model of hidden size 128 (head size 32: vLLM's CPU attention needs >= 32)."""
    import subprocess
    import sys

    pytest.importorskip("vllm")
    from fem.models import load_model_and_tokenizer
    from fem.testing.tiny import save_tiny_model

    base_dir = save_tiny_model(tmp_path / "tiny128", hidden_size=128)
    model, tokenizer = load_model_and_tokenizer(str(base_dir))
    run = synthetic_run(tmp_path / "run", str(base_dir), model, tokenizer)
    out = tmp_path / "merged"
    assert fem_export(str(run), "--out", str(out), "--merge") == 0
    merged, tokenizer = AutoModelForCausalLM.from_pretrained(out), AutoTokenizer.from_pretrained(out)
    prompts = [encoded(tokenizer, p)["input_ids"][0].tolist() for p in PROMPTS]
    expected = []
    for ids in prompts:
        with torch.no_grad():
            full = merged.generate(torch.tensor([ids]), max_new_tokens=8, do_sample=False)[0].tolist()
        expected.append(full[len(ids) :])
    script = tmp_path / "serve.py"
    script.write_text(VLLM_SCRIPT)
    result = subprocess.run(
        [sys.executable, str(script), str(out), json.dumps(prompts)], capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stderr[-3000:]
    got = json.loads(next(line for line in result.stdout.splitlines() if line.startswith("RESULT "))[7:])
    assert got["chat"] == tokenizer.apply_chat_template([{"role": "user", "content": "q"}], tokenize=False)
    eos = tokenizer.eos_token_id
    assert [t[: t.index(eos) + 1] if eos in t else t for t in expected] == got["tokens"]


@pytest.mark.vllm
def test_fem_vllm_backend_serves_the_merged_export(tmp_path):
    """fem's own ``backend: vllm`` serves the merged folder: the tokens its engine draws carry the per-token logp,
    logq and entropy the ``hf`` backend gives on the same folder (within 1e-3 in fp32), and differ from the base
    model's (the merge is what is served). The engine runs in vLLM's own process (``in_process=False``): a test
    session holds one in-process engine (tests/generation/vllm)."""
    pytest.importorskip("vllm")
    from fem.generation.base import SamplingParams
    from fem.generation.hf import HFBackend
    from fem.generation.vllm import VLLMBackend
    from fem.generation.vllm_engine import EngineOptions
    from fem.models import load_model_and_tokenizer
    from fem.proposals.power import rescore
    from fem.testing.tiny import save_tiny_model

    base_dir = save_tiny_model(tmp_path / "tiny128", hidden_size=128)
    base, tokenizer = load_model_and_tokenizer(str(base_dir))
    run = synthetic_run(tmp_path / "run", str(base_dir), base, tokenizer)
    out = tmp_path / "merged"
    assert fem_export(str(run), "--out", str(out), "--merge") == 0
    merged, tokenizer = load_model_and_tokenizer(str(out))
    hf, base_hf = HFBackend(merged, tokenizer), HFBackend(load_model_and_tokenizer(str(base_dir))[0], tokenizer)
    options = EngineOptions(max_model_len=256, kv_cache_gib=0.0625, adapter_mode="merge", in_process=False)
    backend = VLLMBackend(merged, tokenizer, model_dir=str(out), options=options)
    try:
        prompts = [encoded(tokenizer, p)["input_ids"][0].tolist() for p in PROMPTS]
        params = SamplingParams(temperature=0.7, top_k=20)
        conts, _ = backend.generate(prompts, params, 8, generator=torch.Generator().manual_seed(0))
    finally:
        backend.close()
    gaps_to_base = []
    for prompt, cont in zip(prompts, conts):
        assert cont.token_ids
        ref = rescore(hf, prompt, cont.token_ids, params)
        for name in ("logp", "logq", "entropy"):
            assert getattr(cont, name) == pytest.approx(getattr(ref, name), abs=1e-3), name
        other = rescore(base_hf, prompt, cont.token_ids, params)
        gaps_to_base.append(max(abs(a - b) for a, b in zip(cont.logp, other.logp)))
    assert max(gaps_to_base) > 1e-2  # the served weights are the merge, not the base
