"""``fem report``: (re)build ``OUTPUT/report.md`` and ``OUTPUT/plots/*.png`` from whatever files a run left.

Works on a finished or crashed ``fem train`` dir and on a ``fem eval`` dir: every file is optional, JSONL files
may end in a torn line, and a plot whose data is absent is skipped with the reason written in the report.
Drawing is headless (Agg canvas, no pyplot state).
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fem import metrics as M
from fem.errors import FemError
from fem.eval.command import comparison_table
from fem.utils.io import atomic_write_text, read_jsonl
from fem.utils.logging import get_logger

logger = get_logger(__name__)

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
        """``read_jsonl`` of ``path`` (cached); a torn last line is dropped and noted."""
        if path not in self._cache:
            try:
                self._cache[path] = [r for r in read_jsonl(path) if isinstance(r, dict)]
            except (OSError, ValueError) as e:
                self._cache[path] = []
                self.notes.append(f"`{self.rel(path)}` is unreadable ({type(e).__name__})")
            if _torn(path):
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


def _torn(path: Path) -> bool:
    """Whether a JSONL file ends in a partial line."""
    try:
        if not path.is_file() or path.stat().st_size == 0:
            return False
        with open(path, "rb") as f:
            f.seek(-1, 2)
            return f.read(1) != b"\n"
    except OSError:
        return False


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
def _num(value: Any) -> float | None:
    """A finite float, or None for anything else (missing, None, NaN, text)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _series(run: RunData, key: str, *, baseline: bool = True) -> list[tuple[int, float]]:
    """``(round, value)`` for every round (and the baseline) where ``key`` is a number."""
    points = []
    for k, metrics in run.rounds.items():
        value = _num(metrics.get(key))
        if value is not None and (baseline or k != BASELINE):
            points.append((k, value))
    return points


def _round_label(k: int) -> str:
    return "base" if k == BASELINE else str(k)


def _scheme(run: RunData) -> str:
    if run.config.get("scheme"):
        return str(run.config["scheme"])
    for k in run.round_dirs:
        for sample in run.samples(k)[:1]:
            if sample.get("scheme"):
                return str(sample["scheme"])
    return "unknown"


def _eval_proposal(run: RunData) -> str:
    for k in reversed(list(run.rounds)):
        if isinstance(run.rounds[k].get("eval/proposal"), str):
            return run.rounds[k]["eval/proposal"]
    return run.setting("eval_proposal", "ancestral")


def _trace(record: dict[str, Any]) -> dict[str, Any]:
    trace = record.get("trace")
    return trace if isinstance(trace, dict) else {}


def _is_power(record: dict[str, Any]) -> bool:
    trace = _trace(record)
    cost = trace.get("cost") if isinstance(trace.get("cost"), dict) else {}
    return "stage_steps" in trace or trace.get("proposal") == "power_mh" or (_num(cost.get("mh_steps")) or 0) > 0


# ---------------------------------------------------------------------------------------------------- figures
def _figure(ncols: int = 1, width: float = 6.4, height: float = 4.4) -> tuple[Any, list[Any]]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height), dpi=100, layout="constrained")
    return fig, list(fig.subplots(1, ncols, squeeze=False)[0])


def _save(fig: Any, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


def _round_axis(ax: Any, rounds: list[int]) -> None:
    ax.set_xticks(rounds, [_round_label(k) for k in rounds])
    ax.set_xlabel("EM round (base = before training)")
    ax.grid(alpha=0.3)


PlotResult = Any  # a matplotlib Figure, or a str saying why the plot is not drawn


def plot_accuracy(run: RunData) -> PlotResult:
    """Eval accuracy per round, baseline as round ``base``."""
    if not run.is_training:
        return "no training rounds in this output dir (eval-only run)"
    points = _series(run, "eval/accuracy")
    if not points:
        return "no eval accuracy recorded yet (neither the baseline nor any round finished its eval)"
    fig, (ax,) = _figure()
    xs, ys = zip(*points)
    ax.plot(xs, ys, marker="o", label=f"eval accuracy ({_eval_proposal(run)}), scheme {_scheme(run)}")
    for x, y in points:
        ax.annotate(f"{y:.3f}", (x, y), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=8)
    _round_axis(ax, list(xs))
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.08)
    ax.set_title(f"Eval accuracy per round - {run.setting('task')} (scheme: {_scheme(run)})")
    ax.legend(loc="lower right")
    return fig


def plot_acceptance(run: RunData) -> PlotResult:
    """E-step acceptance rate (fraction of examples with a kept sample) and mean rewards per round."""
    if not run.is_training:
        return "no training rounds in this output dir (eval-only run)"
    points = _series(run, "estep/acceptance_rate", baseline=False)
    if not points:
        return "no E-step finished yet (no `estep/acceptance_rate` in the round metrics)"
    scheme = _scheme(run)
    fig, (ax,) = _figure()
    xs, ys = zip(*points)
    ax.plot(xs, ys, marker="o", linewidth=2, label=f"{scheme}: acceptance rate (examples with a kept sample)")
    for key, text, style in (
        ("estep/reward_plain", "mean reward, plain draws", "s--"),
        ("estep/reward_hinted", "mean reward, hinted draws", "^--"),
    ):
        extra = _series(run, key, baseline=False)
        if extra:
            ax.plot(*zip(*extra), style, alpha=0.8, label=f"{scheme}: {text}")
    _round_axis(ax, list(xs))
    ax.set_ylabel("rate")
    ax.set_ylim(0, 1.08)
    ax.set_title(f"E-step acceptance per round (scheme: {scheme}, proposal: {run.setting('proposal')})")
    ax.legend(loc="lower right", fontsize=8)
    return fig


def plot_tokens(run: RunData) -> PlotResult:
    """Tokens decoded per round by the E-step and by the eval (grouped bars)."""
    if not run.is_training:
        return "no training rounds in this output dir (eval-only run)"
    estep = dict(_series(run, "estep/tokens_decoded", baseline=False))
    evals = dict(_series(run, "eval/tokens_decoded"))
    rounds = sorted(set(estep) | set(evals))
    if not rounds:
        return "no token counts recorded (no E-step or eval finished)"
    fig, (ax,) = _figure()
    width = 0.4
    for values, offset, text in ((estep, -width / 2, "E-step"), (evals, width / 2, "eval")):
        xs = [k for k in rounds if k in values]
        if xs:
            ax.bar([k + offset for k in xs], [values[k] for k in xs], width=width, label=f"{text} tokens decoded")
    _round_axis(ax, rounds)
    ax.set_ylabel("tokens decoded")
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 4))
    ax.set_title("Tokens decoded per round (rejected work included)")
    ax.legend()
    return fig


def _loss_curve(metrics: dict[str, Any]) -> list[tuple[float, float]]:
    curve = metrics.get("mstep/loss_curve")
    points = []
    for i, point in enumerate(curve if isinstance(curve, list) else []):
        if isinstance(point, dict) and _num(point.get("loss")) is not None:
            step = _num(point.get("step"))
            points.append((step if step is not None else float(i + 1), float(point["loss"])))
    return points


def plot_mstep_loss(run: RunData) -> PlotResult:
    """The M-step training loss against optimizer step, one line per round."""
    if not run.is_training:
        return "no training rounds in this output dir (eval-only run)"
    curves = {k: _loss_curve(m) for k, m in run.rounds.items() if k != BASELINE}
    curves = {k: c for k, c in curves.items() if c}
    if not curves:
        return "no M-step loss curve recorded (no round finished a logged M-step)"
    fig, (ax,) = _figure()
    for k, curve in curves.items():
        ax.plot(*zip(*curve), marker="." if len(curve) < 40 else None, label=f"round {k}")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss")
    ax.set_title("M-step loss curves")
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def calibration_pairs(records: Records) -> tuple[list[float], list[float]]:
    """``(confidence, correctness)`` of parsed predictions that state a confidence in [0, 1]."""
    confidences, targets = [], []
    for r in records:
        c, reward = _num(r.get("confidence")), _num(r.get("reward"))
        if c is None or reward is None or r.get("extracted") is None or not 0.0 <= c <= 1.0:
            continue
        confidences.append(c)
        targets.append(min(max(reward, 0.0), 1.0))
    return confidences, targets


def _reliability_panels(run: RunData) -> list[tuple[str, Records]]:
    panels = []
    if run.is_training:
        if run.predictions(BASELINE):
            panels.append(("baseline eval", run.predictions(BASELINE)))
        last = next((k for k in reversed(list(run.round_dirs)) if run.predictions(k)), None)
        if last is not None:
            panels.append((f"round {last} eval", run.predictions(last)))
    panels += [(f"fem eval: {label}", records) for label, records in run.eval_predictions.items()]
    return [(name, records) for name, records in panels if calibration_pairs(records)[0]]


def _draw_reliability(ax: Any, name: str, confidences: list[float], targets: list[float]) -> None:
    rows = M.reliability_table(confidences, targets, N_BINS)
    ax.bar(
        [r["lo"] for r in rows],
        [r["accuracy"] for r in rows],
        width=1 / N_BINS,
        align="edge",
        color="tab:blue",
        alpha=0.7,
        edgecolor="black",
        label="accuracy in bin",
    )
    ax.plot(
        [r["confidence"] for r in rows],
        [r["accuracy"] for r in rows],
        "o",
        color="tab:orange",
        markersize=4,
        label="mean confidence in bin",
    )
    ax.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
    for r in rows:
        ax.annotate(
            f"n={r['count']}",
            ((r["lo"] + r["hi"]) / 2, r["accuracy"]),
            textcoords="offset points",
            xytext=(0, 3),
            ha="center",
            fontsize=7,
        )
    ece, brier = M.ece(confidences, targets, N_BINS), M.brier(confidences, targets)
    ax.set_title(f"{name}: ECE={ece:.3f}, Brier={brier:.3f} (n={len(confidences)})", fontsize=10)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.12)
    ax.set_xlabel("stated confidence (15 equal-width bins)")
    ax.set_ylabel("accuracy (fraction of verdicts correct)")
    ax.legend(loc="upper left", fontsize=7)


def plot_reliability(run: RunData) -> PlotResult:
    """Reliability diagrams of the last eval (and the baseline, and each ``fem eval`` proposal)."""
    panels = _reliability_panels(run)
    if not panels:
        has_predictions = any(run.predictions(k) for k in [BASELINE, *run.round_dirs]) or run.eval_predictions
        return (
            "eval predictions carry no confidence (not a judge/summarize task)"
            if has_predictions
            else "no eval predictions found"
        )
    fig, axes = _figure(len(panels), width=5.2, height=4.8)
    for ax, (name, records) in zip(axes, panels):
        _draw_reliability(ax, name, *calibration_pairs(records))
    fig.suptitle("Reliability diagrams (confidence vs accuracy)")
    return fig


def _trace_sources(run: RunData) -> list[tuple[str, Records]]:
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
        if not _is_power(record):
            continue
        trace = _trace(record)
        count += 1
        stage_steps, stage_accepts = trace.get("stage_steps"), trace.get("stage_accepts")
        if isinstance(stage_steps, list) and isinstance(stage_accepts, list):
            for i, (s, a) in enumerate(zip(stage_steps, stage_accepts)):
                steps[i] += _num(s) or 0.0
                accepts[i] += _num(a) or 0.0
        cost = trace.get("cost") if isinstance(trace.get("cost"), dict) else {}
        total_steps += _num(cost.get("mh_steps")) or 0.0
        total_accepts += _num(cost.get("mh_accepts")) or 0.0
    per_stage = [accepts[i] / steps[i] if steps[i] else math.nan for i in range(max(steps, default=-1) + 1)]
    overall = total_accepts / total_steps if total_steps else None
    return per_stage, overall, count


def plot_mh_acceptance(run: RunData) -> PlotResult:
    """MH acceptance rate per stage of the power_mh traces, one line per source."""
    found = []
    for name, records in _trace_sources(run):
        per_stage, overall, count = stage_acceptance(records)
        per_stage = per_stage if any(not math.isnan(x) for x in per_stage) else []
        if count and (per_stage or overall is not None):
            found.append((name, per_stage, overall, count))
    if not found:
        return "no power_mh traces (with MH steps) in samples.jsonl or eval predictions"
    fig, (ax,) = _figure(width=7.2)
    stages = 1
    for name, per_stage, overall, count in found:
        if per_stage:
            stages = max(stages, len(per_stage))
            ax.plot(range(1, len(per_stage) + 1), per_stage, marker="o", label=f"{name} ({count} traces)")
        else:
            ax.axhline(overall, linestyle="--", label=f"{name}: all stages ({count} traces)")
    ax.set_xticks(range(1, stages + 1))
    ax.set_xlabel("stage k (horizon k*B)")
    ax.set_ylabel("MH acceptance rate (accepts / steps)")
    ax.set_ylim(0, 1.05)
    ax.set_title("power_mh: MH acceptance rate per stage")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def _logp_groups(run: RunData) -> dict[str, list[float]]:
    """Per-token mean log p of each trace, grouped by proposal (fem eval labels, or E-step / eval phases)."""
    groups: dict[str, list[float]] = defaultdict(list)

    def add(prefix: str, records: Records) -> None:
        for r in records:
            value = _num(_trace(r).get("mean_logp"))
            if value is not None:
                proposal = r.get("proposal") or _trace(r).get("proposal") or "unknown"
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


def plot_logp(run: RunData) -> PlotResult:
    """Box plot of per-token mean log p by proposal (power_mh vs ancestral and others)."""
    groups = _logp_groups(run)
    if len(groups) < 2 or not any("power_mh" in name for name in groups):
        return "needs power_mh traces and another proposal's traces (e.g. `fem eval --proposals ancestral,power_mh`)"
    fig, (ax,) = _figure(width=max(6.4, 1.6 * len(groups)))
    names = list(groups)
    box = ax.boxplot(
        [groups[n] for n in names], tick_labels=[f"{n}\n(n={len(groups[n])})" for n in names], showmeans=True
    )
    for i, name in enumerate(names, start=1):
        mean = sum(groups[name]) / len(groups[name])
        ax.annotate(f"mean {mean:.3f}", (i + 0.3, mean), va="center", fontsize=8)
    ax.set_xlabel("proposal")
    ax.set_ylabel("mean log p per token")
    ax.set_title("Per-token log-likelihood of the traces by proposal")
    ax.grid(alpha=0.3, axis="y")
    ax.set_xlim(0.5, len(names) + 0.8)
    ax.legend([box["medians"][0], box["means"][0]], ["median", "mean"], loc="best")
    return fig


@dataclass(frozen=True)
class PlotSpec:
    name: str
    title: str
    draw: Callable[[RunData], PlotResult]
    caption: str


PLOTS: tuple[PlotSpec, ...] = (
    PlotSpec(
        "accuracy",
        "Accuracy per round",
        plot_accuracy,
        "Eval accuracy after each round; `base` is the eval before training.",
    ),
    PlotSpec(
        "estep_acceptance",
        "E-step acceptance per round",
        plot_acceptance,
        "Fraction of training examples with a kept sample, and mean reward of the draws.",
    ),
    PlotSpec(
        "tokens",
        "Tokens decoded per round",
        plot_tokens,
        "Decoded tokens of the E-step and of the eval of each round.",
    ),
    PlotSpec("mstep_loss", "M-step loss curves", plot_mstep_loss, "Training loss of each round's LoRA M-step."),
    PlotSpec(
        "reliability",
        "Reliability diagrams",
        plot_reliability,
        "Stated confidence (15 equal-width bins) against the fraction of correct verdicts; bin counts annotated.",
    ),
    PlotSpec(
        "mh_acceptance",
        "power_mh acceptance per stage",
        plot_mh_acceptance,
        "Accepted / proposed MH steps per stage, summed over the power_mh traces of each source.",
    ),
    PlotSpec(
        "logp_by_proposal",
        "Mean log p per token by proposal",
        plot_logp,
        "Per-token mean log p of each trace under the model that drew it (E-step samples pooled over rounds).",
    ),
)


def draw_plots(run: RunData, plots_dir: Path) -> dict[str, str]:
    """Draw every plot; returns ``name -> relative PNG path`` or ``name -> "skipped: reason"``. Stale PNGs of
    skipped plots are removed."""
    out: dict[str, str] = {}
    for spec in PLOTS:
        path = plots_dir / f"{spec.name}.png"
        try:
            result = spec.draw(run)
            if isinstance(result, str):
                out[spec.name] = f"skipped: {result}"
            else:
                _save(result, path)
                out[spec.name] = f"{PLOTS_DIR}/{path.name}"
                continue
        except Exception as e:  # one malformed file must not cost the rest of the report
            logger.warning("report: plot %s failed: %s", spec.name, e)
            out[spec.name] = f"skipped: could not be drawn from the files on disk ({type(e).__name__}: {e})"
        path.unlink(missing_ok=True)
    return out


# ---------------------------------------------------------------------------------------------------- markdown
ROUND_COLUMNS: tuple[tuple[str, str], ...] = (
    ("accuracy", "eval/accuracy"),
    ("ECE", "eval/ece"),
    ("Brier", "eval/brier"),
    ("parsed", "eval/parsed_fraction"),
    ("E-step acceptance", "estep/acceptance_rate"),
    ("kept", "estep/kept_samples"),
    ("draws/example", "estep/samples_per_example"),
    ("reward plain", "estep/reward_plain"),
    ("reward hinted", "estep/reward_hinted"),
    ("E-step tokens", "estep/tokens_decoded"),
    ("E-step s", "estep/time_s"),
    ("M-step loss", "mstep/loss"),
    ("M-step steps", "mstep/steps"),
    ("eval tokens", "eval/tokens_decoded"),
    ("eval tok/s", "eval/tokens_per_s"),
    ("eval mean logp", "eval/mean_logp"),
)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else f"{value:.4g}"
    return str(value).replace("|", "/")


def _phases(run: RunData, k: int) -> str:
    if k == BASELINE:
        done = bool((run.state or {}).get("baseline_done")) or "eval/accuracy" in run.rounds.get(k, {})
        return "eval" if done else "-"
    completed = (run.state or {}).get("completed") or {}
    phases = completed.get(str(k)) if isinstance(completed, dict) else None
    return ", ".join(phases) if phases else "-"


def round_table(run: RunData) -> str:
    """One row per round (baseline first), one column per metric present in any round."""
    columns = [(name, key) for name, key in ROUND_COLUMNS if any(key in m for m in run.rounds.values())]
    lines = [
        "| round | phases done | " + " | ".join(name for name, _ in columns) + " |",
        "|---|---|" + "---|" * len(columns),
    ]
    for k, metrics in run.rounds.items():
        cells = [_round_label(k), _phases(run, k)] + [_cell(metrics.get(key)) for _, key in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _proposal_text(run: RunData) -> str:
    name = run.setting("proposal")
    if name == "power_mh":
        return f"power_mh (cut {run.setting('power_cut')}, alpha {run.setting('power_alpha')}, {run.setting('power_mh_steps')} MH steps/stage)"
    return name


def run_status(run: RunData) -> list[str]:
    """Lines saying how far the run got and what an interrupted run left."""
    if run.state is None:
        return ["state: no `state.json` (the run crashed before its first phase finished, or the files were moved)"]
    total = _num(run.config.get("rounds"))
    completed = {str(k): list(v or []) for k, v in (run.state.get("completed") or {}).items() if str(k).isdigit()}
    finished = sorted(int(k) for k, phases in completed.items() if "eval" in phases)
    rounds_text = f"{len(finished)} of {int(total) if total is not None else '?'} finished"
    if run.state.get("finished"):
        return [f"rounds: {rounds_text}", "state: finished"]
    lines = [f"rounds: {rounds_text}", "state: **not finished** (crashed, interrupted or still running)"]
    for k in sorted({*(int(r) for r in completed), *run.round_dirs} - set(finished)):
        phases = completed.get(str(k)) or []
        missing = [p for p in ("estep", "mstep", "eval") if p not in phases]
        samples = run.samples(k)
        kept = sum(1 for s in samples if s.get("kept"))
        lines.append(
            f"round {k}: done {', '.join(phases) or 'nothing'}; missing {', '.join(missing)}; {len(samples)} samples readable in samples.jsonl ({kept} kept)"
        )
    return lines


def summary_lines(run: RunData) -> list[str]:
    lines = [f"task: {run.setting('task')}", f"model: {run.setting('model_name_or_path')}"]
    if run.is_training:
        lines += [
            f"scheme: {_scheme(run)}",
            f"E-step proposal: {_proposal_text(run)}",
            f"eval proposal: {_eval_proposal(run)}",
        ]
        lines += run_status(run)
    if run.side_by_side or run.eval_predictions:
        lines.append(f"fem eval proposals: {', '.join(run.side_by_side or run.eval_predictions)}")
    if run.record.get("git_sha"):
        lines.append(f"git: {run.record['git_sha']}")
    return [f"- {line}" for line in lines]


def plot_section(plots: dict[str, str]) -> list[str]:
    lines = ["## Plots", ""]
    for spec in PLOTS:
        lines += [f"### {spec.title}", ""]
        entry = plots[spec.name]
        if entry.startswith("skipped: "):
            lines += [f"_Not drawn: {entry[len('skipped: ') :]}._", ""]
        else:
            lines += [f"![{spec.title}]({entry})", "", spec.caption, ""]
    return lines


def render_report(run: RunData, plots: dict[str, str]) -> str:
    """The text of ``report.md``."""
    kind = (
        "training run"
        if run.is_training
        else ("fem eval run" if run.side_by_side or run.eval_predictions else "output dir")
    )
    lines = [
        f"# fem report: {run.root.resolve().name}",
        "",
        f"_{kind}; rebuilt by `fem report` from the files on disk._",
        "",
    ]
    lines += ["## Summary", "", *summary_lines(run), ""]
    if run.is_training:
        lines += ["## Rounds", ""]
        lines += [round_table(run), ""] if run.rounds else ["_No round metrics on disk yet._", ""]
    if run.side_by_side:
        lines += ["## Side-by-side evaluation (fem eval)", "", comparison_table(run.side_by_side), ""]
    elif run.eval_predictions:
        lines += [
            "## Side-by-side evaluation (fem eval)",
            "",
            "_No `eval/metrics.json`: the eval did not finish; predictions only._",
            "",
        ]
    if not run.is_training and not run.side_by_side and not run.eval_predictions:
        lines += ["_No training or evaluation files found in this directory._", ""]
    lines += plot_section(plots)
    if run.notes:
        lines += ["## Damaged or unreadable files", "", *[f"- {note}" for note in dict.fromkeys(run.notes)], ""]
    return "\n".join(lines)


def build_report(output_dir: str | Path) -> Path:
    """(Re)build ``output_dir/report.md`` and ``output_dir/plots/*.png``; returns the report path."""
    root = Path(output_dir)
    if not root.is_dir():
        raise FemError(f"{root} is not a directory", fix="name the output_dir of a `fem train` or `fem eval` run")
    run = load_run(root)
    plots = draw_plots(run, root / PLOTS_DIR)
    path = root / REPORT_FILE
    atomic_write_text(path, render_report(run, plots))
    return path


__all__ = ["RunData", "build_report", "calibration_pairs", "load_run", "render_report", "stage_acceptance"]
