"""``fem eval``: evaluate a base model, or base + LoRA adapter, with one or several proposals side by side on the
same prompts and seeds. Builds no trainer and no optimizer."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from fem.configs import Configs
from fem.errors import ConfigError
from fem.utils.io import atomic_write_json, atomic_write_text, read_json, read_jsonl
from fem.utils.logging import get_logger

logger = get_logger(__name__)

REPORT_KEYS = (
    "accuracy",
    "ece",
    "brier",
    "unparsed_rate",
    "pass@1",
    "maj@k",
    "tokens_decoded",
    "wall_s",
    "tokens_per_s",
    "mean_logp",
)


def resolve_adapter(path: str | None) -> str | None:
    """An adapter dir, or a training output dir (its last finished round's adapter)."""
    if not path:
        return None
    p = Path(path)
    if (p / "adapter_config.json").is_file():
        return str(p)
    if (p / "state.json").is_file():
        last = read_json(p / "state.json").get("last_adapter")
        # state.json records the path as the run saw it (relative to its working dir); also try it under p
        for candidate in [Path(last), p / Path(last).parent.name / "adapter"] if last else []:
            if (candidate / "adapter_config.json").is_file():
                return str(candidate)
        raise ConfigError(
            f"{p} holds a training run with no finished adapter yet",
            field="adapter",
            fix="finish a round first or name an adapter dir",
        )
    raise ConfigError(
        f"{p} is neither a LoRA adapter dir nor a fem training dir",
        field="adapter",
        fix="point --adapter to round_K/adapter or to a training output_dir",
    )


def proposal_variants(configs: Configs) -> list[tuple[str, Any]]:
    """``(label, ProposalConfig)`` per requested proposal. ``power_mh:uniform`` / ``power_mh:entropy`` pick the cut.

    Without ``proposals`` the evaluation proposal is used (``eval_proposal``, default ancestral), as between EM
    rounds, so ``fem eval --adapter RUN_DIR`` reproduces the last round's eval. Every variant draws at
    ``eval_temperature`` and ``eval_max_new_tokens`` (the proposals of power_mh and power_smc run at ``1/alpha``
    whatever it is)."""
    names = configs.eval.proposal_list or [configs.eval.eval_proposal or "ancestral"]
    variants = []
    for label in names:
        name, _, cut = label.partition(":")
        config = dataclasses.replace(configs.proposal, proposal=name, temperature=configs.eval.eval_temperature)
        if configs.eval.eval_max_new_tokens is not None:
            config = dataclasses.replace(config, max_new_tokens=configs.eval.eval_max_new_tokens)
        if cut:
            if name != "power_mh" or cut not in ("uniform", "entropy"):
                raise ConfigError(
                    f"'{label}' is not a proposal variant",
                    field="proposals",
                    fix="use e.g. ancestral,power_mh:uniform,power_mh:entropy",
                )
            config = dataclasses.replace(config, power_cut=cut)
        variants.append((label, config))
    if len({label for label, _ in variants}) != len(variants):
        raise ConfigError("names a proposal twice", field="proposals", fix="list each proposal once")
    return variants


def validate_eval(configs: Configs, variants: list[tuple[str, Any]]) -> dict[str, Any]:
    """Every check ``fem eval`` can do without a model; only the eval split is read (eval-only tasks such as
    math500 or gpqa ship no train split). Returns the plan ``--dry_run`` prints."""
    from fem.models import resolve_model_source
    from fem.proposals import check_proposal_name
    from fem.tasks import check_task_name, validate_task_data

    source = resolve_model_source(configs.model.model_name_or_path, configs.em.gguf_file)
    check_task_name(configs.task.task)
    for _, config in variants:
        check_proposal_name(config.proposal)
    data = validate_task_data(configs.task, splits=("eval",))
    adapter = resolve_adapter(configs.eval.adapter)
    p = configs.proposal
    return {
        "model": f"{configs.model.model_name_or_path} -> {source[0]}" + (f" [{source[1]}]" if source[1] else ""),
        "adapter": adapter or "none",
        "task": f"{configs.task.task} (answer_mode={configs.eval.eval_answer_mode or configs.task.answer_mode})",
        "data": f"eval={data['eval']}",
        "proposals": ", ".join(label for label, _ in variants),
        "settings": f"temperature={configs.eval.eval_temperature}, T={configs.eval.eval_max_new_tokens or p.max_new_tokens}, alpha={p.power_alpha}, "
        f"B={p.block_size}, N={p.power_mh_steps}, beta={p.power_beta}, samples/prompt={configs.eval.num_samples}"
        + (f", smc_particles={p.smc_particles}" if any(c.proposal == "power_smc" for _, c in variants) else ""),
        "output_dir": str(Path(configs.mstep.output_dir) / "eval"),
    }


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


def world_is_main() -> bool:
    from fem.utils.logging import is_main_process

    return is_main_process()


def evaluate_command(configs: Configs) -> int:
    from fem.eval.evaluate import EvalProgress, eval_examples, evaluate
    from fem.proposals import build_proposal
    from fem.runtime import build_runtime
    from fem.utils.distributed import current_world
    from fem.utils.seeding import seed_everything

    variants = proposal_variants(configs)
    plan = validate_eval(configs, variants)
    if configs.em.dry_run:
        if world_is_main():
            print("fem eval plan (dry run: no model loaded)")
            for key, value in plan.items():
                print(f"  {key:<11} {value}")
        return 0
    adapter = None if plan["adapter"] == "none" else plan["adapter"]
    seed = int(configs.mstep.seed)
    seed_everything(seed)
    world = current_world()
    runtime = build_runtime(configs, world)
    if adapter:
        try:
            runtime.backend.load_adapter(adapter)
        except (OSError, ValueError, RuntimeError, KeyError) as e:  # wrong base model, torn files, ...
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise ConfigError(
                f"cannot load adapter {adapter} onto {configs.model.model_name_or_path}: {first}",
                field="adapter",
                fix="use an adapter trained from this model_name_or_path",
            ) from None
    examples = eval_examples(runtime.task, runtime.task.load("eval"), configs.eval.eval_position_swap)
    out_dir = Path(configs.mstep.output_dir) / "eval"
    if world.is_main:  # a failed re-run must not leave an earlier run's results looking like its own
        for stale in ("metrics.json", "predictions.jsonl", "report.md"):
            (out_dir / stale).unlink(missing_ok=True)
    results: dict[str, dict[str, Any]] = {}
    all_records: list[dict[str, Any]] = []
    for label, config in variants:
        proposal = build_proposal(config, runtime.backend, name=config.proposal)
        sub = out_dir / label.replace(":", "_")
        with EvalProgress(len(examples), f"eval {label}", world.is_main) as progress:
            results[label] = evaluate(
                task=runtime.task,
                examples=examples,
                drawer=runtime.drawer(proposal),
                proposal_name=label,
                num_samples=configs.eval.num_samples,
                seed=seed,
                chunk_size=config.generation_batch_size,
                world=world,
                out_dir=sub,
                progress=progress,
            )
        if world.is_main:
            all_records += [{**r, "proposal": label} for r in read_jsonl(sub / "predictions.jsonl")]
    if world.is_main:
        import json

        atomic_write_json(out_dir / "metrics.json", results)
        atomic_write_text(
            out_dir / "predictions.jsonl",
            "".join(json.dumps(r, sort_keys=True, default=str) + "\n" for r in all_records),
        )
        table = comparison_table(results)
        header = f"# fem eval: {configs.task.task}\n\nmodel: {configs.model.model_name_or_path}" + (
            f" + adapter {adapter}" if adapter else ""
        )
        header += f"\nexamples: {len(examples)}, samples per prompt: {configs.eval.num_samples}, seed: {seed}\n\n"
        atomic_write_text(out_dir / "report.md", header + table + "\n")
        print(table)
        print(f"\nfem eval: metrics, predictions and report in {out_dir}")
    return 0
