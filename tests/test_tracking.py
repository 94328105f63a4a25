"""The run in the user's trackers (fem.tracking): round metrics with the round as step, M-step logs on one global
step axis, each point once across kills and resumptions, tables, and trackers that fail without failing the run.

TensorBoard is read back from its event files; W&B (offline mode) and trackio (local SQLite) only where installed."""

from __future__ import annotations

import json
import logging
import sqlite3
import struct
import sys
from collections import defaultdict
from pathlib import Path

import pytest
from helpers import SMOKE_RECIPE

from fem.commands.train import trackers_plan
from fem.errors import ConfigError
from fem.tracking import LEDGER_FILE, RunTracker, report_to_names, trainer_report_to

RELIABILITY = [
    {"lo": 0.6, "hi": 0.7, "count": 3, "confidence": 0.65, "accuracy": 0.67, "gap": 0.02},
    {"lo": 0.9, "hi": 1.0, "count": 5, "confidence": 0.95, "accuracy": 0.8, "gap": -0.15},
]
LINES = [
    {
        "round": -1,
        "eval/accuracy": 0.25,
        "eval/proposal": "ancestral",
        "eval/reliability": RELIABILITY,
        "eval/by_bucket": {"high": {"n": 3, "accuracy": 0.5}, "low": {"n": 1, "accuracy": 1.0}},
        "eval/pass": {"1": 0.5, "4": 0.75},
        "eval/ece": None,
    },
    {"round": 0, "eval/accuracy": 0.5, "estep/acceptance_rate": 0.4, "mstep/steps": 3, "mstep/skipped": False},
]


def tensorboard_points(root: Path) -> tuple[dict[str, list[tuple[float, int, object]]], set[Path]]:
    """Every point under ``root``'s event files: tag -> [(wall time, step, value)], and the folders holding them."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.util import tensor_util

    points: dict[str, list[tuple[float, int, object]]] = defaultdict(list)
    files = sorted(root.rglob("events.out.tfevents.*"))
    for path in files:
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                array = tensor_util.make_ndarray(value.tensor)
                item = array.item() if array.size == 1 else array.tolist()
                points[value.tag].append(
                    (event.wall_time, event.step, item.decode() if isinstance(item, bytes) else item)
                )
    return dict(points), {path.parent for path in files}


def steps(points, tag: str) -> list[int]:
    return [step for _, step, _ in sorted(points[tag])]


def test_report_to_names_are_checked_and_split():
    assert report_to_names("none") == [] and report_to_names(None) == [] and report_to_names([]) == []
    assert report_to_names(["tensorboard,wandb", "mlflow", "wandb"]) == ["tensorboard", "wandb", "mlflow"]
    assert trainer_report_to(["tensorboard", "mlflow", "trackio"]) == ["mlflow"]
    with pytest.raises(ConfigError, match="report_to.*tensorbored"):
        report_to_names(["tensorbored"])
    assert (
        trackers_plan(["mlflow", "tensorboard"])
        == "tensorboard (rounds + M-step, one run); mlflow (each round's trainer only)"
    )
    assert trackers_plan([]) == "none"


def test_unknown_tracker_fails_before_any_model_loads(tmp_path, capsys):
    from fem.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--config", SMOKE_RECIPE, "--output_dir", str(tmp_path / "x"), "--report_to", "tensorbored"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "report_to" in err and "tensorbored" in err and "Traceback" not in err and "loading model" not in err


def test_round_metrics_text_and_tables_in_tensorboard(tmp_path):
    tracker = RunTracker(tmp_path, ["tensorboard"], run_name="demo", config={}).start("hash-a")
    tracker.catch_up(LINES)
    tracker.log_train({"train/loss": 2.0}, 1)
    tracker.finish()
    points, folders = tensorboard_points(tmp_path)
    assert len(folders) == 1 and next(iter(folders)).parent == tmp_path / "runs"
    assert steps(points, "eval/accuracy") == [-1, 0] and [v for *_, v in points["eval/accuracy"]] == [0.25, 0.5]
    assert steps(points, "mstep/skipped") == [0]  # a bool is a number
    table = points["eval/reliability/text_summary"][0][2]
    assert table.splitlines()[0] == "| lo | hi | count | confidence | accuracy | gap |"
    assert "| 0.9 | 1 | 5 | 0.95 | 0.8 | -0.15 |" in table
    assert points["eval/proposal/text_summary"][0][2] == "ancestral"
    assert points["eval/by_bucket/text_summary"][0][2].splitlines()[2:] == ["| high | 3 | 0.5 |", "| low | 1 | 1 |"]
    assert [v for *_, v in points["eval/pass/4"]] == [0.75] and "eval/ece" not in points
    assert steps(points, "train/loss") == [1]


def test_each_point_is_sent_once_across_sessions_of_one_run(tmp_path):
    first = RunTracker(tmp_path, ["tensorboard"], run_name="demo", config={}).start("hash-a")
    first.catch_up(LINES[:1])
    first.log_train({"train/loss": 2.0}, 1)
    first.log_train({"train/loss": 1.5}, 2)
    first.finish()
    run_id = json.loads((tmp_path / LEDGER_FILE).read_text())["run_id"]
    again = RunTracker(tmp_path, ["tensorboard"], run_name="demo", config={}).start("hash-a")  # a resumed run
    again.catch_up(LINES)  # round -1 was sent, round 0 was not
    for step, loss in ((1, 9.0), (2, 9.0), (3, 1.0)):  # a restarted M-step logs steps 1 and 2 again
        again.log_train({"train/loss": loss}, step)
    again.log_round(LINES[1])  # a re-done eval of round 0
    again.finish()
    points, folders = tensorboard_points(tmp_path)
    assert len(folders) == 1, "a resumed run writes to its tracker run, not a new one"
    assert steps(points, "eval/accuracy") == [-1, 0]
    assert [(s, v) for _, s, v in sorted(points["train/loss"])] == [(1, 2.0), (2, 1.5), (3, 1.0)]
    assert json.loads((tmp_path / LEDGER_FILE).read_text())["run_id"] == run_id

    other = RunTracker(tmp_path, ["tensorboard"], run_name="demo", config={}).start("hash-b")  # another config
    other.catch_up(LINES)
    other.finish()
    points, folders = tensorboard_points(tmp_path)
    assert len(folders) == 2 and sorted(steps(points, "eval/accuracy")) == [-1, -1, 0, 0]


class _Broken:
    """A tracker whose start or log raises."""

    def __init__(self, fail_at: str):
        self.fail_at = fail_at

    def start(self):
        if self.fail_at == "start":
            raise RuntimeError("cannot reach the tracker\nsecond line")

    def log(self, values, step=None):
        raise ConnectionError("service went away")

    def finish(self):
        pass


def test_a_tracker_that_cannot_start_or_fails_later_is_one_warning_line(tmp_path, monkeypatch):
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    logging.getLogger("fem.tracking").addHandler(handler)
    broken = {"tensorboard": _Broken("start"), "trackio": _Broken("log")}
    monkeypatch.setattr(RunTracker, "_build", lambda self, name: broken[name])
    try:
        tracker = RunTracker(tmp_path, ["tensorboard", "trackio", "mlflow"], run_name="x", config={}).start("h")
        assert list(tracker.trackers) == ["trackio"] and tracker.names == ["tensorboard", "trackio"]
        tracker.catch_up(LINES)
        tracker.log_train({"train/loss": 1.0}, 1)
        tracker.finish()
    finally:
        logging.getLogger("fem.tracking").removeHandler(handler)
    messages = [r.getMessage() for r in records]
    assert len(messages) == 2, messages
    assert "report_to tensorboard: could not start (RuntimeError: cannot reach the tracker)" in messages[0]
    assert "report_to trackio: logging failed (ConnectionError: service went away)" in messages[1]
    assert all("\n" not in m for m in messages) and not tracker.trackers


def test_smoke_run_killed_and_resumed_in_tensorboard(tracked_run):
    """The acceptance test of the issue: eval/accuracy at rounds 0 and 1 (and the baseline at -1), M-step losses on
    one strictly increasing global step across rounds, each point once although both kills made the resumed runs
    redo work that had been logged, and every value the one the run's files record."""
    lines = {m["round"]: m for m in map(json.loads, (tracked_run / "metrics.jsonl").read_text().splitlines())}
    points, folders = tensorboard_points(tracked_run / "runs")
    assert len(folders) == 1, "the three processes write to one TensorBoard run"
    assert len(list(next(iter(folders)).glob("events.out.tfevents.*"))) == 3
    assert steps(points, "eval/accuracy") == [-1, 0, 1]
    assert [v for *_, v in sorted(points["eval/accuracy"])] == pytest.approx(
        [lines[k]["eval/accuracy"] for k in (-1, 0, 1)]
    )
    for tag in ("estep/acceptance_rate", "estep/kept_samples", "mstep/loss", "mstep/steps"):
        assert steps(points, tag) == [0, 1], tag

    # M-step: global step = steps of earlier rounds + the round's own step; sent in wall-time order, strictly rising
    sent = [step for _, step, _ in sorted(points["train/loss"])]
    total = sum(lines[k]["mstep/steps"] for k in (0, 1))
    assert sent == list(range(1, total + 1)), sent
    offset, expected = 0, {}
    for k in (0, 1):
        curve = json.loads((tracked_run / f"round_{k:03d}" / "metrics.json").read_text())["mstep/loss_curve"]
        expected.update({offset + point["step"]: point["loss"] for point in curve})
        offset += lines[k]["mstep/steps"]
    got = {step: value for _, step, value in points["train/loss"]}
    assert got == pytest.approx(expected, rel=1e-6)
    assert {step: v for _, step, v in points["train/round"]} == {
        s: (0 if s <= lines[0]["mstep/steps"] else 1) for s in sent
    }
    ledger = json.loads((tracked_run / LEDGER_FILE).read_text())
    assert ledger["trackers"]["tensorboard"] == {"rounds": [-1, 0, 1], "train_step": total}
    assert not list(tracked_run.glob("round_*/trainer/runs")), "the rounds' trainers must not write their own runs"


# ---------------------------------------------------------------------------------------------- W&B and trackio
def wandb_history(run_dir: Path) -> list[dict]:
    """History rows of every offline W&B run file under ``run_dir`` (LevelDB-log records of protobuf ``Record``s)."""
    from wandb.proto import wandb_internal_pb2

    rows = []
    for path in sorted(run_dir.rglob("run-*.wandb")):
        data, pos, chunks, pending = path.read_bytes(), 7, [], b""  # 7 bytes: the ":W&B" header
        while pos + 7 <= len(data):
            left = 32768 - pos % 32768
            if left < 7:
                pos += left
                continue
            _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
            if kind == 0:  # zero padding up to the block's end
                pos += left
                continue
            chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
            pending += chunk
            if kind in (1, 4):  # FULL or LAST: a whole record (FIRST and MIDDLE continue it)
                chunks.append(pending)
                pending = b""
        for chunk in chunks:
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunk)
            if record.WhichOneof("record_type") == "history":
                items = record.history.item
                rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in items})
    return rows


def test_wandb_offline_round_axis_and_resume(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for session in range(2):  # the second session is a resumed run: nothing is sent twice
        tracker = RunTracker(tmp_path, ["wandb"], run_name="demo", config={"lr": 0.1}).start("hash-a")
        assert list(tracker.trackers) == ["wandb"]
        tracker.catch_up(LINES[: session + 1])
        tracker.log_train({"train/loss": 2.0}, 1)
        if session:
            tracker.log_train({"train/loss": 1.0}, 2)
        tracker.finish()
    rows = wandb_history(tmp_path / "wandb")
    assert [r["round"] for r in rows if "round" in r] == [-1, 0]
    assert [r["train/global_step"] for r in rows if "train/loss" in r] == [1, 2]
    baseline = next(r for r in rows if r.get("round") == -1)  # a table is a file; the row holds its description
    assert baseline["eval/reliability/_type"] == "table-file"
    assert (baseline["eval/reliability/nrows"], baseline["eval/reliability/ncols"]) == (2, 6)
    assert len({p.name for p in (tmp_path / "wandb").glob("offline-run-*")}) == 2
    assert len({p.name.rsplit("-", 1)[1] for p in (tmp_path / "wandb").glob("offline-run-*")}) == 1  # one run id


def test_trackio_local_rounds_and_tables(tmp_path, monkeypatch):
    monkeypatch.setenv("TRACKIO_DIR", str(tmp_path / "trackio"))  # trackio reads it once, when imported
    monkeypatch.setenv("TRACKIO_PROJECT", "fem-test")
    if "trackio" in sys.modules:
        pytest.skip("trackio was imported before TRACKIO_DIR could point it at a temp dir")
    pytest.importorskip("trackio")
    for session in range(2):
        tracker = RunTracker(tmp_path, ["trackio"], run_name="demo", config={}).start("hash-a")
        tracker.catch_up(LINES[: session + 1])
        tracker.log_train({"train/loss": 2.0 - session}, 1 + session)
        tracker.finish()
    rows = (
        sqlite3.connect(tmp_path / "trackio" / "fem-test.db").execute("select step, metrics from metrics").fetchall()
    )
    logged = [(step, json.loads(metrics)) for step, metrics in rows]
    assert [s for s, m in logged if "eval/accuracy" in m] == [-1, 0]
    assert [s for s, m in logged if "train/loss" in m] == [1, 2]
    assert next(m for s, m in logged if s == -1)["eval/reliability"]["_type"] == "trackio.table"
