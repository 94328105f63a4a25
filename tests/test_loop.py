"""The EM loop end to end on the tiny model, run the way a user runs it (`fem train --config ...`)."""

from __future__ import annotations

import hashlib
import json
import signal
from pathlib import Path

import pytest
from helpers import FAST_OVERRIDES, ROOT, SMOKE_RECIPE, run_fem

RECIPE = SMOKE_RECIPE
FAST = FAST_OVERRIDES


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def rounds(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fem_cache")


@pytest.mark.parametrize("scheme", ["pps", "rejection", "star"])
def test_smoke_recipe_learns_and_leaves_a_complete_run(scheme, tmp_path, cache_dir):
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file

    from fem.models import load_model_and_tokenizer

    out = tmp_path / "run"
    env = {"FEM_CACHE": str(cache_dir)}
    result = run_fem("train", "--config", RECIPE, "--output_dir", str(out), "--scheme", scheme, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    base_file = cache_dir / "tiny-random-llama" / "model.safetensors"
    base_hash = sha(base_file)

    for name in ("config.yaml", "state.json", "metrics.jsonl", "baseline/metrics.json", "report.md"):
        assert (out / name).is_file(), name
    for k in (0, 1):
        rdir = out / f"round_{k:03d}"
        for name in ("samples.jsonl", "metrics.json", "adapter/adapter_model.safetensors", "eval/predictions.jsonl"):
            assert (rdir / name).is_file(), f"{rdir.name}/{name}"
        samples = [json.loads(line) for line in (rdir / "samples.jsonl").read_text().splitlines()]
        assert samples and all(s["kept"] and s["reward"] == 1.0 and s["scheme"] == scheme for s in samples)
        assert {s["origin"] for s in samples} <= ({"hinted"} if scheme == "pps" else {"plain", "hinted"})
    state = json.loads((out / "state.json").read_text())
    assert state["finished"] and state["completed"]["1"] == ["estep", "mstep", "eval"]

    # the loop learns: eval accuracy after 2 rounds beats the base model's
    lines = rounds(out)
    assert [m["round"] for m in lines] == [-1, 0, 1]
    assert lines[-1]["eval/accuracy"] > lines[0]["eval/accuracy"], [m["eval/accuracy"] for m in lines]

    # LoRA weights moved, base weights did not, and the adapter reloads with PEFT alone
    adapter = out / "round_001" / "adapter"
    lora = load_file(str(adapter / "adapter_model.safetensors"))
    assert any(t.abs().sum() > 0 for k, t in lora.items() if "lora_B" in k)
    assert sha(base_file) == base_hash
    model, tokenizer = load_model_and_tokenizer(str(cache_dir / "tiny-random-llama"))
    reference = {k: v.clone() for k, v in model.state_dict().items()}
    peft_model = PeftModel.from_pretrained(model, str(adapter))
    ids = tokenizer("Number: 3", return_tensors="pt").input_ids
    with torch.no_grad():
        tuned = peft_model(ids).logits
        with peft_model.disable_adapter():
            plain = peft_model(ids).logits
    assert not torch.allclose(tuned, plain)
    base_now = {
        k.replace("base_model.model.", "").replace(".base_layer", ""): v
        for k, v in peft_model.state_dict().items()
        if "lora_" not in k
    }
    assert all(torch.equal(base_now[k], v) for k, v in reference.items())


def sample_set(out: Path) -> list[tuple]:
    rows = []
    for path in sorted(out.glob("round_*/samples.jsonl")):
        for line in path.read_text().splitlines():
            s = json.loads(line)
            rows.append(
                (
                    path.parent.name,
                    s["example_id"],
                    s["attempt"],
                    s["origin"],
                    s["rationale"],
                    s["completion"],
                    s["reward"],
                )
            )
    return rows


def final_adapter(out: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(out / "round_001" / "adapter" / "adapter_model.safetensors"))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, cache_dir) -> Path:
    out = tmp_path_factory.mktemp("uninterrupted") / "run"
    result = run_fem("train", "--config", RECIPE, "--output_dir", str(out), *FAST, env={"FEM_CACHE": str(cache_dir)})
    assert result.returncode == 0, result.stderr[-3000:]
    return out


@pytest.mark.parametrize(
    "crash_at",
    [
        "estep.samples_written#2",
        "mstep.step#3",
        # also killed there by the tracked_run fixture (make test) and the reliability suite's 17 kill points
        pytest.param("write.state.json#3", marks=pytest.mark.slow),
    ],
)
def test_killed_run_resumes_to_the_same_result(crash_at, tmp_path, cache_dir, uninterrupted):
    import torch

    out = tmp_path / "run"
    env = {"FEM_CACHE": str(cache_dir)}
    killed = run_fem(
        "train", "--config", RECIPE, "--output_dir", str(out), *FAST, env={**env, "FEM_CRASH_AT": crash_at}
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    resumed = run_fem("train", "--config", RECIPE, "--output_dir", str(out), *FAST, env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    got, want = sample_set(out), sample_set(uninterrupted)
    assert len(got) == len(set(got)), "duplicate samples after resume"
    assert got == want
    a, b = final_adapter(out), final_adapter(uninterrupted)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [m["round"] for m in rounds(out)] == [-1, 0, 1]


def test_output_dir_of_another_config_is_refused_before_loading(tmp_path, cache_dir, uninterrupted):
    result = run_fem(
        "train",
        "--config",
        RECIPE,
        "--output_dir",
        str(uninterrupted),
        *FAST,
        "--learning_rate",
        "0.5",
        env={"FEM_CACHE": str(cache_dir)},
    )
    assert result.returncode == 2
    assert "output_dir" in result.stderr and "learning_rate" in result.stderr and "Traceback" not in result.stderr
    assert "loading model" not in result.stderr


def test_finished_run_is_not_redone(cache_dir, uninterrupted):
    before = (uninterrupted / "round_000" / "samples.jsonl").stat().st_mtime_ns
    result = run_fem(
        "train", "--config", RECIPE, "--output_dir", str(uninterrupted), *FAST, env={"FEM_CACHE": str(cache_dir)}
    )
    assert result.returncode == 0
    assert (uninterrupted / "round_000" / "samples.jsonl").stat().st_mtime_ns == before
    assert "E-step" not in result.stderr


def test_power_smc_estep_with_unfiltered_power_distillation(tmp_path, cache_dir):
    """One round with a power_smc E-step and reward_filter: false: wrong draws are kept too, with their own answer."""
    out = tmp_path / "run"
    result = run_fem(
        "train", "--config", RECIPE, "--output_dir", str(out), "--rounds", "1", "--num_train_epochs", "1",
        "--train_limit", "8", "--eval_limit", "4", "--eval_before_training", "false", "--scheme", "rejection",
        "--estep_samples", "2", "--estep_max_keep", "2", "--reward_filter", "false", "--proposal", "power_smc",
        "--smc_particles", "4", "--max_new_tokens", "4", "--power_block_size", "2", "--smc_ess_threshold", "1.0",
        env={"FEM_CACHE": str(cache_dir)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    samples = [json.loads(line) for line in (out / "round_000" / "samples.jsonl").read_text().splitlines()]
    assert samples and all(s["kept"] and s["proposal"] == "power_smc" for s in samples)
    wrong = [s for s in samples if s["reward"] == 0.0]
    assert wrong and all(s["completion"].endswith(f"{s['extracted']})") for s in wrong)  # its own verdict
    assert all(s["trace"]["particles"] == 4 and s["trace"]["cost"]["tokens_decoded"] >= 4 for s in samples)
    assert any(s["trace"]["resamples"] > 0 for s in samples)


def test_dry_run_loads_no_model_and_prints_the_plan(tmp_path):
    result = run_fem("train", "--config", RECIPE, "--output_dir", str(tmp_path / "x"), "--dry_run")
    assert result.returncode == 0, result.stderr
    for word in ("model", "task", "scheme", "proposal", "rounds", "output_dir"):
        assert word in result.stdout
    assert not (tmp_path / "x").exists()


def test_every_recipe_dry_runs(tmp_path, capsys, monkeypatch):
    """Every shipped recipe validates (keys, values, data, output dir) without loading a model; eval-only recipes
        through `fem eval`, the GPQA ones with a user CSV in the official layout; a `backend: vllm` recipe where vLLM
    cannot run here fails in one line that says so. In-process (the CLI's own `main`),
        so the ~40 recipes cost one TRL import."""
    import fem.models
    from fem.cli import main
    from fem.generation.vllm_env import vllm_problem

    def no_model(*args, **kwargs):
        raise AssertionError("a dry run loaded a model")

    monkeypatch.setattr(fem.models, "load_model", no_model)
    monkeypatch.setattr(fem.models, "load_tokenizer", no_model)
    recipes = sorted((ROOT / "recipes").rglob("*.yaml"))
    assert recipes
    gpqa = tmp_path / "gpqa_diamond.csv"
    gpqa.write_text(
        "Question,Correct Answer,Incorrect Answer 1,Incorrect Answer 2,Incorrect Answer 3\n"
        "Which is a noble gas?,Argon,Nitrogen,Oxygen,Hydrogen\n"
    )
    vllm_missing = vllm_problem()  # where vLLM cannot run, a backend: vllm recipe fails its dry run in one line
    for recipe in recipes:
        command = "eval" if recipe.parent.name == "eval" else "train"
        extra = ["--eval_file", str(gpqa)] if "gpqa" in recipe.stem else []
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--config", str(recipe), "--output_dir", str(tmp_path / recipe.stem), "--dry_run", *extra])
        err = capsys.readouterr().err
        if vllm_missing and "\nbackend: vllm" in recipe.read_text():
            assert exit_info.value.code != 0 and vllm_missing[0] in err and "Traceback" not in err, f"{recipe}: {err}"
            continue
        assert exit_info.value.code == 0, f"{recipe}: {err[-1500:]}"


class StopMStep(Exception):
    pass


def test_the_mstep_trains_hinted_draws_under_the_plain_prompt(tmp_path, monkeypatch):
    """PPS draws every rationale from the hinted prompt; the M-step must pair it with the plain prompt (the model
    has to produce it without the answer). Issue 17, item 13: training under the hinted prompt was caught only by
    the smoke run's accuracy. Runs the loop's own E-step and M-step on the tiny model, with the trainer replaced."""
    from fem.loop import EMRunner
    from fem.recipe import parse_configs
    from fem.runtime import build_runtime
    from fem.state import RunState

    configs = parse_configs(["--config", RECIPE, "--output_dir", str(tmp_path / "run"), *FAST, "--train_limit", "8"])
    runner = EMRunner(configs)
    runner.runtime = build_runtime(configs, runner.world)
    runner.train_examples = runner.runtime.task.load("train")
    runner.state = RunState(config_hash="test", config={})
    rdir = tmp_path / "run" / "round_000"
    runner.estep(0, rdir)
    samples = [json.loads(line) for line in (rdir / "samples.jsonl").read_text().splitlines()]
    assert samples and {s["origin"] for s in samples} == {"hinted"}

    trained = []

    def capture(**kwargs):
        trained.extend(kwargs["rows"])
        raise StopMStep

    monkeypatch.setattr("fem.loop.train_adapter", capture)
    with pytest.raises(StopMStep):
        runner.mstep(0, rdir)
    task, by_id = runner.runtime.task, {e.id: e for e in runner.train_examples}
    assert [row["completion"] for row in trained] == [s["completion"] for s in samples]
    for row, sample in zip(trained, samples):
        example = by_id[sample["example_id"]]
        assert row["prompt"] == task.prompt(example) != task.hinted_prompt(example)
