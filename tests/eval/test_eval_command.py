"""``fem eval`` end to end on the tiny random model (subprocesses, as a user runs it).

- a user's own pairwise-preference file whose field names match no shipped dataset, read through a field and
  label mapping only: accuracy, ECE and Brier in eval/metrics.json, full prediction records;
- several proposals side by side on the same prompts;
- ``--adapter`` with a training output dir (its last round's adapter; reproduces that round's eval);
- a bad adapter path: one line, no traceback.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from helpers import ROOT, run_fem

PAIRS = [
    ("Name a prime number.", "7", "8", "left"),
    ("What is 2 + 2?", "5", "4", "right"),
    ("Spell 'cat'.", "c-a-t", "dog", "left"),
    ("Capital of France?", "Berlin", "Paris", "right"),
    ("Is water wet?", "Yes.", "", "left"),
    ("Largest planet?", "Mars", "Jupiter", "right"),
]


def _user_recipe(tmp_path: Path) -> Path:
    """A pairwise-preference JSONL with odd field names and the recipe that maps them onto the judge task."""
    data = tmp_path / "my_prefs.jsonl"
    data.write_text(
        "".join(
            json.dumps({"pair_id": f"p{i}", "query": q, "left": a, "right": b, "winner": w}) + "\n"
            for i, (q, a, b, w) in enumerate(PAIRS)
        )
    )
    recipe = {
        "model_name_or_path": "tiny-random-llama",
        "task": "judge",
        "eval_file": str(data),
        "task_fields": {
            "id": "pair_id",
            "prompt": "query",
            "response_a": "left",
            "response_b": "right",
            "label": "winner",
        },
        "task_labels": {"left": "A", "right": "B"},
        "answer_mode": "forced",
        "max_new_tokens": 4,
        "power_mh_steps": 2,
        "power_block_size": 2,
        "generation_batch_size": 4,
        "output_dir": str(tmp_path / "out"),
        "seed": 0,
        "report_to": "none",
    }
    path = tmp_path / "my_judge.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def _predictions(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_user_pairwise_file_with_field_mapping_only(tmp_path):
    recipe = _user_recipe(tmp_path)
    result = run_fem("eval", "--config", str(recipe), "--limit", "5")
    assert result.returncode == 0, result.stderr[-2000:]
    out = tmp_path / "out" / "eval"
    metrics = json.loads((out / "metrics.json").read_text())
    (label,) = metrics  # one proposal: the eval proposal (ancestral)
    m = metrics[label]
    for key in ("accuracy", "ece", "brier"):
        assert isinstance(m[f"eval/{key}"], float) and 0.0 <= m[f"eval/{key}"] <= 1.0, key
    # each pair is also asked with the candidates swapped (position consistency): 5 pairs -> 10 prompts
    assert m["eval/examples"] == 10 and m["eval/predictions"] == 10
    assert m["eval/position_pairs"] == 5 and 0.0 <= m["eval/position_consistency"] <= 1.0
    assert m["eval/unparsed"] == 0  # forced mode always yields a verdict and a confidence
    assert m["eval/tokens_decoded"] > 0 and m["eval/wall_s"] > 0 and m["eval/tokens_per_s"] > 0
    preds = _predictions(out / "predictions.jsonl")
    assert [p["example_id"] for p in preds] == [i for n in range(5) for i in (f"p{n}", f"p{n}:swapped")]
    for p in preds:
        assert {"example_id", "completion", "extracted", "reward", "confidence", "trace", "proposal"} <= set(p)
        assert p["extracted"] in ("A", "B") and p["reward"] in (0.0, 1.0)
        assert 0.5 <= p["confidence"] <= 1.0
        assert p["trace"]["cost"]["tokens_decoded"] >= 1
    gold = {f"p{i}": "A" if w == "left" else "B" for i, (*_, w) in enumerate(PAIRS)}
    gold.update({f"{k}:swapped": "B" if v == "A" else "A" for k, v in list(gold.items())})
    assert all(p["reward"] == float(p["extracted"] == gold[p["example_id"]]) for p in preds)
    assert "accuracy" in (out / "report.md").read_text()


def test_side_by_side_proposals_on_the_same_prompts(tmp_path):
    recipe = _user_recipe(tmp_path)
    proposals = "ancestral,power_mh:entropy,power_smc"
    result = run_fem("eval", "--config", str(recipe), "--proposals", proposals, "--smc_particles", "4", "--seed", "3")
    assert result.returncode == 0, result.stderr[-2000:]
    out = tmp_path / "out" / "eval"
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics) == ["ancestral", "power_mh:entropy", "power_smc"]
    report = (out / "report.md").read_text()
    header = next(line for line in report.splitlines() if line.startswith("| metric"))
    assert "ancestral" in header and "power_mh:entropy" in header and "power_smc" in header
    assert any(line.startswith("| accuracy |") for line in report.splitlines())
    assert any(line.startswith("| ece |") for line in report.splitlines())
    assert "seed: 3" in report
    ids = {}
    for label in metrics:
        preds = _predictions(out / label.replace(":", "_") / "predictions.jsonl")
        ids[label] = [p["example_id"] for p in preds]
    pairs_both_ways = [i for n in range(len(PAIRS)) for i in (f"p{n}", f"p{n}:swapped")]
    assert ids["ancestral"] == ids["power_mh:entropy"] == ids["power_smc"] == pairs_both_ways
    combined = _predictions(out / "predictions.jsonl")
    assert {p["proposal"] for p in combined} == set(metrics)
    # power_mh ran its MH steps and records them in the per-trace cost
    assert any(p["trace"]["cost"]["mh_steps"] > 0 for p in combined if p["proposal"] == "power_mh:entropy")
    assert metrics["power_mh:entropy"]["eval/tokens_decoded"] > metrics["ancestral"]["eval/tokens_decoded"]
    # power_smc decoded 4 particles per prompt and records its particle system on each trace
    smc = [p["trace"] for p in combined if p["proposal"] == "power_smc"]
    assert all(t["particles"] == 4 and t["cost"]["tokens_decoded"] >= 4 * t["num_tokens"] for t in smc)
    assert metrics["power_smc"]["eval/tokens_decoded"] > 3 * metrics["ancestral"]["eval/tokens_decoded"]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """One fast EM round on the tiny model (the smoke recipe, shrunk)."""
    out = tmp_path_factory.mktemp("trained") / "run"
    result = run_fem(
        "train",
        "--config",
        str(ROOT / "recipes/smoke/tiny_cpu.yaml"),
        "--output_dir",
        str(out),
        "--rounds",
        "1",
        "--train_limit",
        "16",
        "--eval_limit",
        "8",
        "--num_train_epochs",
        "2",
        "--eval_before_training",
        "false",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return out


def test_adapter_from_a_training_dir_uses_its_last_round(trained_run, tmp_path):
    out = tmp_path / "evalout"
    result = run_fem(
        "eval",
        "--config",
        str(ROOT / "recipes/smoke/tiny_cpu.yaml"),
        "--adapter",
        str(trained_run),
        "--output_dir",
        str(out),
        "--limit",
        "8",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = (out / "eval" / "report.md").read_text()
    assert "+ adapter" in report and str(Path("round_000") / "adapter") in report
    # the same eval proposal, seed and prompts as the round's own eval: the same predictions
    ours = _predictions(out / "eval" / "predictions.jsonl")
    theirs = _predictions(trained_run / "round_000" / "eval" / "predictions.jsonl")
    assert [(p["example_id"], p["extracted"]) for p in ours] == [(p["example_id"], p["extracted"]) for p in theirs]


def _fem_in_process(capsys, *argv: str) -> tuple[int, str, str]:
    """The CLI in this process (no torch import per call): exit code, stdout, stderr."""
    from fem.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(list(argv))
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def test_bad_adapter_path_fails_in_one_line(tmp_path, capsys):
    from fem.models import resolve_model_source

    resolve_model_source("tiny-random-llama")  # builds the cached tiny model once (its progress bar is not ours)
    capsys.readouterr()
    recipe = _user_recipe(tmp_path)
    code, _, err = _fem_in_process(capsys, "eval", "--config", str(recipe), "--adapter", str(tmp_path / "nope"))
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("fem eval: error:"), err
    assert "adapter" in lines[0] and "Traceback" not in err
    assert not (tmp_path / "out" / "eval" / "metrics.json").exists()


def test_eval_dry_run_reads_only_the_eval_split(tmp_path, capsys):
    """Eval-only tasks (no train split) validate; GPQA needs the user's file: one line without it."""
    code, out, err = _fem_in_process(
        capsys, "eval", "--config", str(ROOT / "recipes/eval/math500_power_cpu.yaml"), "--dry_run"
    )
    assert code == 0, err
    assert "eval=6" in out and "power_mh:entropy" in out
    config = str(ROOT / "recipes/eval/gpqa_diamond_power_gpu.yaml")
    code, _, err = _fem_in_process(capsys, "eval", "--config", config, "--dry_run")
    assert code == 2 and "eval_file" in err and "Traceback" not in err
    csv = tmp_path / "gpqa_diamond.csv"
    csv.write_text(
        "Question,Correct Answer,Incorrect Answer 1,Incorrect Answer 2,Incorrect Answer 3\n"
        "Which is a noble gas?,Argon,Nitrogen,Oxygen,Hydrogen\n"
        "What is 3 squared?,9,6,8,12\n"
    )
    code, out, err = _fem_in_process(capsys, "eval", "--config", config, "--eval_file", str(csv), "--dry_run")
    assert code == 0, err
    assert "eval=2" in out


def test_an_engine_for_an_adapter_is_sized_by_the_adapter_not_the_recipe(tmp_path):
    """``fem eval --adapter``: the LoRA rank and targets an engine is built for (``vllm_adapter_mode: lora``) are
    the adapter's own, by their last name component as vLLM wraps them; a regex keeps the recipe's targets."""
    from fem.commands.eval import sized_for_adapter
    from fem.recipe import parse_configs

    configs = parse_configs(["--config", "recipes/smoke/tiny_cpu.yaml", "--lora_r", "8"])
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    paths = ["model.layers.0.self_attn.v_proj", "q_proj", "model.layers.1.self_attn.v_proj"]
    (adapter / "adapter_config.json").write_text(json.dumps({"r": 32, "target_modules": paths}))
    sized = sized_for_adapter(configs, str(adapter))
    assert (sized.model.lora_r, sized.model.lora_target_modules) == (32, ["q_proj", "v_proj"])
    assert configs.model.lora_r == 8 and sized.task == configs.task  # the recipe's configs are left as they were
    (adapter / "adapter_config.json").write_text(json.dumps({"r": 4, "target_modules": ".*proj"}))
    sized = sized_for_adapter(configs, str(adapter))
    assert (sized.model.lora_r, sized.model.lora_target_modules) == (4, configs.model.lora_target_modules)
