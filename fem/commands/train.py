"""``fem train``: validate everything first (``--dry_run`` stops there), then run or resume the EM loop, holding the
output dir's lock for the whole run (a second process on the same dir exits 2 naming the holder's pid)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fem.loop import EMRunner
from fem.preflight import Preflight, backend_plan, preflight, print_plan
from fem.recipe import parse_configs
from fem.run_configs import Configs
from fem.tasks import build_task
from fem.tracking import FEM_TRACKERS, report_to_names, trainer_report_to
from fem.utils.distributed import is_main_process
from fem.utils.io import read_jsonl
from fem.utils.lock import RunLock


def main(argv: list[str]) -> int:
    return train(parse_configs(argv))


def check(configs: Configs) -> Preflight:
    """The preflight of a training run: both splits, every proposal it names, the output dir."""
    labels = [configs.proposal.proposal, configs.eval.eval_proposal or "ancestral", *configs.eval.proposal_list]
    return preflight(configs, splits=("train", "eval"), proposals=labels, output_dir=True)


def plan(configs: Configs, checked: Preflight) -> dict[str, Any]:
    """What ``--dry_run`` prints."""
    name, (folder, gguf) = configs.model.model_name_or_path, checked.model_source
    p = configs.proposal
    proposal = p.proposal
    if proposal == "power_mh":
        proposal += f" (cut={p.power_cut}, alpha={p.power_alpha}, B={p.block_size}, T={p.max_new_tokens}, N={p.power_mh_steps})"
    elif proposal == "power_smc":
        proposal += f" (particles={p.smc_particles}, alpha={p.power_alpha}, B={p.block_size}, T={p.max_new_tokens}, resample {p.smc_resampling} at ESS < {p.smc_ess_threshold} per {p.smc_resample_every})"
    return {
        "model": f"{name} -> {folder if folder != name else 'hub id or not-yet-existing path: resolved at load time'}"
        + (f" [{gguf}]" if gguf else ""),
        "task": f"{configs.task.task} (answer_mode={configs.task.answer_mode}"
        + (f", eval {configs.eval.eval_answer_mode}" if configs.eval.eval_answer_mode else "")
        + ")",
        "data": checked.data,
        **({"data format": checked.data_formats} if checked.data_formats else {}),
        "scheme": f"{configs.estep.scheme} (M={configs.estep.estep_samples}, keep<={configs.estep.estep_max_keep}"
        + ("" if configs.estep.reward_filter else ", unfiltered: every draw kept whatever its reward")
        + ")",
        **pairwise_plan(configs),
        "proposal": proposal,
        "eval_proposal": configs.eval.eval_proposal or f"ancestral (temperature {configs.eval.eval_temperature})",
        "backend": backend_plan(configs),
        "rounds": configs.em.rounds,
        "lora": f"r={configs.model.lora_r}, alpha={configs.model.lora_alpha}, targets={configs.model.lora_target_modules}",
        "output_dir": f"{Path(configs.mstep.output_dir)} ({checked.output_status})",
        "report_to": trackers_plan(configs.mstep.report_to),
    }


def trackers_plan(report_to) -> str:
    """Who reports where: fem's own trackers get the whole run, the others each round's trainer."""
    ours = [n for n in report_to_names(report_to) if n in FEM_TRACKERS]
    theirs = trainer_report_to(report_to)
    parts = ([f"{', '.join(ours)} (rounds + M-step, one run)"] if ours else []) + (
        [f"{', '.join(theirs)} (each round's trainer only)"] if theirs else []
    )
    return "; ".join(parts) or "none"


def pairwise_plan(configs: Configs) -> dict[str, str]:
    """The confidence target and the pairwise E-step options, for tasks that state a confidence."""
    e = configs.estep
    if not build_task(configs.task).confidence_cue:
        return {}
    target = e.confidence_target
    if target == "empirical":
        target += f" (m={e.confidence_samples} plain draws, prior a={e.confidence_prior})"
    elif target == "plain_readout_debiased":
        target += " (P(gold candidate) averaged over both orders)"
    swaps = "both orders" if e.estep_position_swap else "as given"
    return {"confidence": f"trained 'Confidence: N%' = {target}; pairs {swaps}, balance {e.estep_balance}"}


def train(configs: Configs) -> int:
    checked = check(configs)
    if configs.em.dry_run:
        if is_main_process():
            print_plan("fem train plan (dry run: no model loaded)", plan(configs, checked), width=14)
        return 0
    # one process per output dir for the whole run (under accelerate launch: the main process for all ranks)
    with RunLock.hold(configs.mstep.output_dir, "fem train", take=is_main_process()):
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
    ("eval/nll", "NLL"),
    ("eval/mean_confidence", "mean conf"),
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
    rows = read_jsonl(output_dir / "metrics.jsonl")
    columns = [(key, name) for key, name in SUMMARY_COLUMNS if any(key in r for r in rows)]
    lines = ["| round | " + " | ".join(name for _, name in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for r in rows:
        cells = [_cell(r.get(key)) for key, _ in columns]
        lines.append(f"| {'base' if r['round'] < 0 else r['round']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
