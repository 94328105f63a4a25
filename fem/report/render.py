"""The report's markdown, and ``build_report``: load the run, draw the plots, write ``report.md``.

Works on a finished or crashed ``fem train`` dir and on a ``fem eval`` dir: every file is optional, and a plot
whose data is absent is skipped with the reason written in the report. ``comparison_table`` is also the table
``fem eval`` prints.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fem.errors import FemError
from fem.report.load import (
    BASELINE,
    PLOTS_DIR,
    REPORT_FILE,
    RunData,
    eval_proposal_of,
    load_run,
    num,
    round_label,
    scheme_of,
)
from fem.report.plots import PLOTS, draw_plots
from fem.utils.io import atomic_write_text

REPORT_KEYS = (
    "accuracy",
    "ece",
    "ece_mass",
    "brier",
    "nll",
    "position_consistency",
    "ts_temperature",
    "ts_ece",
    "ts_ece_mass",
    "ts_brier",
    "ts_nll",
    "unparsed_rate",
    "pass@1",
    "maj@k",
    "tokens_decoded",
    "wall_s",
    "tokens_per_s",
    "mean_logp",
)

ROUND_COLUMNS: tuple[tuple[str, str], ...] = (
    ("accuracy", "eval/accuracy"),
    ("ECE", "eval/ece"),
    ("Brier", "eval/brier"),
    ("ECE (mass)", "eval/ece_mass"),
    ("NLL", "eval/nll"),
    ("position consistency", "eval/position_consistency"),
    ("parsed", "eval/parsed_fraction"),
    ("E-step acceptance", "estep/acceptance_rate"),
    ("kept", "estep/kept_samples"),
    ("trained confidence (mean)", "estep/mean_target_confidence"),
    ("dropped to balance", "estep/balance_dropped"),
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
        cells = [round_label(k), _phases(run, k)] + [_cell(metrics.get(key)) for _, key in columns]
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
    total = num(run.config.get("rounds"))
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
            f"scheme: {scheme_of(run)}",
            f"E-step proposal: {_proposal_text(run)}",
            f"eval proposal: {eval_proposal_of(run)}",
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


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def comparison_table(results: dict[str, dict[str, Any]]) -> str:
    """A markdown table, one column per proposal, one row per metric present in any of them."""
    labels = list(results)
    keys = [k for k in REPORT_KEYS if any(f"eval/{k}" in m for m in results.values())]
    keys += sorted(
        {
            k[5:]
            for m in results.values()
            for k in m
            if k.startswith("eval/") and not isinstance(m[k], (dict, list, str))
        }
        - set(keys)
    )
    lines = ["| metric | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
    for key in keys:
        lines.append(
            f"| {key} | " + " | ".join(_fmt(results[label].get(f"eval/{key}", "")) for label in labels) + " |"
        )
    return "\n".join(lines)


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
