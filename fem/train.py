"""``fem train``: validate everything first (``--dry_run`` stops there), then run or resume the EM loop."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fem.configs import Configs
from fem.utils.logging import get_logger, is_main_process

logger = get_logger(__name__)


def validate_before_compute(configs: Configs, *, check_output: bool = True) -> dict[str, Any]:
    """Every check that needs no model: model source, task and proposal names, data files, output dir.
    Returns the plan that ``--dry_run`` prints. A recipe error names the recipe file (a data error its data file)."""
    from fem.errors import ConfigError

    try:
        return _validate_before_compute(configs, check_output=check_output)
    except ConfigError as e:
        raise (e.in_file(configs.recipe) if configs.recipe else e) from None


def check_task_fields(configs: Configs) -> None:
    """``task_fields`` may only name fields the task reads (a typo there would silently be ignored)."""
    import difflib

    from fem.errors import ConfigError
    from fem.tasks import build_task

    if not configs.task.task_fields:
        return
    task = build_task(configs.task)
    required = tuple(getattr(task, "required_fields", ()) or ())
    if not required:  # a user task class: its fields are its own business
        return
    known = set(required) | {"id"} | set(getattr(task, "allow_empty", ()) or ())
    known |= {getattr(task, "label_field", None)} - {None}
    for source in (getattr(task, "sources", None) or {}).values():
        known |= set(source.fields)
    for name in configs.task.task_fields:
        if str(name) not in known:
            close = difflib.get_close_matches(str(name), sorted(known), n=1)
            raise ConfigError(
                f"'{name}' is not a field of task {configs.task.task} (its fields: {', '.join(sorted(known))})",
                field="task_fields",
                fix=f"did you mean '{close[0]}'?" if close else "remove it from task_fields",
            )


def _validate_before_compute(configs: Configs, *, check_output: bool = True) -> dict[str, Any]:
    from fem.models import resolve_model_source
    from fem.proposals import check_proposal_name
    from fem.state import check_output_dir
    from fem.tasks import check_task_name, validate_task_data

    model_source = resolve_model_source(configs.model.model_name_or_path, configs.em.gguf_file)
    check_task_name(configs.task.task)
    check_proposal_name(configs.proposal.proposal)
    for name in filter(None, [configs.eval.eval_proposal, *configs.eval.proposal_list]):
        check_proposal_name(name.partition(":")[0])  # power_mh:uniform selects a cut of power_mh
    check_task_fields(configs)
    data = validate_task_data(configs.task)
    output_dir = Path(configs.mstep.output_dir)
    from fem.loop import run_config

    status = "not checked"
    if check_output:
        status = check_output_dir(output_dir, run_config(configs), overwrite=configs.em.overwrite_output_dir_contents)
    p = configs.proposal
    proposal = p.proposal
    if proposal == "power_mh":
        proposal += f" (cut={p.power_cut}, alpha={p.power_alpha}, B={p.block_size}, T={p.max_new_tokens}, N={p.power_mh_steps})"
    elif proposal == "power_smc":
        proposal += f" (particles={p.smc_particles}, alpha={p.power_alpha}, B={p.block_size}, T={p.max_new_tokens}, resample {p.smc_resampling} at ESS < {p.smc_ess_threshold} per {p.smc_resample_every})"
    return {
        "model": f"{configs.model.model_name_or_path} -> {model_source[0] if model_source[0] != configs.model.model_name_or_path else 'hub id or not-yet-existing path: resolved at load time'}"
        + (f" [{model_source[1]}]" if model_source[1] else ""),
        "task": f"{configs.task.task} (answer_mode={configs.task.answer_mode}"
        + (f", eval {configs.eval.eval_answer_mode}" if configs.eval.eval_answer_mode else "")
        + ")",
        "data": data,
        "scheme": f"{configs.estep.scheme} (M={configs.estep.estep_samples}, keep<={configs.estep.estep_max_keep}"
        + ("" if configs.estep.reward_filter else ", unfiltered: every draw kept whatever its reward")
        + ")",
        "proposal": proposal,
        "eval_proposal": configs.eval.eval_proposal or f"ancestral (temperature {configs.eval.eval_temperature})",
        "rounds": configs.em.rounds,
        "lora": f"r={configs.model.lora_r}, alpha={configs.model.lora_alpha}, targets={configs.model.lora_target_modules}",
        "output_dir": f"{output_dir} ({status})",
    }


def print_plan(plan: dict[str, Any]) -> None:
    print("fem train plan (dry run: no model loaded)")
    for key, value in plan.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items())
        print(f"  {key:<14} {value}")


def train(configs: Configs) -> int:
    plan = validate_before_compute(configs)
    if configs.em.dry_run:
        if is_main_process():
            print_plan(plan)
        return 0
    from fem.loop import EMRunner

    runner = EMRunner(configs)
    runner.run()
    if is_main_process():
        print(summary_table(runner.output_dir))
        print(f"\nfem train: finished {configs.em.rounds} round(s); outputs in {runner.output_dir}")
        if (runner.output_dir / "report.md").exists():
            print(f"report: {runner.output_dir / 'report.md'}, plots: {runner.output_dir / 'plots'}")
    return 0


SUMMARY_COLUMNS = (
    ("eval/accuracy", "accuracy"),
    ("eval/ece", "ECE"),
    ("eval/brier", "Brier"),
    ("eval/parsed_fraction", "parsed"),
    ("estep/acceptance_rate", "accept"),
    ("estep/kept_samples", "kept"),
    ("mstep/loss", "M-loss"),
    ("eval/tokens_per_s", "eval tok/s"),
)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else f"{value:.0f}" if abs(value) >= 100 else f"{value:.3f}"
    return str(value)


def summary_table(output_dir: Path) -> str:
    """Before/after table from ``metrics.jsonl``: one row per round (``base`` = before training)."""
    from fem.utils.io import read_jsonl

    rows = read_jsonl(output_dir / "metrics.jsonl")
    columns = [(key, name) for key, name in SUMMARY_COLUMNS if any(key in r for r in rows)]
    lines = ["| round | " + " | ".join(name for _, name in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for r in rows:
        cells = []
        for key, _ in columns:
            value = r.get(key)
            cells.append(_cell(value))
        lines.append(f"| {'base' if r['round'] < 0 else r['round']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
