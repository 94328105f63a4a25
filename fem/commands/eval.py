"""``fem eval``: evaluate a base model, or base + LoRA adapter, with one or several proposals side by side on the
same prompts and seeds. Builds no trainer and no optimizer."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from fem.drawing import ProposalDrawer
from fem.errors import ConfigError
from fem.eval.evaluate import EvalProgress, eval_examples, evaluate, to_prediction
from fem.eval.scaling import temperature_scaling_metrics
from fem.mstep.adapters import ADAPTER_CONFIG
from fem.preflight import Preflight, backend_plan, preflight, print_plan
from fem.proposals import build_proposal
from fem.recipe import parse_configs
from fem.report.render import comparison_table
from fem.run_configs import Configs
from fem.rundir import check_dir_path
from fem.runtime import Runtime, build_runtime
from fem.tasks.base import Example
from fem.utils.distributed import current_world, is_main_process
from fem.utils.io import atomic_write_json, atomic_write_text, read_jsonl, write_jsonl
from fem.utils.lock import RunLock
from fem.utils.seeding import seed_everything


def main(argv: list[str]) -> int:
    return evaluate_command(parse_configs(argv))


def plan(configs: Configs, checked: Preflight) -> dict[str, Any]:
    """What ``--dry_run`` prints."""
    source, p, ev = checked.model_source, configs.proposal, configs.eval
    return {
        "model": f"{configs.model.model_name_or_path} -> {source[0]}" + (f" [{source[1]}]" if source[1] else ""),
        "adapter": checked.adapter or "none",
        "task": f"{configs.task.task} (answer_mode={ev.eval_answer_mode or configs.task.answer_mode})",
        "data": ", ".join(f"{k}={v}" for k, v in checked.data.items())
        + (" (train: the temperature-scaling calibration split)" if ev.temperature_scaling else ""),
        **({"format": checked.data_formats} if checked.data_formats else {}),
        **({"confidence": ev.eval_confidence} if ev.eval_confidence != "readout" else {}),
        "proposals": ", ".join(label for label, _ in configs.eval_variants()),
        "backend": backend_plan(configs),
        "settings": f"temperature={ev.eval_temperature}, T={ev.eval_max_new_tokens or p.max_new_tokens}, alpha={p.power_alpha}, "
        f"B={p.block_size}, N={p.power_mh_steps}, beta={p.power_beta}, samples/prompt={ev.num_samples}"
        + (
            f", smc_particles={p.smc_particles}"
            if any(c.proposal == "power_smc" for _, c in configs.eval_variants())
            else ""
        ),
        "output_dir": str(Path(configs.mstep.output_dir) / "eval"),
    }


def sized_for_adapter(configs: Configs, adapter: str) -> Configs:
    """The configs with the adapter's own LoRA rank and target modules (``lora_r``; ``lora_target_modules`` by
    their last name component, as vLLM wraps them): an engine that serves adapters as LoRA layers
    (``vllm_adapter_mode: lora``) is built for those, not for the recipe's, so an adapter trained with another rank
    or targets still loads. A regex ``target_modules`` keeps the recipe's targets."""
    saved = json.loads((Path(adapter) / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    targets = saved.get("target_modules")
    if isinstance(targets, list) and targets:
        targets = sorted({str(t).rpartition(".")[2] for t in targets})
    else:
        targets = configs.model.lora_target_modules
    rank = int(saved.get("r") or configs.model.lora_r)
    return dataclasses.replace(
        configs, model=dataclasses.replace(configs.model, lora_r=rank, lora_target_modules=targets)
    )


def load_adapter(runtime: Runtime, adapter: str) -> None:
    """Load the adapter to evaluate; one that does not fit the model is a user error, not a traceback."""
    try:
        runtime.backend.load_adapter(adapter)
    except (OSError, ValueError, RuntimeError, KeyError) as e:  # wrong base model, torn files, ...
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise ConfigError(
            f"cannot load adapter {adapter} onto {runtime.configs.model.model_name_or_path}: {first}",
            field="adapter",
            fix="use an adapter trained from this model_name_or_path",
        ) from None


def calibrate(
    runtime: Runtime,
    label: str,
    drawer: ProposalDrawer,
    eval_records: list[dict[str, Any]],
    examples: list[Example],
    out_dir: Path,
    chunk_size: int,
    seed: int,
) -> dict[str, Any]:
    """Temperature scaling of one proposal's predictions: evaluate the calibration split (the train split's first
    ``calibration_limit`` examples, asked as eval asks them), fit one temperature there, score the eval split
    (``eval/ts_*``). Its predictions go to ``out_dir/calibration``."""
    ev = runtime.configs.eval
    task = runtime.task
    pairs = task.load("train")[: ev.calibration_limit] if ev.calibration_limit else task.load("train")
    calibration = eval_examples(task, pairs, ev.eval_position_swap)  # disjoint from eval: checked by the preflight
    fitted = evaluate(
        task=task,
        examples=calibration,
        drawer=drawer,
        proposal_name=label,
        num_samples=ev.num_samples,
        seed=seed,
        chunk_size=chunk_size,
        world=runtime.world,
        out_dir=out_dir / "calibration",
    )
    if not runtime.world.is_main:
        return {}
    cal_records = read_jsonl(out_dir / "calibration" / "predictions.jsonl")
    metrics = temperature_scaling_metrics(
        task,
        ([to_prediction(r) for r in cal_records], calibration),
        ([to_prediction(r) for r in eval_records], examples),
    )
    metrics["ts_calibration_examples"] = fitted.get("eval/examples")
    return {f"eval/{k}": v for k, v in metrics.items()}


def evaluate_command(configs: Configs) -> int:
    labels = configs.eval.proposal_list or [configs.eval.eval_proposal or "ancestral"]
    splits = ("eval", "train") if configs.eval.temperature_scaling else ("eval",)
    checked = preflight(configs, splits=splits, proposals=labels, adapter=True)
    try:
        check_dir_path(Path(configs.mstep.output_dir))
    except ConfigError as e:
        raise (e.in_file(configs.recipe) if configs.recipe else e) from None
    if configs.em.dry_run:
        if is_main_process():
            print_plan("fem eval plan (dry run: no model loaded)", plan(configs, checked), width=11)
        return 0
    # eval writes OUTPUT_DIR/eval: never while another fem process (a training run, another eval) writes there
    with RunLock.hold(configs.mstep.output_dir, "fem eval", take=is_main_process()):
        return _evaluate(configs, checked)


def _evaluate(configs: Configs, checked: Preflight) -> int:
    seed = int(configs.mstep.seed)
    seed_everything(seed)
    world = current_world()
    if checked.adapter:
        configs = sized_for_adapter(configs, checked.adapter)
    runtime = build_runtime(configs, world)
    if checked.adapter:
        load_adapter(runtime, checked.adapter)
    examples = eval_examples(runtime.task, runtime.task.load("eval"), configs.eval.eval_position_swap)
    out_dir = Path(configs.mstep.output_dir) / "eval"
    if world.is_main:  # a failed re-run must not leave an earlier run's results looking like its own
        for stale in ("metrics.json", "predictions.jsonl", "report.md"):
            (out_dir / stale).unlink(missing_ok=True)
    results: dict[str, dict[str, Any]] = {}
    all_records: list[dict[str, Any]] = []
    for label, config in configs.eval_variants():
        proposal = build_proposal(config, runtime.backend)
        drawer = runtime.drawer(proposal)
        sub = out_dir / label.replace(":", "_")
        with EvalProgress(len(examples), f"eval {label}", world.is_main) as progress:
            results[label] = evaluate(
                task=runtime.task,
                examples=examples,
                drawer=drawer,
                proposal_name=label,
                num_samples=configs.eval.num_samples,
                seed=seed,
                chunk_size=config.generation_batch_size,
                world=world,
                out_dir=sub,
                progress=progress,
            )
        records = read_jsonl(sub / "predictions.jsonl") if world.is_main else []
        if configs.eval.temperature_scaling:
            scaled = calibrate(runtime, label, drawer, records, examples, sub, config.generation_batch_size, seed)
            results[label].update(scaled)
            if world.is_main:
                atomic_write_json(sub / "metrics.json", results[label])
        all_records += [{**r, "proposal": label} for r in records]
    if world.is_main:
        atomic_write_json(out_dir / "metrics.json", results)
        write_jsonl(out_dir / "predictions.jsonl", all_records)
        table = comparison_table(results)
        header = f"# fem eval: {configs.task.task}\n\nmodel: {configs.model.model_name_or_path}" + (
            f" + adapter {checked.adapter}" if checked.adapter else ""
        )
        header += f"\nexamples: {len(examples)}, samples per prompt: {configs.eval.num_samples}, seed: {seed}\n\n"
        atomic_write_text(out_dir / "report.md", header + table + "\n")
        print(table)
        print(f"\nfem eval: metrics, predictions and report in {out_dir}")
    return 0
