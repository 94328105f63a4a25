"""``fem sample``: run any proposal on a task's prompts and write one JSON line per trace to ``--out`` (atomically;
an existing file only with ``--overwrite``)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from fem.drawing import PLAIN, render_prompt
from fem.errors import ConfigError
from fem.preflight import preflight
from fem.proposals.base import Trace
from fem.recipe import parse_configs
from fem.run_configs import Configs
from fem.rundir import check_dir_path, holds_fem_run
from fem.runtime import build_runtime
from fem.utils.distributed import current_world, is_main_process
from fem.utils.io import write_jsonl
from fem.utils.lock import RunLock
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


def pop_flag(argv: list[str], name: str) -> bool:
    """Remove the flag ``--name`` from ``argv``; was it there?"""
    found = name in argv
    argv[:] = [a for a in argv if a != name]
    return found


def check_out_path(path: Path, overwrite: bool) -> None:
    """``--out`` must name a file that can be written: not a directory, not under a file, and not an existing file
    unless ``--overwrite`` (a recipe or an earlier run's traces are never appended to or replaced by accident)."""
    if path.is_dir():
        raise ConfigError(f"{path} is a directory", field="out", fix="name a file, e.g. --out traces.jsonl")
    if path.exists() and not overwrite:
        raise ConfigError(
            f"{path} already exists", field="out", fix="choose a new file, or pass --overwrite to replace it"
        )
    check_dir_path(path.parent, "out")


def main(argv: list[str]) -> int:
    """Draw ``num_samples`` traces per prompt of ``--split`` with ``proposal`` and write them to ``--out``
    atomically (the file appears complete or not at all), holding the run lock of the dir when it writes into the
    output dir or into a fem run dir."""
    argv = list(argv)
    split = pop_option(argv, "--split", "eval")
    out = pop_option(argv, "--out")
    overwrite = pop_flag(argv, "--overwrite")
    configs = parse_configs(argv)
    if split not in ("train", "eval"):
        raise ConfigError(f"unknown split '{split}'", field="split", fix="use --split train or --split eval")
    preflight(configs, splits=(split,), proposals=[configs.proposal.proposal])
    path = Path(out or Path(configs.mstep.output_dir) / "samples.jsonl")
    check_out_path(path, overwrite)
    lock_dir = path.parent if out is None or holds_fem_run(path.parent) else None
    with RunLock.hold(lock_dir or path.parent, "fem sample", take=lock_dir is not None and is_main_process()):
        if lock_dir is not None:
            check_out_path(path, overwrite)  # again, now that no other fem process writes there
        return draw_traces(configs, split, path)


def draw_traces(configs: Configs, split: str, path: Path) -> int:
    seed = int(configs.mstep.seed)
    seed_everything(seed)
    world = current_world()
    runtime = build_runtime(configs, world)
    examples = runtime.task.load(split)
    order = {e.id: i for i, e in enumerate(examples)}
    proposal = runtime.proposal()
    start, tokens = time.perf_counter(), 0
    records: list[dict[str, Any]] = []
    for c, batch in world.chunks(examples, configs.proposal.generation_batch_size):
        prompts = [render_prompt(runtime.tokenizer, runtime.messages(e, PLAIN)) for e in batch]
        traces = proposal.propose(prompts, configs.eval.num_samples, seed=derive_seed(seed, "sample", c))
        records += [trace_record(e.id, i, proposal.name, t) for e, ts in zip(batch, traces) for i, t in enumerate(ts)]
    tokens = sum(r["cost"]["tokens_decoded"] for r in records)
    if world.size == 1:
        write_jsonl(path, sorted(records, key=lambda r: (order[r["example_id"]], r["sample_index"])))
    else:  # each rank's part, then the main process writes the whole file at once
        write_jsonl(world.rank_file(path), records)
        world.merge_rank_files(path, key=lambda r: (order[r["example_id"]], r["sample_index"]), remove=True)
    wall = time.perf_counter() - start
    print(
        f"fem sample: {len(records)} traces from {len(examples)} prompts with {proposal.name} -> {path} ({tokens} tokens decoded, {tokens / max(wall, 1e-9):.1f} tok/s)"
    )
    return 0
