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
        if last and (Path(last) / "adapter_config.json").is_file():
            return last
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
    """``(label, ProposalConfig)`` per requested proposal. ``power_mh:uniform`` / ``power_mh:entropy`` pick the cut."""
    names = configs.eval.proposal_list or [configs.proposal.proposal]
    variants = []
    for label in names:
        name, _, cut = label.partition(":")
        config = dataclasses.replace(configs.proposal, proposal=name)
        if cut:
            if name != "power_mh" or cut not in ("uniform", "entropy"):
                raise ConfigError(
                    f"'{label}' is not a proposal variant",
                    field="proposals",
                    fix="use e.g. ancestral,power_mh:uniform,power_mh:entropy",
                )
            config = dataclasses.replace(config, power_cut=cut)
        variants.append((label, config))
    return variants


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


def evaluate_command(configs: Configs) -> int:
    from tqdm.auto import tqdm

    from fem.eval.evaluate import evaluate
    from fem.proposals import build_proposal, check_proposal_name
    from fem.runtime import build_runtime
    from fem.train import validate_before_compute
    from fem.utils.distributed import current_world
    from fem.utils.seeding import seed_everything

    variants = proposal_variants(configs)
    for _, config in variants:
        check_proposal_name(config.proposal)
    validate_before_compute(configs, check_output=False)
    adapter = resolve_adapter(configs.eval.adapter)
    seed = int(configs.mstep.seed)
    seed_everything(seed)
    world = current_world()
    runtime = build_runtime(configs, world)
    if adapter:
        runtime.backend.load_adapter(adapter)
    examples = runtime.task.load("eval")
    out_dir = Path(configs.mstep.output_dir) / "eval"
    results: dict[str, dict[str, Any]] = {}
    all_records: list[dict[str, Any]] = []
    for label, config in variants:
        proposal = build_proposal(config, runtime.backend, name=config.proposal)
        bar = tqdm(total=len(examples), desc=f"eval {label}", disable=not world.is_main)

        def progress(n: int, records: list[dict[str, Any]], bar=bar) -> None:
            tokens = sum(r["trace"]["cost"]["tokens_decoded"] for r in records)
            bar.update(n)
            bar.set_postfix(
                tok_s=f"{tokens / max(bar.format_dict['elapsed'], 1e-9):.0f}",
                reward=f"{sum(r['reward'] for r in records) / max(len(records), 1):.3f}",
            )

        sub = out_dir / label.replace(":", "_")
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
        bar.close()
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
