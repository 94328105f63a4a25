"""The report's figures: one function per plot, each returning a matplotlib Figure or the reason it is not drawn.

Drawing is headless (Agg canvas, no pyplot state); a plot that fails on a malformed file is skipped with the reason.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from fem import calibration as Cal
from fem import metrics as M
from fem.report.load import (
    BASELINE,
    N_BINS,
    PLOTS_DIR,
    Records,
    RunData,
    calibration_pairs,
    eval_proposal_of,
    logp_groups,
    loss_curve,
    round_label,
    scheme_of,
    series,
    stage_acceptance,
    trace_sources,
)
from fem.utils.logging import get_logger

logger = get_logger(__name__)


def _figure(ncols: int = 1, width: float = 6.4, height: float = 4.4) -> tuple[Any, list[Any]]:
    fig = Figure(figsize=(width * ncols, height), dpi=100, layout="constrained")
    return fig, list(fig.subplots(1, ncols, squeeze=False)[0])


def _save(fig: Any, path: Path) -> None:
    FigureCanvasAgg(fig)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


def _round_axis(ax: Any, rounds: list[int]) -> None:
    ax.set_xticks(rounds, [round_label(k) for k in rounds])
    ax.set_xlabel("EM round (base = before training)")
    ax.grid(alpha=0.3)


PlotResult = Any  # a matplotlib Figure, or a str saying why the plot is not drawn


def plot_accuracy(run: RunData) -> PlotResult:
    """Eval accuracy per round, baseline as round ``base``."""
    if not run.is_training:
        return "no training rounds in this output dir (eval-only run)"
    points = series(run, "eval/accuracy")
    if not points:
        return "no eval accuracy recorded yet (neither the baseline nor any round finished its eval)"
    fig, (ax,) = _figure()
    xs, ys = zip(*points)
    ax.plot(xs, ys, marker="o", label=f"eval accuracy ({eval_proposal_of(run)}), scheme {scheme_of(run)}")
    for x, y in points:
        ax.annotate(f"{y:.3f}", (x, y), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=8)
    _round_axis(ax, list(xs))
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.08)
    ax.set_title(f"Eval accuracy per round - {run.setting('task')} (scheme: {scheme_of(run)})")
    ax.legend(loc="lower right")
    return fig


def plot_acceptance(run: RunData) -> PlotResult:
    """E-step acceptance rate (fraction of examples with a kept sample) and mean rewards per round."""
    if not run.is_training:
        return "no training rounds in this output dir (eval-only run)"
    points = series(run, "estep/acceptance_rate", baseline=False)
    if not points:
        return "no E-step finished yet (no `estep/acceptance_rate` in the round metrics)"
    scheme = scheme_of(run)
    fig, (ax,) = _figure()
    xs, ys = zip(*points)
    ax.plot(xs, ys, marker="o", linewidth=2, label=f"{scheme}: acceptance rate (examples with a kept sample)")
    for key, text, style in (
        ("estep/reward_plain", "mean reward, plain draws", "s--"),
        ("estep/reward_hinted", "mean reward, hinted draws", "^--"),
    ):
        extra = series(run, key, baseline=False)
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
    estep = dict(series(run, "estep/tokens_decoded", baseline=False))
    evals = dict(series(run, "eval/tokens_decoded"))
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


def plot_mstep_loss(run: RunData) -> PlotResult:
    """The M-step training loss against optimizer step, one line per round."""
    if not run.is_training:
        return "no training rounds in this output dir (eval-only run)"
    curves = {k: loss_curve(m) for k, m in run.rounds.items() if k != BASELINE}
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
    mass = Cal.reliability(confidences, targets, N_BINS, "mass")
    ax.plot(
        [r["confidence"] for r in mass],
        [r["accuracy"] for r in mass],
        "s",
        color="tab:green",
        markersize=4,
        alpha=0.8,
        label=f"{N_BINS} equal-mass bins (mean confidence, accuracy)",
    )
    ece, brier = M.ece(confidences, targets, N_BINS), M.brier(confidences, targets)
    ece_mass, nll = Cal.ece(confidences, targets, N_BINS, "mass"), Cal.nll(confidences, targets)
    ax.set_title(
        f"{name} (n={len(confidences)})\nECE={ece:.3f} (mass {ece_mass:.3f}), Brier={brier:.3f}, NLL={nll:.3f}",
        fontsize=9,
    )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.12)
    ax.set_xlabel("stated confidence (bars: 15 equal-width bins)")
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


def plot_mh_acceptance(run: RunData) -> PlotResult:
    """MH acceptance rate per stage of the power_mh traces, one line per source."""
    found = []
    for name, records in trace_sources(run):
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


def plot_logp(run: RunData) -> PlotResult:
    """Box plot of per-token mean log p by proposal (power_mh vs ancestral and others)."""
    groups = logp_groups(run)
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
        "Stated confidence against the fraction of correct verdicts: 15 equal-width bins (bars, counts annotated) "
        "and 15 equal-mass bins (green squares); the title gives ECE of both binnings, Brier and NLL.",
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
