"""Preference files in each of TRL's four shapes train and evaluate with no field mapping (tiny random model, one
short round, in process); the calibrated E-step options and temperature scaling run through the same commands."""

from __future__ import annotations

import json

import pytest
import yaml
from test_preference import SHAPES, write_jsonl

from fem.estep.runner import kept_samples

TOPICS = ["prime", "sum", "spell", "capital", "colour", "animal", "planet", "metal"]


def rows(shape: str, start: int, n: int) -> list[dict]:
    out = []
    for i in range(start, start + n):
        p, c, r = f"Question about {TOPICS[i % 8]} {i}?", f"Good answer {i}.", f"Poor reply {i}."
        user = [{"role": "user", "content": p}]
        if shape == "explicit_standard":
            row = {"prompt": p, "chosen": c, "rejected": r}
        elif shape == "implicit_standard":
            row = {"chosen": f"{p} {c}", "rejected": f"{p} {r}"}
        elif shape == "explicit_conversational":
            row = {
                "prompt": user,
                "chosen": [{"role": "assistant", "content": c}],
                "rejected": [{"role": "assistant", "content": r}],
            }
        else:
            row = {
                "chosen": user + [{"role": "assistant", "content": c}],
                "rejected": user + [{"role": "assistant", "content": r}],
            }
        out.append(row)
    return out


def fem(capsys, *argv: str) -> tuple[int, str, str]:
    from fem.cli import main

    with pytest.raises(SystemExit) as info:
        main(list(argv))
    captured = capsys.readouterr()
    return info.value.code, captured.out, captured.err


def recipe(tmp_path, shape: str, **extra) -> str:
    train = write_jsonl(tmp_path / f"{shape}_train.jsonl", rows(shape, 0, 8))
    evaluation = write_jsonl(tmp_path / f"{shape}_eval.jsonl", rows(shape, 100, 4))
    config = {
        "model_name_or_path": "tiny-random-llama",
        "lora_r": 4,
        "lora_alpha": 8,
        "task": "judge",
        "train_file": str(train),
        "eval_file": str(evaluation),
        "answer_mode": "forced",
        "scheme": "pps",
        "estep_samples": 1,
        "max_new_tokens": 2,
        "generation_batch_size": 8,
        "rounds": 1,
        "eval_before_training": False,
        "output_dir": str(tmp_path / f"out_{shape}"),
        "learning_rate": 0.01,
        "num_train_epochs": 1,
        "per_device_train_batch_size": 8,
        "max_length": 1024,
        "seed": 0,
        "report_to": "none",
        **extra,
    }
    path = tmp_path / f"{shape}.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


@pytest.mark.parametrize("shape", SHAPES)
def test_each_preference_shape_trains_and_evaluates_without_field_mapping(shape, tmp_path, capsys):
    config = recipe(tmp_path, shape)
    code, out, err = fem(capsys, "train", "--config", config, "--dry_run")
    assert code == 0, err
    kind = "conversational" if "conversational" in shape else "standard"
    assert f"preference ({kind}, {shape.split('_')[0]} prompt" in out and "detected" in out
    code, out, err = fem(capsys, "train", "--config", config)
    assert code == 0, err
    metrics = [json.loads(line) for line in (tmp_path / f"out_{shape}" / "metrics.jsonl").read_text().splitlines()]
    (last,) = metrics
    assert last["estep/kept_samples"] >= 1 and last["eval/examples"] == 8  # 4 pairs, each asked both ways
    for key in ("accuracy", "ece", "ece_mass", "brier", "nll", "position_consistency"):
        assert isinstance(last[f"eval/{key}"], float), key


def test_calibrated_estep_and_temperature_scaling_through_the_commands(tmp_path, capsys):
    config = recipe(
        tmp_path,
        "implicit_conversational",
        confidence_target="empirical",
        confidence_samples=2,
        estep_position_swap=True,
        estep_balance=True,
        save_rejected=True,
        eval_confidence="stated",
    )
    code, out, err = fem(capsys, "train", "--config", config, "--dry_run")
    assert code == 0 and "empirical (m=2 plain draws, prior a=1.0); pairs both orders, balance True" in out, out
    code, out, err = fem(capsys, "train", "--config", config)
    assert code == 0, err
    run = tmp_path / "out_implicit_conversational"
    samples = [json.loads(line) for line in (run / "round_000" / "samples.jsonl").read_text().splitlines()]
    assert {s["example_id"].endswith(":swapped") for s in samples} == {True, False}  # both orders drawn
    assert sum(s["reason"] == "confidence" and s["origin"] == "plain" for s in samples) >= 2
    kept = kept_samples(run / "round_000")  # balancing drops some kept samples (estep_balance.json), not lines
    assert kept and all(s["completion"].endswith(f"Confidence: {round(100 * s['target_confidence'])}%") for s in kept)
    assert all(0 < s["target_confidence"] < 1 for s in kept)  # the prior keeps the estimate off 0 and 1
    gold = [s["gold"] for s in kept]
    metrics = json.loads((run / "round_000" / "metrics.json").read_text())
    if metrics.get("estep/balance_dropped") is not None and len(set(gold)) == 2:
        assert gold.count("A") == gold.count("B")

    # fem eval: temperature scaling fitted on the train file (the calibration split), reported on the eval file
    code, out, err = fem(
        capsys, "eval", "--config", config, "--temperature_scaling", "true", "--eval_confidence", "readout"
    )
    assert code == 0, err
    (result,) = json.loads((run / "eval" / "metrics.json").read_text()).values()
    assert result["eval/ts_calibration_predictions"] == 16 and result["eval/ts_calibration_examples"] == 16
    for key in ("ts_temperature", "ts_ece", "ts_ece_mass", "ts_brier", "ts_nll"):
        assert key in result or f"eval/{key}" in result, key
    assert "ts_nll" in out
    # a calibration split that shares pairs with the eval split is refused before any model loads
    config_same = recipe(tmp_path, "explicit_standard")
    same = yaml.safe_load(open(config_same))
    same["train_file"] = same["eval_file"]
    (tmp_path / "same.yaml").write_text(yaml.safe_dump(same))
    code, _, err = fem(capsys, "eval", "--config", str(tmp_path / "same.yaml"), "--temperature_scaling", "true")
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "also in the eval split" in lines[0], err


def test_debiased_target_trains_the_gold_candidate_averaged_over_both_orders(tmp_path, capsys):
    from fem.drawing import PLAIN
    from fem.recipe import parse_configs
    from fem.runtime import build_runtime
    from fem.utils.distributed import World

    config = recipe(tmp_path, "explicit_standard", confidence_target="plain_readout_debiased", eval_every_round=False)
    code, out, err = fem(capsys, "train", "--config", config, "--dry_run")
    assert code == 0 and "plain_readout_debiased (P(gold candidate) averaged over both orders)" in out, out
    code, out, err = fem(capsys, "train", "--config", config)
    assert code == 0, err
    kept = [
        s for s in map(json.loads, (tmp_path / "out_explicit_standard/round_000/samples.jsonl").open()) if s["kept"]
    ]
    runtime = build_runtime(parse_configs(["--config", config]), World())  # the base model the E-step read
    task, by_id = runtime.task, {e.id: e for e in runtime.task.load("train")}
    drawer = runtime.drawer(runtime.proposal())
    assert kept
    for s in kept:
        example = by_id[s["example_id"]]
        given, swapped = drawer.read_out([example, task.swapped(example)], PLAIN)
        expected = (given[example.answer] + swapped[task.swapped(example).answer]) / 2
        assert s["target_confidence"] == pytest.approx(expected, abs=1e-4)
        assert s["completion"].endswith(f"Confidence: {round(100 * expected)}%")


def test_stated_mean_with_a_tokenizer_that_merges_digits_is_a_one_line_error_before_any_compute(tmp_path, capsys):
    config = recipe(tmp_path, "explicit_standard", eval_confidence="stated_mean")
    code, out, err = fem(capsys, "eval", "--config", config, "--dry_run")
    assert code == 0 and "stated_mean" in out, out
    code, out, err = fem(capsys, "eval", "--config", config)  # the tiny tokenizer merges digits ('\nConfidence: 2%')
    lines = [line for line in err.splitlines() if line.startswith("fem eval")]  # (the model's loading is logged)
    assert code == 2 and len(lines) == 1, err
    assert (
        lines[0].startswith("fem eval: error: field")
        and "field 'eval_confidence'" in lines[0]
        and "digit by digit" in lines[0]
        and "eval_confidence stated" in lines[0]
    )
    assert not (tmp_path / "out_explicit_standard" / "eval").exists() or not any(
        (tmp_path / "out_explicit_standard" / "eval").rglob("predictions.jsonl")
    )  # nothing was evaluated


def test_a_setup_refused_after_the_backend_is_built_closes_it(tmp_path, monkeypatch):
    """``build_runtime`` closes a backend that holds an engine when a check after its construction refuses the
    recipe: no engine (a vLLM process, its memory) outlives a ConfigError."""
    import fem.runtime as runtime_module
    from fem.errors import ConfigError
    from fem.recipe import parse_configs
    from fem.runtime import build_runtime
    from fem.utils.distributed import World

    closed = []

    class EngineBackend:  # an engine-holding backend: the hf one plus close()
        def __init__(self, inner):
            self.inner = inner

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def close(self):
            closed.append(True)

    built = runtime_module.build_backend
    monkeypatch.setattr(runtime_module, "build_backend", lambda *a, **k: EngineBackend(built(*a, **k)))
    config = recipe(tmp_path, "explicit_standard", eval_confidence="stated_mean")
    with pytest.raises(ConfigError, match="digit by digit"):
        build_runtime(parse_configs(["--config", config]), World())
    assert closed == [True]
