"""``fem sample``: run any proposal on a task's prompts and write one JSON line per trace."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from fem.configs import Configs
from fem.errors import ConfigError
from fem.estep.base import PLAIN
from fem.tasks.prompting import render_prompt
from fem.utils.distributed import current_world
from fem.utils.io import JsonlWriter
from fem.utils.logging import get_logger
from fem.utils.seeding import derive_seed, seed_everything

logger = get_logger(__name__)


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


def trace_record(example_id: str, sample_index: int, proposal: str, trace: Any) -> dict[str, Any]:
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


def sample_command(configs: Configs, *, split: str, out: str | None) -> int:
    """Draw ``num_samples`` traces per prompt of ``split`` with ``proposal`` and write them to ``out``."""
    from fem.models import resolve_model_source
    from fem.proposals import check_proposal_name
    from fem.runtime import build_runtime
    from fem.tasks import check_task_name, validate_task_data

    if split not in ("train", "eval"):
        raise ConfigError(f"unknown split '{split}'", field="split", fix="use --split train or --split eval")
    # only the split that is sampled is read (eval-only tasks such as math500 ship no train split)
    resolve_model_source(configs.model.model_name_or_path, configs.em.gguf_file)
    check_task_name(configs.task.task)
    check_proposal_name(configs.proposal.proposal)
    validate_task_data(configs.task, splits=(split,))
    seed = int(configs.mstep.seed)
    seed_everything(seed)
    world = current_world()
    runtime = build_runtime(configs, world)
    examples = runtime.task.load(split)
    proposal = runtime.proposal()
    path = Path(out or Path(configs.mstep.output_dir) / "samples.jsonl")
    if world.size > 1:
        path = path.with_suffix(f".rank{world.rank}.jsonl")
    chunk = configs.proposal.generation_batch_size
    start, tokens, count = time.perf_counter(), 0, 0
    with JsonlWriter(path) as writer:
        for c in range(world.rank, (len(examples) + chunk - 1) // chunk, world.size):
            batch = examples[c * chunk : (c + 1) * chunk]
            prompts = [render_prompt(runtime.tokenizer, runtime.messages(e, PLAIN)) for e in batch]
            traces = proposal.propose(prompts, configs.eval.num_samples, seed=derive_seed(seed, "sample", c))
            records = [
                trace_record(e.id, i, proposal.name, t) for e, ts in zip(batch, traces) for i, t in enumerate(ts)
            ]
            writer.write_many(records)
            tokens += sum(r["cost"]["tokens_decoded"] for r in records)
            count += len(records)
    wall = time.perf_counter() - start
    print(
        f"fem sample: {count} traces from {len(examples)} prompts with {proposal.name} -> {path} ({tokens} tokens decoded, {tokens / max(wall, 1e-9):.1f} tok/s)"
    )
    return 0
