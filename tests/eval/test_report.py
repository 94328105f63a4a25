"""``fem report`` on synthetic output dirs: a finished judge run, a crashed run, an eval-only side-by-side run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from fem import metrics as M
from fem.errors import FemError
from fem.report import PLOTS, build_report, calibration_pairs, load_run, stage_acceptance

ALL_PLOTS = {spec.name for spec in PLOTS}
TRAINING_PLOTS = {"accuracy", "estep_acceptance", "tokens", "mstep_loss"}


# ---------------------------------------------------------------------------------------------- builders
def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def _write_jsonl(path: Path, records: list[dict[str, Any]], torn: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(r) + "\n" for r in records)
    path.write_text(text + (torn or ""))


def _trace(proposal: str, mean_logp: float, *, stages: int = 0, seed: int = 0) -> dict[str, Any]:
    """A ``Trace.summary()``; power_mh traces carry per-stage MH counts (4 steps per stage)."""
    trace: dict[str, Any] = {
        "num_tokens": 20,
        "sum_logp": 20 * mean_logp,
        "mean_logp": mean_logp,
        "finished": True,
        "cost": {
            "tokens_decoded": 20,
            "tokens_reencoded": 0,
            "forward_passes": 20,
            "mh_steps": 0,
            "mh_accepts": 0,
            "wall_s": 0.1,
        },
        "proposal": proposal,
    }
    if stages:
        steps = [4] * stages
        accepts = [max(0, 3 - s + (seed + s) % 2) for s in range(stages)]  # acceptance falls with the stage
        trace["cost"].update(mh_steps=sum(steps), mh_accepts=sum(accepts))
        trace.update(
            cut="entropy",
            stages=stages,
            stage_steps=steps,
            stage_accepts=accepts,
            acceptance_rate=sum(accepts) / sum(steps),
        )
    return trace


def _predictions(
    proposal: str, n: int, *, skill: float, logp: float, judge: bool = True, stages: int = 0
) -> list[dict[str, Any]]:
    """Eval predictions whose confidence spreads over [0.5, 1) and whose correctness rises with it."""
    out = []
    for i in range(n):
        confidence = 0.5 + 0.49 * i / max(n - 1, 1)
        correct = (i * 7919 % 100) / 100 < min(confidence * skill, 1.0)
        out.append(
            {
                "example_id": f"ex{i}",
                "proposal": proposal,
                "sample_index": 0,
                "completion": "... Verdict: A\nConfidence: 0.8",
                "extracted": "A" if judge else "42",
                "reward": float(correct),
                "confidence": confidence if judge else None,
                "info": {},
                "trace": _trace(proposal, logp - 0.01 * (i % 5), stages=stages, seed=i),
                "chunk": i // 8,
            }
        )
    return out


def _samples(k: int, n: int, *, proposal: str, stages: int, scheme: str = "pps") -> list[dict[str, Any]]:
    return [
        {
            "round": k,
            "example_id": f"tr{i}",
            "scheme": scheme,
            "origin": "hinted" if i % 2 else "plain",
            "attempt": 0,
            "proposal": proposal,
            "kept": i % 3 != 0,
            "reason": None if i % 3 else "reward",
            "reward": float(i % 3 != 0),
            "weight": 1.0,
            "extracted": "A",
            "confidence": 0.7,
            "rationale": "r",
            "completion": "c",
            "trace": _trace(proposal, -0.4 - 0.01 * i, stages=stages, seed=i),
            "chunk": i // 4,
        }
        for i in range(n)
    ]


def _round_metrics(k: int, acc: float) -> dict[str, Any]:
    return {
        "round": k,
        "estep/acceptance_rate": 0.5 + 0.1 * k,
        "estep/kept_samples": 10.0 + k,
        "estep/samples_per_example": 4.0,
        "estep/tokens_decoded": 5000.0 + 100 * k,
        "estep/time_s": 12.5,
        "estep/reward_plain": 0.3 + 0.1 * k,
        "estep/reward_hinted": 0.8,
        "mstep/loss": 1.2 - 0.2 * k,
        "mstep/steps": 6,
        "eval/accuracy": acc,
        "eval/ece": 0.1,
        "eval/brier": 0.2,
        "eval/tokens_decoded": 1200,
        "eval/tokens_per_s": 300.0,
        "eval/mean_logp": -0.5,
        "eval/proposal": "ancestral",
    }


def _config(task: str, proposal: str, rounds: int) -> dict[str, Any]:
    return {
        "command": "fem train",
        "config": {
            "task": task,
            "model_name_or_path": "tiny-llama",
            "scheme": "pps",
            "proposal": proposal,
            "power_cut": "entropy",
            "power_alpha": 4.0,
            "power_mh_steps": 4,
            "eval_proposal": None,
            "rounds": rounds,
        },
        "versions": {"fem": "0.1"},
        "git_sha": "abc123",
    }


def make_finished_judge_run(root: Path) -> Path:
    """Two finished rounds of a judge task; E-step with power_mh, eval with ancestral (with confidences)."""
    (root / "config.yaml").parent.mkdir(parents=True, exist_ok=True)
    (root / "config.yaml").write_text(yaml.safe_dump(_config("judge", "power_mh", 2), sort_keys=False))
    _write_json(
        root / "state.json",
        {
            "config_hash": "x",
            "config": {},
            "baseline_done": True,
            "completed": {"0": ["estep", "mstep", "eval"], "1": ["estep", "mstep", "eval"]},
            "last_adapter": str(root / "round_001/adapter"),
            "finished": True,
        },
    )
    base = {
        "round": -1,
        "eval/accuracy": 0.55,
        "eval/ece": 0.2,
        "eval/brier": 0.3,
        "eval/tokens_decoded": 1100,
        "eval/proposal": "ancestral",
    }
    rounds = [_round_metrics(0, 0.62), _round_metrics(1, 0.7)]
    _write_jsonl(root / "metrics.jsonl", [base, *rounds])
    _write_json(root / "baseline/metrics.json", base)
    _write_jsonl(root / "baseline/predictions.jsonl", _predictions("ancestral", 60, skill=0.9, logp=-0.6))
    for k, metrics in enumerate(rounds):
        curve = [{"step": s, "loss": 1.5 - 0.1 * s - 0.2 * k} for s in range(1, 7)]
        _write_json(root / f"round_{k:03d}/metrics.json", {**metrics, "mstep/loss_curve": curve})
        _write_jsonl(root / f"round_{k:03d}/samples.jsonl", _samples(k, 12, proposal="power_mh", stages=4))
        _write_jsonl(
            root / f"round_{k:03d}/eval/predictions.jsonl",
            _predictions("ancestral", 60, skill=1.0 + 0.1 * k, logp=-0.5),
        )
        _write_json(
            root / f"round_{k:03d}/eval/metrics.json",
            {key: v for key, v in metrics.items() if key.startswith("eval/")},
        )
    return root


def make_crashed_run(root: Path) -> Path:
    """gsm8k with ancestral: round 0 done, round 1 killed mid E-step (torn samples.jsonl, no metrics.json)."""
    root.mkdir(parents=True)
    (root / "config.yaml").write_text(yaml.safe_dump(_config("gsm8k", "ancestral", 3), sort_keys=False))
    _write_json(
        root / "state.json",
        {
            "config_hash": "x",
            "config": {},
            "baseline_done": True,
            "completed": {"0": ["estep", "mstep", "eval"]},
            "last_adapter": None,
            "finished": False,
        },
    )
    base = {"round": -1, "eval/accuracy": 0.2, "eval/tokens_decoded": 900}
    _write_jsonl(root / "metrics.jsonl", [base, _round_metrics(0, 0.3)], torn='{"round": 1, "eval/acc')
    _write_jsonl(root / "baseline/predictions.jsonl", _predictions("ancestral", 10, skill=0.3, logp=-0.7, judge=False))
    _write_json(root / "round_000/metrics.json", _round_metrics(0, 0.3))  # no loss curve recorded
    _write_jsonl(root / "round_000/samples.jsonl", _samples(0, 8, proposal="ancestral", stages=0))
    _write_jsonl(
        root / "round_000/eval/predictions.jsonl", _predictions("ancestral", 10, skill=0.4, logp=-0.6, judge=False)
    )
    _write_jsonl(
        root / "round_001/samples.jsonl",
        _samples(1, 5, proposal="ancestral", stages=0),
        torn='{"round": 1, "example_id": "tr5", "sch',
    )
    return root


def make_eval_only_run(root: Path) -> Path:
    """``fem eval --proposals ancestral,power_mh:entropy`` on a judge task."""
    results, everything = {}, []
    for label, logp, stages in (("ancestral", -0.9, 0), ("power_mh:entropy", -0.45, 3)):
        records = _predictions(label, 40, skill=1.0, logp=logp, stages=stages)
        sub = root / "eval" / label.replace(":", "_")
        _write_jsonl(sub / "predictions.jsonl", records)
        confidences, targets = calibration_pairs(records)
        results[label] = {
            "eval/accuracy": sum(r["reward"] for r in records) / len(records),
            "eval/ece": M.ece(confidences, targets),
            "eval/brier": M.brier(confidences, targets),
            "eval/proposal": label,
            "eval/tokens_decoded": 20 * len(records) * (1 + 3 * stages),
            "eval/mean_logp": logp,
            "eval/wall_s": 2.0,
        }
        _write_json(sub / "metrics.json", results[label])
        everything += records
    _write_json(root / "eval/metrics.json", results)
    _write_jsonl(root / "eval/predictions.jsonl", everything)
    (root / "eval/report.md").write_text(
        "# fem eval: judge\n\nmodel: tiny-judge\nexamples: 40, samples per prompt: 1, seed: 0\n\n| metric |\n"
    )
    return root


# ---------------------------------------------------------------------------------------------- checks
def assert_png(path: Path) -> None:
    """A readable PNG of a real figure: a sensible size and many distinct, not all-white pixels."""
    import matplotlib.image as mpimg
    import numpy as np

    assert path.is_file(), f"{path} was not written"
    image = mpimg.imread(path)
    height, width = image.shape[:2]
    assert height >= 300 and width >= 400, (path.name, image.shape)
    rgb = image[..., :3].reshape(-1, 3)
    assert (rgb < 0.95).any(axis=1).mean() > 0.02, f"{path.name} is (nearly) blank"
    codes = (rgb * 255).astype(np.uint32) @ np.array([1 << 16, 1 << 8, 1], dtype=np.uint32)
    assert len(np.unique(codes)) > 20, f"{path.name} has too few colours to be a plot"


def drawn_and_skipped(report: str) -> tuple[set[str], set[str]]:
    drawn = {spec.name for spec in PLOTS if f"(plots/{spec.name}.png)" in report}
    return drawn, ALL_PLOTS - drawn


# ---------------------------------------------------------------------------------------------- tests
@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> tuple[Path, str]:
    """The finished judge run with its report built once (drawing every plot is the slow part)."""
    root = make_finished_judge_run(tmp_path_factory.mktemp("finished") / "run")
    path = build_report(root)
    assert path == root / "report.md"
    return root, path.read_text()


def test_finished_judge_run(finished_run):
    root, report = finished_run
    for text in (
        "task: judge",
        "model: tiny-llama",
        "scheme: pps",
        "E-step proposal: power_mh (cut entropy",
        "eval proposal: ancestral",
        "rounds: 2 of 2 finished",
        "state: finished",
    ):
        assert text in report, text
    assert "| round | phases done | accuracy | ECE | Brier | E-step acceptance |" in report
    assert "| base | eval | 0.55 |" in report
    assert "| 1 | estep, mstep, eval | 0.7 | 0.1 | 0.2 | 0.6 | 11 |" in report
    drawn, skipped = drawn_and_skipped(report)
    assert drawn == ALL_PLOTS, skipped
    for name in ALL_PLOTS:
        assert_png(root / "plots" / f"{name}.png")
    assert "Not drawn" not in report and "Damaged" not in report


def test_loaded_run_merges_round_files(finished_run):
    root, _ = finished_run
    run = load_run(root)
    assert sorted(run.rounds) == [-1, 0, 1]
    assert run.rounds[1]["mstep/loss_curve"][0] == {"step": 1, "loss": 1.2}  # only in round_001/metrics.json
    assert len(run.predictions(-1)) == 60 and len(run.samples(0)) == 12 and run.is_training


def test_reliability_reuses_the_shared_metrics_with_15_bins(tmp_path, monkeypatch):
    root = make_eval_only_run(tmp_path / "evalrun")
    calls = []
    for name in ("reliability_table", "ece", "brier"):
        original = getattr(M, name)

        def spy(*args, _original=original, _name=name, **kwargs):
            calls.append((_name, args, kwargs))
            return _original(*args, **kwargs)

        monkeypatch.setattr(M, name, spy)
    build_report(root)
    expected = [
        calibration_pairs(_predictions(label, 40, skill=1.0, logp=0.0)) for label in ("ancestral", "power_mh:entropy")
    ]
    eces = [args for name, args, _ in calls if name == "ece"]
    assert [(list(a[0]), list(a[1])) for a in eces] == [(list(c), list(t)) for c, t in expected]
    assert all(a[2] == 15 for a in eces)
    assert all(args[2] == 15 for name, args, _ in calls if name == "reliability_table")
    assert sum(name == "brier" for name, _, _ in calls) == 2


def test_stage_acceptance_sums_accepts_over_steps_per_stage():
    records = _samples(0, 4, proposal="power_mh", stages=3) + _samples(0, 2, proposal="ancestral", stages=0)
    per_stage, overall, count = stage_acceptance(records)
    assert count == 4 and len(per_stage) == 3
    accepts = [[max(0, 3 - s + (i + s) % 2) for s in range(3)] for i in range(4)]
    assert per_stage == pytest.approx([sum(a[s] for a in accepts) / 16 for s in range(3)])
    assert overall == pytest.approx(sum(map(sum, accepts)) / 48)


def test_crashed_run_reports_what_is_missing(tmp_path):
    root = make_crashed_run(tmp_path / "crashed")
    report = build_report(root).read_text()
    assert "rounds: 1 of 3 finished" in report
    assert "**not finished**" in report
    assert "round 1: done nothing; missing estep, mstep, eval; 5 samples readable in samples.jsonl (3 kept)" in report
    assert "`round_001/samples.jsonl`: torn last line ignored" in report
    assert "`metrics.jsonl`: torn last line ignored" in report
    assert "| 1 | - |" in report  # round 1 has a dir but no metrics: a row of dashes
    drawn, skipped = drawn_and_skipped(report)
    assert drawn == {"accuracy", "estep_acceptance", "tokens"}
    assert "_Not drawn: no M-step loss curve recorded" in report
    assert "_Not drawn: eval predictions carry no confidence (not a judge/summarize task)._" in report
    assert "_Not drawn: no power_mh traces" in report
    assert "_Not drawn: needs power_mh traces and another proposal's traces" in report
    for name in drawn:
        assert_png(root / "plots" / f"{name}.png")
    for name in skipped:
        assert not (root / "plots" / f"{name}.png").exists()


def test_eval_only_side_by_side_run(tmp_path):
    root = make_eval_only_run(tmp_path / "evalrun")
    report = build_report(root).read_text()
    assert "task: judge" in report and "model: tiny-judge" in report
    assert "fem eval proposals: ancestral, power_mh:entropy" in report
    assert "## Side-by-side evaluation (fem eval)" in report
    assert "| metric | ancestral | power_mh:entropy |" in report
    assert "| mean_logp | -0.9 | -0.45 |" in report
    assert "## Rounds" not in report
    drawn, skipped = drawn_and_skipped(report)
    assert drawn == {"reliability", "mh_acceptance", "logp_by_proposal"}
    assert skipped == TRAINING_PLOTS
    assert report.count("no training rounds in this output dir (eval-only run)") == len(TRAINING_PLOTS)
    for name in drawn:
        assert_png(root / "plots" / f"{name}.png")

    # rebuilt after the power_mh predictions are gone: its plots are reported absent and their stale PNGs removed
    for path in (root / "eval/predictions.jsonl", root / "eval/power_mh_entropy/predictions.jsonl"):
        path.unlink()
    report = build_report(root).read_text()
    assert "_Not drawn: no power_mh traces" in report
    assert not (root / "plots/mh_acceptance.png").exists() and not (root / "plots/logp_by_proposal.png").exists()
    assert "| metric | ancestral | power_mh:entropy |" in report  # the metrics are still on disk


def test_eval_interrupted_between_proposals_keeps_the_finished_ones(tmp_path):
    root = make_eval_only_run(tmp_path / "evalrun")
    for path in (
        "eval/metrics.json",
        "eval/predictions.jsonl",
        "eval/power_mh_entropy/metrics.json",
        "eval/power_mh_entropy/predictions.jsonl",
    ):
        (root / path).unlink()
    report = build_report(root).read_text()
    assert "| metric | ancestral |" in report
    assert "fem eval proposals: ancestral" in report and "power_mh" not in report.split("## Plots")[0]
    assert_png(root / "plots/reliability.png")


def test_empty_and_damaged_dirs_do_not_crash(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    report = build_report(empty).read_text()
    assert "No training or evaluation files found" in report
    assert drawn_and_skipped(report)[0] == set()
    damaged = make_crashed_run(tmp_path / "damaged")
    (damaged / "state.json").write_text('{"completed": ')
    (damaged / "round_000/metrics.json").write_text("not json")
    (damaged / "config.yaml").write_text("config: [unclosed")
    report = build_report(damaged).read_text()
    for name in ("state.json", "round_000/metrics.json", "config.yaml"):
        assert f"`{name}` is unreadable" in report
    assert "state: no `state.json`" in report and "task: unknown" in report
    assert "| 0 | - | 0.3 |" in report  # round 0 still known from metrics.jsonl
    with pytest.raises(FemError):
        build_report(tmp_path / "missing")


def test_cli_report_command(tmp_path, capsys):
    from fem.cli import main

    (tmp_path / "out").mkdir()
    with pytest.raises(SystemExit) as exit_info:
        main(["report", str(tmp_path / "out")])
    assert exit_info.value.code == 0
    assert f"report: {tmp_path / 'out' / 'report.md'}" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main(["report", str(tmp_path / "missing")])
    assert exit_info.value.code == 2
    assert "is not a directory" in capsys.readouterr().err


def test_real_power_mh_and_ancestral_traces(tmp_path):
    """Traces drawn by the real proposals on an exact table LM, saved as ``fem eval`` predictions (no metrics.json)."""
    from fem.configs import ProposalConfig
    from fem.drawing import Sample
    from fem.eval.evaluate import prediction_record
    from fem.proposals import build_proposal
    from fem.tasks.base import Example, Prediction
    from fem.testing.table_lm import hashed_table_lm

    lm = hashed_table_lm(3, seed=0)
    common = {"max_new_tokens": 6, "generation_batch_size": 16}
    variants = {
        "ancestral": ProposalConfig(proposal="ancestral", **common),
        "power_mh": ProposalConfig(
            proposal="power_mh", power_block_size=2, power_mh_steps=3, power_early_stop=False, **common
        ),
    }
    power_traces = []
    for label, config in variants.items():
        records = []
        for i, group in enumerate(build_proposal(config, lm).propose([lm.prompt] * 6, 2, seed=0)):
            for attempt, trace in enumerate(group):
                prediction = Prediction(
                    example_id=f"ex{i}",
                    completion=trace.text,
                    extracted="A",
                    reward=float(trace.finished),
                    confidence=min(0.3 + 0.1 * trace.num_tokens, 1.0),
                )
                sample = Sample(
                    example=Example(id=f"ex{i}", answer="A"),
                    origin="plain",
                    attempt=attempt,
                    trace=trace,
                    prediction=prediction,
                    completion=trace.text,
                )
                records.append(prediction_record(f"ex{i}", label, sample))
                power_traces += [trace] if label == "power_mh" else []
        _write_jsonl(tmp_path / "eval" / label / "predictions.jsonl", records)
    report = build_report(tmp_path).read_text()
    assert "_No `eval/metrics.json`: the eval did not finish; predictions only._" in report
    assert {"reliability", "mh_acceptance", "logp_by_proposal"} <= drawn_and_skipped(report)[0]
    for name in ("mh_acceptance", "logp_by_proposal"):
        assert_png(tmp_path / "plots" / f"{name}.png")
    per_stage, overall, count = stage_acceptance(load_run(tmp_path).eval_predictions["power_mh"])
    assert count == 12 and len(per_stage) == 3
    assert overall == pytest.approx(
        sum(t.cost.mh_accepts for t in power_traces) / sum(t.cost.mh_steps for t in power_traces)
    )
    assert per_stage[0] == pytest.approx(
        sum(t.info["stage_accepts"][0] for t in power_traces) / sum(t.info["stage_steps"][0] for t in power_traces)
    )
