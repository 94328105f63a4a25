"""Run one E-step over the training examples: chunked, sharded across processes, persisted as it goes, resumable.

Examples are cut into fixed chunks; chunk ``c`` is drawn with a seed derived from (seed, round, c) by process
``c % world_size``. Each finished chunk appends its samples and then one progress line; on resume, chunks
without a progress line are redone from scratch (their partial samples are dropped), so a resumed E-step writes
exactly what an uninterrupted one would, with no sample lost or duplicated. Each progress line records its chunk's
sample count and digest: a chunk whose samples were damaged later (a bad line in the middle of the file) is drawn
again rather than silently trained on with records missing, and ``check_samples`` repeats that check before the
M-step reads a finished E-step.

Pairwise tasks: ``targets`` sets the confidence each kept sample is trained to state (``fem.estep.confidence``),
chunk by chunk; ``balance_seed`` balances the kept samples across gold verdicts once every chunk is in: the main
process records the samples it drops in ``estep_balance.json`` (``samples.jsonl`` stays what the E-step drew, so
its digests hold) and ``kept_samples`` leaves them out; idempotent on resume.
"""

from __future__ import annotations

import hashlib
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fem.drawing import HINTED, PLAIN, Drawer, Sample
from fem.estep.confidence import balance_records
from fem.estep.schemes import Scheme
from fem.tasks.base import Example
from fem.utils.distributed import World
from fem.utils.faults import crash_point
from fem.utils.io import (
    JsonlWriter,
    atomic_write_json,
    atomic_write_text,
    json_line,
    read_json,
    read_jsonl,
    scan_jsonl,
)
from fem.utils.logging import get_logger
from fem.utils.seeding import derive_seed

logger = get_logger(__name__)

SAMPLES = "samples.jsonl"
PROGRESS = "estep_progress.jsonl"
BALANCE = "estep_balance.json"
Targets = Callable[[list[list[Sample]], int], None]  # (draws of a chunk, seed): set kept samples' confidence


def chunk_digest(lines: Iterable[bytes]) -> str:
    """sha256 of a chunk's sample lines, whatever their order (merging rank files sorts the lines of a chunk)."""
    return hashlib.sha256(b"".join(sorted(lines))).hexdigest()[:16]


@dataclass
class Audit:
    """A samples file checked against its progress file: the chunks whose samples are exactly what their progress
    line recorded (count and digest), their progress lines and samples, and what is wrong with the rest."""

    intact: set[int] = field(default_factory=set)
    progress: list[bytes] = field(default_factory=list)  # the raw lines of the intact chunks
    samples: list[bytes] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    unfinished: int = 0  # samples of chunks with no progress line (a crash mid-chunk: not a problem)
    torn: bool = False  # either file ends in a torn line (a crash mid-append: not a problem)


def audit(samples_path: Path, progress_path: Path) -> Audit:
    """Check every chunk's samples against its progress line. A damaged line of either file, or a chunk whose
    samples differ from what was recorded, leaves that chunk out of ``intact`` and is described in ``problems``;
    only a torn last line (a crash mid-append) is expected and not a problem."""
    progress_scan, samples_scan = scan_jsonl(progress_path), scan_jsonl(samples_path)
    result = Audit(torn=progress_scan.torn or samples_scan.torn)
    result.problems += [f"{progress_path} line {n} is damaged" for n in progress_scan.damaged]
    result.problems += [f"{samples_path} line {n} is damaged" for n in samples_scan.damaged]
    lines: dict[int, list[bytes]] = defaultdict(list)
    for record, raw, n in zip(samples_scan.records, samples_scan.raw, samples_scan.line_numbers):
        if isinstance(record.get("chunk"), int):
            lines[record["chunk"]].append(raw)
        else:
            result.problems.append(f"{samples_path} line {n} names no chunk")
    recorded = {
        p["chunk"]: (p, raw)
        for p, raw in zip(progress_scan.records, progress_scan.raw)
        if isinstance(p.get("chunk"), int)
    }
    for c, (p, raw) in sorted(recorded.items()):
        count, digest = p.get("records"), p.get("digest")
        got = lines.get(c, [])
        if (count is not None and len(got) != count) or (digest is not None and chunk_digest(got) != digest):
            result.problems.append(
                f"{samples_path}: chunk {c} holds {len(got)} sample lines that differ from the {count} recorded"
            )
        else:
            result.intact.add(c)
            result.progress.append(raw)
    result.unfinished = sum(len(v) for c, v in lines.items() if c not in recorded)
    result.samples = [raw for s, raw in zip(samples_scan.records, samples_scan.raw) if s.get("chunk") in result.intact]
    return result


def _restore(samples_path: Path, progress_path: Path) -> set[int]:
    """The chunks already finished and intact. Samples of unfinished chunks (a crash mid-chunk) are dropped; a
    chunk whose samples were damaged after they were written is dropped too, and so drawn again (same seed, same
    samples). Both files are rewritten atomically when anything is dropped."""
    found = audit(samples_path, progress_path)
    for problem in found.problems:
        logger.warning("resume: %s; that chunk is drawn again", problem)
    if found.unfinished:
        logger.info("resume: dropping %d samples of unfinished chunks", found.unfinished)
    if found.problems or found.unfinished or found.torn:  # keep the intact lines byte for byte
        atomic_write_text(samples_path, b"".join(found.samples).decode())
        atomic_write_text(progress_path, b"".join(found.progress).decode())
    return found.intact


def _sort_by_chunk(path: Path) -> None:
    """Rewrite ``path`` with its lines in chunk order (stable), if they are not already."""
    scan = scan_jsonl(path)
    chunks = [r["chunk"] for r in scan.records]
    if chunks != sorted(chunks):
        order = sorted(range(len(chunks)), key=lambda i: chunks[i])
        atomic_write_text(path, b"".join(scan.raw[i] for i in order).decode())


def check_samples(round_dir: Path, num_chunks: int) -> list[str]:
    """Before the M-step: do the samples on disk equal the samples the finished E-step recorded? Returns what is
    wrong (nothing when every chunk ``0 .. num_chunks - 1`` has a progress line and exactly its samples)."""
    found = audit(round_dir / SAMPLES, round_dir / PROGRESS)
    problems = list(found.problems)
    missing = sorted(set(range(num_chunks)) - found.intact)
    if missing and not problems:
        problems.append(f"{round_dir / PROGRESS} lacks chunks {missing}")
    if found.unfinished:
        problems.append(f"{round_dir / SAMPLES} holds {found.unfinished} samples of chunks with no progress line")
    return problems


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
            lines = [json_line(r) for r in records]
            samples_out.write_lines(lines)
            crash_point("estep.samples_written")
            digest = chunk_digest(line.encode() for line in lines)
            progress_out.write(
                {"chunk": c, "records": len(records), "digest": digest, "time_s": time.perf_counter() - start, **stats}
            )
            crash_point("estep.chunk_done")
            if progress_bar is not None:
                progress_bar.update(len(chunk))
    if world.size == 1 and done:  # a chunk drawn again (it was damaged) goes back to its place in chunk order
        _sort_by_chunk(samples_path)
        _sort_by_chunk(progress_path)
    # every rank's samples in chunk order (deterministic whatever the world size); rank files stay for resuming
    world.merge_rank_files(round_dir / SAMPLES, key=lambda s: (s["chunk"], s["example_id"], s["attempt"]))
    world.merge_rank_files(round_dir / PROGRESS, key=lambda p: p["chunk"])
    if balance_seed is not None and world.is_main:
        records, info = balance_records(read_jsonl(round_dir / SAMPLES), balance_seed)
        targets_kept = [r["target_confidence"] for r in records if r["kept"] and r["target_confidence"] is not None]
        if targets_kept:
            info["mean_target_confidence"] = sum(targets_kept) / len(targets_kept)
        info["dropped_samples"] = [[r["example_id"], r["attempt"]] for r in records if r.get("reason") == "balance"]
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
                if k not in ("chunk", "records", "digest"):
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
    """The kept samples of a finished E-step, in file order, less those its balancing dropped (a damaged line
    raises ``DamagedFileError``)."""
    dropped: set[tuple[str, int]] = set()
    if (round_dir / BALANCE).is_file():
        dropped = {(i, a) for i, a in read_json(round_dir / BALANCE)["dropped_samples"]}
    return [s for s in read_jsonl(round_dir / SAMPLES) if s["kept"] and (s["example_id"], s["attempt"]) not in dropped]
