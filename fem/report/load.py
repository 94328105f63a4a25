"""Reading a run's output dir for the report: every file optional, JSONL files may end in a torn line.

``load_run`` gathers what ``fem train`` or ``fem eval`` left into a ``RunData``; the helpers below turn its records
into the series and tallies that the plots and the markdown show.
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fem.utils.io import JsonlScan, scan_jsonl

REPORT_FILE = "report.md"
PLOTS_DIR = "plots"
N_BINS = 15
BASELINE = -1
Records = list[dict[str, Any]]


# ---------------------------------------------------------------------------------------------------- loading
@dataclass
class RunData:
    """Everything readable in one output dir (missing files leave their fields empty)."""

    root: Path
    record: dict[str, Any] = field(default_factory=dict)  # config.yaml
    config: dict[str, Any] = field(default_factory=dict)  # the resolved flat config
    state: dict[str, Any] | None = None
    rounds: dict[int, dict[str, Any]] = field(default_factory=dict)  # round (-1 = baseline) -> metrics
    round_dirs: dict[int, Path] = field(default_factory=dict)
    side_by_side: dict[str, dict[str, Any]] = field(default_factory=dict)  # fem eval: label -> metrics
    eval_predictions: dict[str, Records] = field(default_factory=dict)  # fem eval: label -> predictions
    eval_header: dict[str, str] = field(default_factory=dict)  # task / model from eval/report.md
    notes: list[str] = field(default_factory=list)  # files found damaged or unreadable
    _cache: dict[Path, Records] = field(default_factory=dict)

    @property
    def is_training(self) -> bool:
        return bool(
            self.state is not None or self.rounds or self.round_dirs or self.record.get("command") == "fem train"
        )

    def records(self, path: Path) -> Records:
        """The records of a JSONL file (cached); a torn last line and damaged lines are skipped and noted (the report
        is best effort: it shows what is readable and says what is not)."""
        if path not in self._cache:
            try:
                scan = scan_jsonl(path)
            except OSError as e:
                scan = JsonlScan()
                self.notes.append(f"`{self.rel(path)}` is unreadable ({type(e).__name__})")
            self._cache[path] = scan.records
            if scan.damaged:
                lines = ", ".join(map(str, scan.damaged[:5])) + (", ..." if len(scan.damaged) > 5 else "")
                self.notes.append(f"`{self.rel(path)}`: damaged line(s) {lines} skipped")
            if scan.torn:
                self.notes.append(f"`{self.rel(path)}`: torn last line ignored (the run stopped mid-write)")
        return self._cache[path]

    def rel(self, path: Path) -> str:
        return str(path.relative_to(self.root)) if path.is_relative_to(self.root) else str(path)

    def samples(self, k: int) -> Records:
        return self.records(self.round_dirs[k] / "samples.jsonl") if k in self.round_dirs else []

    def predictions(self, k: int) -> Records:
        """Eval predictions of round ``k`` (``-1``: the baseline)."""
        if k == BASELINE:
            return self.records(self.root / "baseline" / "predictions.jsonl")
        return self.records(self.round_dirs[k] / "eval" / "predictions.jsonl") if k in self.round_dirs else []

    def setting(self, key: str, default: str = "unknown") -> str:
        value = self.config.get(key)
        return default if value in (None, "") else str(value)


def _read_json(path: Path, notes: list[str], root: Path) -> Any:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, OSError, UnicodeDecodeError) as e:
        notes.append(f"`{path.relative_to(root)}` is unreadable ({type(e).__name__})")
        return None


def _read_yaml(path: Path, notes: list[str], root: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, OSError, UnicodeDecodeError) as e:
        notes.append(f"`{path.relative_to(root)}` is unreadable ({type(e).__name__})")
        return {}
    return data if isinstance(data, dict) else {}


def _find_round_dirs(root: Path) -> dict[int, Path]:
    out = {}
    for path in root.glob("round_*"):
        match = re.fullmatch(r"round_(\d+)", path.name)
        if match and path.is_dir():
            out[int(match.group(1))] = path
    return dict(sorted(out.items()))


def _load_rounds(run: RunData) -> None:
    """Merge ``metrics.jsonl`` with the per-round and baseline ``metrics.json`` files (the latter win)."""
    for line in run.records(run.root / "metrics.jsonl"):
        if isinstance(line.get("round"), int):
            run.rounds[line["round"]] = dict(line)
    baseline = _read_json(run.root / "baseline" / "metrics.json", run.notes, run.root)
    if isinstance(baseline, dict):
        run.rounds.setdefault(BASELINE, {"round": BASELINE}).update(baseline)
    for k, directory in run.round_dirs.items():
        metrics = run.rounds.setdefault(k, {"round": k})
        saved = _read_json(directory / "metrics.json", run.notes, run.root)
        if isinstance(saved, dict):
            metrics.update(saved)
        evaluated = _read_json(directory / "eval" / "metrics.json", run.notes, run.root)
        if isinstance(evaluated, dict):
            for key, value in evaluated.items():
                metrics.setdefault(key, value)
    run.rounds = dict(sorted(run.rounds.items()))


def _load_side_by_side(run: RunData) -> None:
    """``fem eval`` results: ``eval/metrics.json`` plus per-label dirs (which survive a crash between labels)."""
    directory = run.root / "eval"
    if not directory.is_dir():
        return
    results = _read_json(directory / "metrics.json", run.notes, run.root)
    if isinstance(results, dict):
        run.side_by_side = {label: m for label, m in results.items() if isinstance(m, dict)}
    for record in run.records(directory / "predictions.jsonl"):
        run.eval_predictions.setdefault(str(record.get("proposal")), []).append(record)
    for sub in sorted(p for p in directory.iterdir() if p.is_dir()):
        metrics = _read_json(sub / "metrics.json", run.notes, run.root)
        records = run.records(sub / "predictions.jsonl")
        label = str(
            (metrics or {}).get("eval/proposal") or (records[0].get("proposal") if records else None) or sub.name
        )
        if isinstance(metrics, dict):
            run.side_by_side.setdefault(label, metrics)
        if records and label not in run.eval_predictions:
            run.eval_predictions[label] = records
    order = list(run.side_by_side) + [label for label in run.eval_predictions if label not in run.side_by_side]
    run.eval_predictions = {label: run.eval_predictions[label] for label in order if label in run.eval_predictions}
    run.eval_header = _eval_header(directory / "report.md")


def _eval_header(path: Path) -> dict[str, str]:
    """Task and model named in the header ``fem eval`` writes to ``eval/report.md``."""
    if not path.is_file():
        return {}
    header: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines()[:6]:
        if line.startswith("# fem eval:"):
            header["task"] = line.split(":", 1)[1].strip()
        elif line.startswith("model:"):
            header["model"] = line.split(":", 1)[1].strip()
    return header


def load_run(output_dir: str | Path) -> RunData:
    """Read every known file of ``output_dir``; never raises on a missing or damaged file."""
    root = Path(output_dir)
    run = RunData(root=root)
    run.record = _read_yaml(root / "config.yaml", run.notes, root)
    state = _read_json(root / "state.json", run.notes, root)
    run.state = state if isinstance(state, dict) else None
    config = run.record.get("config")
    run.config = dict(config) if isinstance(config, dict) else dict((run.state or {}).get("config") or {})
    run.round_dirs = _find_round_dirs(root)
    _load_rounds(run)
    _load_side_by_side(run)
    for key, config_key in (("task", "task"), ("model", "model_name_or_path")):
        if key in run.eval_header:
            run.config.setdefault(config_key, run.eval_header[key])
    return run


# ---------------------------------------------------------------------------------------------------- helpers
def num(value: Any) -> float | None:
    """A finite float, or None for anything else (missing, None, NaN, text)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def series(run: RunData, key: str, *, baseline: bool = True) -> list[tuple[int, float]]:
    """``(round, value)`` for every round (and the baseline) where ``key`` is a number."""
    points = []
    for k, metrics in run.rounds.items():
        value = num(metrics.get(key))
        if value is not None and (baseline or k != BASELINE):
            points.append((k, value))
    return points


def round_label(k: int) -> str:
    return "base" if k == BASELINE else str(k)


def scheme_of(run: RunData) -> str:
    if run.config.get("scheme"):
        return str(run.config["scheme"])
    for k in run.round_dirs:
        for sample in run.samples(k)[:1]:
            if sample.get("scheme"):
                return str(sample["scheme"])
    return "unknown"


def eval_proposal_of(run: RunData) -> str:
    for k in reversed(list(run.rounds)):
        if isinstance(run.rounds[k].get("eval/proposal"), str):
            return run.rounds[k]["eval/proposal"]
    return run.setting("eval_proposal", "ancestral")


def trace_of(record: dict[str, Any]) -> dict[str, Any]:
    trace = record.get("trace")
    return trace if isinstance(trace, dict) else {}


def is_power_trace(record: dict[str, Any]) -> bool:
    trace = trace_of(record)
    cost = trace.get("cost") if isinstance(trace.get("cost"), dict) else {}
    return "stage_steps" in trace or trace.get("proposal") == "power_mh" or (num(cost.get("mh_steps")) or 0) > 0


def loss_curve(metrics: dict[str, Any]) -> list[tuple[float, float]]:
    curve = metrics.get("mstep/loss_curve")
    points = []
    for i, point in enumerate(curve if isinstance(curve, list) else []):
        if isinstance(point, dict) and num(point.get("loss")) is not None:
            step = num(point.get("step"))
            points.append((step if step is not None else float(i + 1), float(point["loss"])))
    return points


def calibration_pairs(records: Records) -> tuple[list[float], list[float]]:
    """``(confidence, correctness)`` of parsed predictions that state a confidence in [0, 1]."""
    confidences, targets = [], []
    for r in records:
        c, reward = num(r.get("confidence")), num(r.get("reward"))
        if c is None or reward is None or r.get("extracted") is None or not 0.0 <= c <= 1.0:
            continue
        confidences.append(c)
        targets.append(min(max(reward, 0.0), 1.0))
    return confidences, targets


def trace_sources(run: RunData) -> list[tuple[str, Records]]:
    """Every set of traces on disk, named: E-step samples and eval predictions per round, and fem eval labels."""
    sources = []
    if run.predictions(BASELINE):
        sources.append(("baseline eval", run.predictions(BASELINE)))
    for k in run.round_dirs:
        sources += [(f"round {k} E-step", run.samples(k)), (f"round {k} eval", run.predictions(k))]
    sources += [(f"fem eval {label}", records) for label, records in run.eval_predictions.items()]
    return [(name, records) for name, records in sources if records]


def stage_acceptance(records: Records) -> tuple[list[float], float | None, int]:
    """Per-stage MH acceptance (accepts / steps summed over power_mh traces), the overall rate, and the trace count."""
    steps: dict[int, float] = defaultdict(float)
    accepts: dict[int, float] = defaultdict(float)
    total_steps = total_accepts = 0.0
    count = 0
    for record in records:
        if not is_power_trace(record):
            continue
        trace = trace_of(record)
        count += 1
        stage_steps, stage_accepts = trace.get("stage_steps"), trace.get("stage_accepts")
        if isinstance(stage_steps, list) and isinstance(stage_accepts, list):
            for i, (s, a) in enumerate(zip(stage_steps, stage_accepts)):
                steps[i] += num(s) or 0.0
                accepts[i] += num(a) or 0.0
        cost = trace.get("cost") if isinstance(trace.get("cost"), dict) else {}
        total_steps += num(cost.get("mh_steps")) or 0.0
        total_accepts += num(cost.get("mh_accepts")) or 0.0
    per_stage = [accepts[i] / steps[i] if steps[i] else math.nan for i in range(max(steps, default=-1) + 1)]
    overall = total_accepts / total_steps if total_steps else None
    return per_stage, overall, count


def logp_groups(run: RunData) -> dict[str, list[float]]:
    """Per-token mean log p of each trace, grouped by proposal (fem eval labels, or E-step / eval phases)."""
    groups: dict[str, list[float]] = defaultdict(list)

    def add(prefix: str, records: Records) -> None:
        for r in records:
            value = num(trace_of(r).get("mean_logp"))
            if value is not None:
                proposal = r.get("proposal") or trace_of(r).get("proposal") or "unknown"
                groups[f"{prefix}{proposal}"].append(value)

    for records in run.eval_predictions.values():
        add("", records)
    for k in run.round_dirs:
        add("E-step ", run.samples(k))
    last = next((k for k in reversed(list(run.round_dirs)) if run.predictions(k)), None)
    if last is not None:
        add(f"round {last} eval ", run.predictions(last))
    add("base eval ", run.predictions(BASELINE))
    return dict(groups)
