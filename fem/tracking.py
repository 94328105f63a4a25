"""A ``fem train`` run in the user's experiment trackers: every ``metrics.jsonl`` line with the round as its step,
and the M-step's live training logs on one global step axis across rounds, from the main process only.

Contract:

- ``report_to`` names transformers' integrations. fem itself drives ``tensorboard``, ``wandb`` and ``trackio``
  (``FEM_TRACKERS``) through accelerate's tracker classes, one tracker run per training run; the rounds' trainers
  then report to the other names only (``trainer_report_to``), whose logs restart at step 0 each round, as before.
  An unknown name is a ``ConfigError`` before any compute; a tracker that cannot start, or fails later, is dropped
  with one warning line and the run goes on.
- Round metrics: numbers as scalars, strings as text, a mapping of numbers as ``key/name`` scalars, a list of rows
  (the eval's reliability table) or a mapping of rows (accuracy by confidence bucket) as a table (a markdown table
  in TensorBoard's text tab, ``wandb.Table``, ``trackio.Table``); ``None`` is left out. The step is the round (the
  baseline is ``-1``). W&B has one step counter per run, so there the rounds are the custom step metric ``round``
  and the M-step logs ``train/global_step`` (``define_metric``), as transformers' own W&B callback does.
- M-step logs (``train/loss``, ``train/grad_norm``, ...): optimizer step ``s`` of round ``k`` is global step
  ``offset_k + s``, where ``offset_k`` adds up ``mstep/steps`` of the rounds before ``k`` in ``metrics.jsonl``.
- At most once across kills and resumptions: ``OUTPUT/trackers.json`` (the ledger) records per tracker the rounds
  and the last global M-step step sent. It is written before a point is sent (a kill in between loses that point
  rather than sending it twice), and a resumed run sends the finished rounds no tracker has yet. The ledger, the
  W&B run id and the TensorBoard folder belong to one run config (``state.json``'s hash): a new config starts anew.
"""

from __future__ import annotations

import math
import os
import secrets
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from accelerate import PartialState
from accelerate.tracking import GeneralTracker, TensorBoardTracker, TrackioTracker, WandBTracker
from transformers import TrainerCallback
from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

from fem.errors import ConfigError
from fem.utils.io import atomic_write_json, read_json, read_jsonl
from fem.utils.logging import get_logger

logger = get_logger(__name__)

LEDGER_FILE = "trackers.json"
METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "runs"  # OUTPUT/runs/<run name>-<run id>/, unless TENSORBOARD_LOGGING_DIR says elsewhere
FEM_TRACKERS = ("tensorboard", "wandb", "trackio")
ROUND_PREFIXES = ("estep/", "mstep/", "eval/")
TRAIN_PREFIX = "train/"
TRAIN_STEP = "train/global_step"  # W&B's step metric for the M-step logs (transformers' name for it)


def report_to_names(report_to: str | Sequence[str] | None) -> list[str]:
    """The tracker names of a ``report_to`` value (a list, ``none``, or comma-separated names), checked against
    transformers' integrations: an unknown name is a ``ConfigError`` (found before any model loads)."""
    if report_to is None:
        return []
    entries = [report_to] if isinstance(report_to, str) else list(report_to)
    names = [n.strip() for entry in entries for n in str(entry).split(",") if n.strip() and n.strip() != "none"]
    for name in names:
        if name not in INTEGRATION_TO_CALLBACK:
            raise ConfigError(
                f"'{name}' is not a tracker transformers knows",
                field="report_to",
                fix=f"use none or some of {', '.join(sorted(INTEGRATION_TO_CALLBACK))}",
            )
    return list(dict.fromkeys(names))


def trainer_report_to(report_to: str | Sequence[str] | None) -> list[str]:
    """What each round's trainer still reports to itself: the names fem does not drive."""
    return [n for n in report_to_names(report_to) if n not in FEM_TRACKERS]


def _number(value: Any) -> float | int | None:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)) and not (isinstance(value, float) and math.isnan(value)):
        return value
    return None


def _is_table(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(row, dict) for row in value)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """Rows of dicts as a markdown table (TensorBoard's text tab renders it)."""
    columns = list(dict.fromkeys(key for row in rows for key in row))

    def cell(value: Any) -> str:
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


class RunTracker:
    """The trackers of one training run (none on a non-main process, or when ``report_to`` names none of
    ``FEM_TRACKERS``). ``start`` opens them, ``log_round`` / ``catch_up`` send round metrics, ``mstep_callback``
    forwards a round's trainer logs, ``finish`` closes them."""

    def __init__(self, output_dir: Path, names: Sequence[str], *, run_name: str, config: dict[str, Any]):
        self.output_dir = Path(output_dir)
        self.names = [n for n in names if n in FEM_TRACKERS]
        self.run_name = run_name
        self.config = config
        self.trackers: dict[str, GeneralTracker] = {}
        self.ledger: dict[str, Any] = {}

    # -- lifecycle ---------------------------------------------------------------------------------------------
    def start(self, config_hash: str) -> RunTracker:
        """Open every named tracker (resuming this config's tracker runs); one that cannot start is dropped with a
        warning line."""
        if not self.names:
            return self
        self.ledger = self._load_ledger(config_hash)
        PartialState()  # accelerate's trackers log through its state (already there when several processes run)
        for name in self.names:
            try:
                tracker = self._build(name)
                tracker.start()
                if name == "wandb":
                    run = tracker.tracker
                    run.define_metric("round")
                    for prefix in ROUND_PREFIXES:
                        run.define_metric(prefix + "*", step_metric="round")
                    run.define_metric(TRAIN_STEP)
                    run.define_metric(TRAIN_PREFIX + "*", step_metric=TRAIN_STEP)
            except Exception as e:  # noqa: BLE001 - any tracker failure is one warning, never a failed run
                logger.warning("report_to %s: could not start (%s); the run goes on without it", name, _brief(e))
                continue
            self.trackers[name] = tracker
            self.ledger["trackers"].setdefault(name, {"rounds": [], "train_step": 0})
        if self.trackers:
            atomic_write_json(self.output_dir / LEDGER_FILE, self.ledger)
            logger.info("tracking to %s (run id %s)", ", ".join(self.trackers), self.ledger["run_id"])
        return self

    def finish(self) -> None:
        for name, tracker in list(self.trackers.items()):
            try:
                tracker.finish()
            except Exception as e:  # noqa: BLE001
                logger.warning("report_to %s: could not close cleanly (%s)", name, _brief(e))
        self.trackers.clear()

    def _load_ledger(self, config_hash: str) -> dict[str, Any]:
        path = self.output_dir / LEDGER_FILE
        try:
            ledger = read_json(path) if path.is_file() else {}
        except (OSError, ValueError):
            ledger = {}
        if ledger.get("config_hash") != config_hash or not isinstance(ledger.get("trackers"), dict):
            ledger = {"config_hash": config_hash, "run_id": secrets.token_hex(4), "trackers": {}}
        return ledger

    def _build(self, name: str) -> GeneralTracker:
        """accelerate's tracker for ``name``; its files stay in the output dir where the library allows."""
        run_id, label = self.ledger["run_id"], f"{self.run_name}-{self.ledger['run_id']}"
        if name == "tensorboard":
            folder = os.environ.get("TENSORBOARD_LOGGING_DIR") or str(self.output_dir / TENSORBOARD_DIR)
            return TensorBoardTracker(label, folder)
        if name == "wandb":
            project = os.environ.get("WANDB_PROJECT", "fem")
            return WandBTracker(
                project, id=run_id, name=self.run_name, resume="allow", dir=str(self.output_dir), config=self.config
            )
        project = os.environ.get("TRACKIO_PROJECT", "fem")
        return TrackioTracker(project, name=label, resume="allow", config=self.config)

    # -- sending -----------------------------------------------------------------------------------------------
    def log_round(self, line: dict[str, Any]) -> None:
        """Send one ``metrics.jsonl`` line to every tracker that has not had its round yet."""
        k = int(line["round"])
        pending = [name for name in self.trackers if k not in self.ledger["trackers"][name]["rounds"]]
        if not pending:
            return
        for name in pending:
            entry = self.ledger["trackers"][name]
            entry["rounds"] = sorted([*entry["rounds"], k])
        atomic_write_json(self.output_dir / LEDGER_FILE, self.ledger)
        for name in pending:
            self._send(name, self._round_values(name, line), "round", k)

    def catch_up(self, lines: Iterable[dict[str, Any]]) -> None:
        """Send the finished rounds (``metrics.jsonl`` lines) that a tracker has not had (a resumed run)."""
        for line in lines:
            if isinstance(line.get("round"), int):
                self.log_round(line)

    def log_train(self, values: dict[str, Any], global_step: int) -> None:
        """Send M-step logs at ``global_step`` to every tracker that is not past it yet."""
        pending = [name for name in self.trackers if global_step > self.ledger["trackers"][name]["train_step"]]
        if not pending:
            return
        for name in pending:
            self.ledger["trackers"][name]["train_step"] = global_step
        atomic_write_json(self.output_dir / LEDGER_FILE, self.ledger)
        for name in pending:
            self._send(name, values, TRAIN_STEP, global_step)

    def mstep_offset(self, round_index: int) -> int:
        """Optimizer steps of the rounds before ``round_index`` (their ``mstep/steps`` in ``metrics.jsonl``)."""
        lines = read_jsonl(self.output_dir / METRICS_FILE)
        return sum(int(m.get("mstep/steps") or 0) for m in lines if 0 <= int(m.get("round", -1)) < round_index)

    def mstep_callback(self, round_index: int) -> TrainerCallback:
        """A trainer callback that forwards round ``round_index``'s training logs on the global step axis."""
        offset = self.mstep_offset(round_index) if self.trackers else 0
        return MStepLogCallback(self, round_index, offset)

    def _send(self, name: str, values: dict[str, Any], axis: str, step: int) -> None:
        tracker = self.trackers[name]
        try:
            if name == "wandb":  # one step counter per W&B run: the axis is a logged step metric
                tracker.log({axis: step, **values})
            else:
                tracker.log(values, step=step)
        except Exception as e:  # noqa: BLE001
            logger.warning("report_to %s: logging failed (%s); the run goes on without it", name, _brief(e))
            self.trackers.pop(name, None)

    def _round_values(self, name: str, line: dict[str, Any]) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for key, value in line.items():
            if key == "round":
                continue
            if isinstance(value, dict) and value and all(isinstance(v, dict) for v in value.values()):
                value = [{"key": k, **v} for k, v in value.items()]  # e.g. accuracy by confidence bucket
            if (number := _number(value)) is not None:
                values[key] = number
            elif isinstance(value, str):
                values[key] = value
            elif isinstance(value, dict):
                values.update({f"{key}/{k}": n for k, v in value.items() if (n := _number(v)) is not None})
            elif _is_table(value) and (table := self._table(name, value)) is not None:
                values[key] = table
        return values

    def _table(self, name: str, rows: list[dict[str, Any]]) -> Any:
        """A table the tracker shows: markdown text for TensorBoard, the tracker library's own ``Table``
        (already imported by its tracker's ``start``) for W&B and trackio."""
        if name == "tensorboard":
            return markdown_table(rows)
        library = sys.modules.get(name)
        if library is None or not hasattr(library, "Table"):
            return None
        columns = list(dict.fromkeys(key for row in rows for key in row))
        return library.Table(columns=columns, data=[[row.get(c) for c in columns] for row in rows])


class MStepLogCallback(TrainerCallback):
    """Forwards a round's trainer logs (those with a ``loss``) as ``train/*`` at ``offset + state.global_step``."""

    def __init__(self, tracker: RunTracker, round_index: int, offset: int):
        self.tracker, self.round_index, self.offset = tracker, round_index, offset

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not self.tracker.trackers or not state.is_world_process_zero or not logs or "loss" not in logs:
            return
        values = {TRAIN_PREFIX + k: n for k, v in logs.items() if (n := _number(v)) is not None}
        values[TRAIN_PREFIX + "round"] = self.round_index
        self.tracker.log_train(values, self.offset + int(state.global_step))


def _brief(error: BaseException) -> str:
    first = (str(error).strip().splitlines() or [""])[0][:200]
    return f"{type(error).__name__}: {first}" if first else type(error).__name__
