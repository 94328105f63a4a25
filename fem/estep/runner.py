"""Run one E-step over the training examples: chunked, sharded across processes, persisted as it goes, resumable.

Examples are cut into fixed chunks; chunk ``c`` is drawn with a seed derived from (seed, round, c) by process
``c % world_size``. Each finished chunk appends its samples and then one progress line; on resume, chunks
without a progress line are redone from scratch (their partial samples are dropped), so a resumed E-step writes
exactly what an uninterrupted one would, with no sample lost or duplicated.

Pairwise tasks: ``targets`` sets the confidence each kept sample is trained to state (``fem.estep.confidence``),
chunk by chunk; ``balance_seed`` balances the kept samples across gold verdicts once every chunk is in (the main
process rewrites ``samples.jsonl`` and records what it dropped in ``estep_balance.json``; idempotent on resume).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from fem.drawing import HINTED, PLAIN, Drawer, Sample
from fem.estep.confidence import balance_records
from fem.estep.schemes import Scheme
from fem.tasks.base import Example
from fem.utils.distributed import World
from fem.utils.faults import crash_point
from fem.utils.io import JsonlWriter, atomic_write_json, read_json, read_jsonl, write_jsonl
from fem.utils.logging import get_logger
from fem.utils.seeding import derive_seed

logger = get_logger(__name__)

SAMPLES = "samples.jsonl"
PROGRESS = "estep_progress.jsonl"
BALANCE = "estep_balance.json"
Targets = Callable[[list[list[Sample]], int], None]  # (draws of a chunk, seed): set kept samples' confidence


def _restore(samples_path: Path, progress_path: Path) -> set[int]:
    """Chunks already finished; drops samples of unfinished chunks (a crash mid-chunk) from the samples file."""
    progress = read_jsonl(progress_path, repair=True)
    done = {int(p["chunk"]) for p in progress}
    samples = read_jsonl(samples_path, repair=True)
    keep = [s for s in samples if int(s["chunk"]) in done]
    if len(keep) != len(samples):
        logger.info("resume: dropping %d samples of unfinished chunks", len(samples) - len(keep))
        write_jsonl(samples_path, keep)
    return done


def run_estep(
    *,
    round_index: int,
    examples: Sequence[Example],
    scheme: Scheme,
    drawer: Drawer,
    proposal_name: str,
    round_dir: Path,
    chunk_size: int,
    seed: int,
    world: World,
    save_rejected: bool,
    progress_bar: Any = None,
    targets: Targets | None = None,
    balance_seed: int | None = None,
) -> dict[str, float]:
    """Draw, score and filter samples for ``examples``; returns the round's E-step metrics (on every rank)."""
    round_dir.mkdir(parents=True, exist_ok=True)
    samples_path = world.rank_file(round_dir / SAMPLES)
    progress_path = world.rank_file(round_dir / PROGRESS)
    done = _restore(samples_path, progress_path)
    mine = [(c, chunk) for c, chunk in world.chunks(examples, chunk_size) if c not in done]
    with JsonlWriter(samples_path) as samples_out, JsonlWriter(progress_path) as progress_out:
        for c, chunk in mine:
            start = time.perf_counter()
            draws = scheme.run(chunk, drawer, seed=derive_seed(seed, "estep", round_index, c))
            if targets is not None:
                targets(draws, derive_seed(seed, "confidence", round_index, c))
            records, stats = [], _chunk_stats(draws)
            for samples in draws:
                for s in samples:
                    if s.kept or save_rejected:
                        record = s.record(round_index=round_index, scheme=scheme.name, proposal=proposal_name)
                        records.append({**record, "chunk": c})
            samples_out.write_many(records)
            crash_point("estep.samples_written")
            progress_out.write({"chunk": c, "time_s": time.perf_counter() - start, **stats})
            crash_point("estep.chunk_done")
            if progress_bar is not None:
                progress_bar.update(len(chunk))
    # every rank's samples in chunk order (deterministic whatever the world size); rank files stay for resuming
    world.merge_rank_files(round_dir / SAMPLES, key=lambda s: (s["chunk"], s["example_id"], s["attempt"]))
    world.merge_rank_files(round_dir / PROGRESS, key=lambda p: p["chunk"])
    if balance_seed is not None and world.is_main:
        records, info = balance_records(read_jsonl(round_dir / SAMPLES), balance_seed)
        targets_kept = [r["target_confidence"] for r in records if r["kept"] and r["target_confidence"] is not None]
        if targets_kept:
            info["mean_target_confidence"] = sum(targets_kept) / len(targets_kept)
        write_jsonl(round_dir / SAMPLES, records)
        atomic_write_json(round_dir / BALANCE, info)
    world.barrier()
    return estep_metrics(round_dir, world.size, num_examples=len(examples))


def _chunk_stats(draws: list[list]) -> dict[str, Any]:
    stats: dict[str, Any] = defaultdict(float)
    stats["examples"] = len(draws)
    for samples in draws:
        stats["examples_kept"] += any(s.kept for s in samples)
        for s in samples:
            stats["draws"] += 1
            stats["kept"] += s.kept
            stats[f"draws_{s.origin}"] += 1
            stats[f"reward_sum_{s.origin}"] += s.reward
            stats[f"kept_{s.origin}"] += s.kept
            stats["tokens_decoded"] += s.trace.cost.tokens_decoded
            stats["tokens_reencoded"] += s.trace.cost.tokens_reencoded
            stats["unparsed"] += not s.prediction.parsed
            if s.kept and s.target_confidence is not None:
                stats["target_confidence_sum"] += s.target_confidence
                stats[f"kept_gold_{s.example.answer}"] += 1
            if s.reason:
                stats[f"rejected_{s.reason}"] += 1
    return dict(stats)


def estep_metrics(round_dir: Path, world_size: int, *, num_examples: int) -> dict[str, float]:
    """``estep/*`` metrics from the progress file of each of ``world_size`` ranks."""
    total: dict[str, float] = defaultdict(float)
    world = World(size=world_size)
    for rank in range(world_size):
        for p in read_jsonl(world.rank_file(round_dir / PROGRESS, rank)):
            for k, v in p.items():
                if k != "chunk":
                    total[k] += v
    n = max(num_examples, 1)
    out = {
        "estep/examples": num_examples,
        "estep/num_processes": world_size,
        "estep/acceptance_rate": total["examples_kept"] / n,
        "estep/kept_samples": total["kept"],
        "estep/samples_per_example": total["draws"] / n,
        "estep/tokens_decoded": total["tokens_decoded"],
        "estep/tokens_reencoded": total["tokens_reencoded"],
        "estep/unparsed_rate": total["unparsed"] / max(total["draws"], 1),
        "estep/time_s": total["time_s"],
    }
    for origin in (PLAIN, HINTED):
        if total[f"draws_{origin}"]:
            out[f"estep/reward_{origin}"] = total[f"reward_sum_{origin}"] / total[f"draws_{origin}"]
            out[f"estep/kept_{origin}"] = total[f"kept_{origin}"]
    for k, v in total.items():
        if k.startswith(("rejected_", "kept_gold_")):
            out[f"estep/{k}"] = v
    if total["target_confidence_sum"]:
        out["estep/mean_target_confidence"] = total["target_confidence_sum"] / max(total["kept"], 1)
    if (round_dir / BALANCE).is_file():  # counts after balancing (the progress lines hold those before)
        balance = read_json(round_dir / BALANCE)
        out["estep/balance_dropped"] = balance["dropped"]
        out["estep/kept_samples"] = total["kept"] - balance["dropped"]
        out.update({f"estep/kept_gold_{g}": n for g, n in balance["kept_by_gold"].items()})
        if "mean_target_confidence" in balance:
            out["estep/mean_target_confidence"] = balance["mean_target_confidence"]
    return out


def kept_samples(round_dir: Path) -> list[dict[str, Any]]:
    """The kept samples of a finished E-step, in file order."""
    return [s for s in read_jsonl(round_dir / SAMPLES) if s["kept"]]
