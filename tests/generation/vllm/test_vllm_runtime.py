"""``backend: vllm`` through fem's own entry points: a recipe's vllm_* keys reach the engine (build_backend), and a
forced-answer E-step draw on the vLLM backend reads the same option probabilities as the hf backend."""

from __future__ import annotations

import pytest

from fem.drawing import PLAIN
from fem.readout import score_completions
from fem.recipe import parse_configs

pytestmark = pytest.mark.vllm


def _configs(tmp_path, model_dir, *extra):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        f"task: arc\nanswer_mode: forced\nscheme: rejection\nmodel_name_or_path: {model_dir}\noutput_dir: {tmp_path}\n"
        "backend: vllm\nmax_new_tokens: 12\nestep_samples: 2\nlora_r: 8\n"
    )
    return parse_configs(["--config", str(recipe), *extra])


def test_build_backend_passes_the_recipe_engine_keys(tmp_path, monkeypatch, vllm_backend, vllm_model_dir, hf_ref):
    import fem.generation.vllm as vllm_module
    from fem.generation import build_backend

    seen = {}

    def fake_create_engine(model_dir, options, model_dtype="float32"):
        seen.update(model_dir=model_dir, options=options, dtype=model_dtype)
        return vllm_backend.llm  # the session's engine: no second engine in this test

    monkeypatch.setattr(vllm_module, "create_engine", fake_create_engine)
    configs = _configs(
        tmp_path,
        vllm_model_dir,
        "--vllm_max_model_len",
        "384",
        "--vllm_kv_cache_gib",
        "0.25",
        "--vllm_dtype",
        "float32",
    )
    backend = build_backend(
        "vllm", hf_ref.model, hf_ref.tokenizer, configs=configs, model_dir=lambda: str(vllm_model_dir)
    )
    assert isinstance(backend, vllm_module.VLLMBackend)
    options = seen["options"]
    assert seen["model_dir"] == str(vllm_model_dir) and seen["dtype"] == "float32"
    assert (options.max_model_len, options.kv_cache_gib, options.dtype, options.max_lora_rank) == (
        384,
        0.25,
        "float32",
        8,
    )
    assert options.enable_prefix_caching and options.enforce_eager and options.in_process
    # LoRA wraps the layers adapters train (all-linear: every linear layer but lm_head, whose LoRA would cost a
    # vocabulary-wide product per token); 32-token KV blocks on CPU unless the recipe says otherwise
    assert "q_proj" in options.lora_target_modules and "lm_head" not in options.lora_target_modules
    assert options.block_size == 32
    other = build_backend(
        "vllm",
        hf_ref.model,
        hf_ref.tokenizer,
        configs=_configs(tmp_path, vllm_model_dir, "--vllm_block_size", "64", "--lora_target_modules", "q_proj"),
        model_dir=lambda: str(vllm_model_dir),
    )
    assert seen["options"].block_size == 64 and seen["options"].lora_target_modules == ("q_proj",)
    assert isinstance(other, vllm_module.VLLMBackend)


def test_forced_estep_draw_on_vllm_reads_the_hf_probabilities(tmp_path, vllm_backend, vllm_model_dir, hf_ref):
    from fem.runtime import Runtime
    from fem.tasks import build_task
    from fem.utils.distributed import World

    configs = _configs(tmp_path, vllm_model_dir)
    task = build_task(configs.task)
    examples = task.load("eval")[:3]
    runtime = Runtime(configs, task, hf_ref.model, hf_ref.tokenizer, vllm_backend, World())
    drawer = runtime.drawer(runtime.proposal(), sample_answers=True)
    samples = drawer.draw(examples, PLAIN, 2, seed=0)
    assert [len(row) for row in samples] == [2, 2, 2]
    flat = [s for row in samples for s in row]
    for sample in flat:
        trace = sample.trace
        assert len(trace.logp) == len(trace.logq) == len(trace.entropy) == len(trace.token_ids) > 0
        probs = sample.prediction.info["option_probs"]
        assert sum(probs.values()) == pytest.approx(1.0, abs=1e-6)
    prompts = [drawer.render(s.example, PLAIN) for s in flat]
    reference = score_completions(
        task, hf_ref, [s.example for s in flat], [s.trace.text for s in flat], "forced", prompt_ids=prompts
    )
    for sample, ref in zip(flat, reference):
        ours = sample.prediction.info["option_probs"]
        assert ours == pytest.approx(ref.info["option_probs"], abs=1e-3)
