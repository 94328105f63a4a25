"""Evaluation: draw with any proposal on the eval split, score with the task, compute metrics and cost.

Used between EM rounds and by ``fem eval``. Examples are sharded across processes; predictions are gathered on
the main process in example order.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fem.estep.base import PLAIN, ProposalDrawer
from fem.tasks.base import Example, Prediction, Task
from fem.utils.distributed import World
from fem.utils.io import atomic_write_json, atomic_write_text, read_jsonl
from fem.utils.seeding import derive_seed


def _line(record: dict[str, Any]) -> str:
    import json

    return json.dumps(record, sort_keys=True, default=str) + "\n"


def prediction_record(example_id: str, proposal: str, sample: Any) -> dict[str, Any]:
    pred: Prediction = sample.prediction
    return {
        "example_id": example_id,
        "proposal": proposal,
        "sample_index": sample.attempt,
        "completion": sample.trace.text,
        "extracted": pred.extracted,
        "reward": pred.reward,
        "confidence": pred.confidence,
        "info": pred.info,
        "trace": sample.trace.summary(),
    }


def _to_prediction(record: dict[str, Any]) -> Prediction:
    return Prediction(
        example_id=record["example_id"],
        completion=record["completion"],
        extracted=record["extracted"],
        reward=record["reward"],
        sample_index=record["sample_index"],
        confidence=record["confidence"],
        info=record.get("info") or {},
    )


def evaluate(
    *,
    task: Task,
    examples: Sequence[Example],
    drawer: ProposalDrawer,
    proposal_name: str,
    num_samples: int,
    seed: int,
    chunk_size: int,
    world: World,
    out_dir: Path,
    progress: Any = None,
) -> dict[str, Any]:
    """Evaluate and write ``out_dir/predictions.jsonl`` and ``out_dir/metrics.json``; returns the metrics
    (task metrics under ``eval/`` plus cost: tokens decoded, wall time, tokens/s)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    chunks = [list(examples[i : i + chunk_size]) for i in range(0, len(examples), chunk_size)]
    records: list[dict[str, Any]] = []
    for c in range(world.rank, len(chunks), world.size):
        draws = drawer.draw(chunks[c], PLAIN, num_samples, seed=derive_seed(seed, "eval", c))
        for example, samples in zip(chunks[c], draws):
            records += [{**prediction_record(example.id, proposal_name, s), "chunk": c} for s in samples]
        if progress is not None:
            progress(len(chunks[c]), records)
    shard = out_dir / (f"predictions.rank{world.rank}.jsonl" if world.size > 1 else "predictions.jsonl")
    atomic_write_text(shard, "".join(_line(r) for r in records))
    world.barrier()
    metrics: dict[str, Any] = {}
    if world.is_main:
        if world.size > 1:
            records = [r for rank in range(world.size) for r in read_jsonl(out_dir / f"predictions.rank{rank}.jsonl")]
            records.sort(key=lambda r: (r["chunk"], r["example_id"], r["sample_index"]))
            atomic_write_text(out_dir / "predictions.jsonl", "".join(_line(r) for r in records))
            for rank in range(world.size):
                (out_dir / f"predictions.rank{rank}.jsonl").unlink(missing_ok=True)
        metrics = summarize(task, examples, records, wall_s=time.perf_counter() - start, proposal_name=proposal_name)
        atomic_write_json(out_dir / "metrics.json", metrics)
    world.barrier()
    if not world.is_main:
        from fem.utils.io import read_json

        metrics = read_json(out_dir / "metrics.json")
    return metrics


def summarize(
    task: Task, examples: Sequence[Example], records: list[dict[str, Any]], *, wall_s: float, proposal_name: str
) -> dict[str, Any]:
    """Task metrics plus cost for a list of prediction records."""
    predictions = [_to_prediction(r) for r in records]
    task_metrics = task.metrics(predictions, list(examples))
    tokens = sum(r["trace"]["cost"]["tokens_decoded"] for r in records)
    out: dict[str, Any] = {f"eval/{k}": v for k, v in task_metrics.items()}
    out.update(
        {
            "eval/proposal": proposal_name,
            "eval/examples": len(examples),
            "eval/predictions": len(records),
            "eval/tokens_decoded": tokens,
            "eval/wall_s": wall_s,
            "eval/tokens_per_s": tokens / wall_s if wall_s > 0 else 0.0,
            "eval/mean_logp": sum(r["trace"]["mean_logp"] for r in records) / max(len(records), 1),
        }
    )
    return out
