"""``fem sample``: run any proposal on a task's prompts and write one JSON line per trace."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from fem.drawing import PLAIN, render_prompt
from fem.errors import ConfigError
from fem.preflight import preflight
from fem.proposals.base import Trace
from fem.recipe import parse_configs
from fem.runtime import build_runtime
from fem.utils.distributed import current_world
from fem.utils.io import JsonlWriter
from fem.utils.seeding import derive_seed, seed_everything


def pop_option(argv: list[str], name: str, default: str | None = None) -> str | None:
    """Remove ``--name VALUE`` (or ``--name=VALUE``) from ``argv`` and return VALUE."""
    for i, arg in enumerate(argv):
        if arg == name:
            if i + 1 >= len(argv):
                raise ConfigError("needs a value", field=name.lstrip("-"), fix=f"write {name} VALUE")
            value = argv[i + 1]
            del argv[i : i + 2]
            return value
        if arg.startswith(name + "="):
            del argv[i]
            return arg.split("=", 1)[1]
    return default


def trace_record(example_id: str, sample_index: int, proposal: str, trace: Trace) -> dict[str, Any]:
    summary = trace.summary()
    return {
        "example_id": example_id,
        "sample_index": sample_index,
        "proposal": proposal,
        "text": trace.text,
        "num_tokens": trace.num_tokens,
        "sum_logp": summary["sum_logp"],
        "mean_logp": summary["mean_logp"],
        "finished": trace.finished,
        "mh_steps": trace.cost.mh_steps,
        "mh_accepts": trace.cost.mh_accepts,
        "cost": trace.cost.to_dict(),
        "info": trace.info,
    }


def main(argv: list[str]) -> int:
    """Draw ``num_samples`` traces per prompt of ``--split`` with ``proposal`` and write them to ``--out``."""
    argv = list(argv)
    split = pop_option(argv, "--split", "eval")
    out = pop_option(argv, "--out")
    configs = parse_configs(argv)
    if split not in ("train", "eval"):
        raise ConfigError(f"unknown split '{split}'", field="split", fix="use --split train or --split eval")
    preflight(configs, splits=(split,), proposals=[configs.proposal.proposal])
    seed = int(configs.mstep.seed)
    seed_everything(seed)
    world = current_world()
    runtime = build_runtime(configs, world)
    examples = runtime.task.load(split)
    order = {e.id: i for i, e in enumerate(examples)}
    proposal = runtime.proposal()
    path = Path(out or Path(configs.mstep.output_dir) / "samples.jsonl")
    start, tokens, count = time.perf_counter(), 0, 0
    with JsonlWriter(world.rank_file(path)) as writer:
        for c, batch in world.chunks(examples, configs.proposal.generation_batch_size):
            prompts = [render_prompt(runtime.tokenizer, runtime.messages(e, PLAIN)) for e in batch]
            traces = proposal.propose(prompts, configs.eval.num_samples, seed=derive_seed(seed, "sample", c))
            records = [
                trace_record(e.id, i, proposal.name, t) for e, ts in zip(batch, traces) for i, t in enumerate(ts)
            ]
            writer.write_many(records)
            tokens += sum(r["cost"]["tokens_decoded"] for r in records)
            count += len(records)
    world.merge_rank_files(path, key=lambda r: (order[r["example_id"]], r["sample_index"]), remove=True)
    wall = time.perf_counter() - start
    print(
        f"fem sample: {count} traces from {len(examples)} prompts with {proposal.name} -> {path} ({tokens} tokens decoded, {tokens / max(wall, 1e-9):.1f} tok/s)"
    )
    return 0
