"""Evaluation: draw with any proposal on the eval split, score with the task, compute metrics and cost.

Used between EM rounds and by ``fem eval``. Examples are sharded across processes; predictions are gathered on
the main process in example order.
"""

from __future__ import annotations

import errno
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from fem.drawing import PLAIN, ProposalDrawer, Sample
from fem.errors import FemError
from fem.tasks.base import Example, Prediction, Task
from fem.utils.distributed import World
from fem.utils.io import atomic_write_json, atomic_write_text, read_json, read_jsonl, write_jsonl
from fem.utils.seeding import derive_seed


def eval_examples(task: Task, examples: list[Example], position_swap: bool) -> list[Example]:
    """The examples to evaluate: pairwise tasks add each pair with its candidates swapped when asked."""
    return task.with_swaps(examples) if position_swap else examples


class EvalProgress:
    """A progress bar over prompts showing tokens/s and the running mean reward (main process only)."""

    def __init__(self, total: int, desc: str, enabled: bool = True):
        self.bar = tqdm(total=total, desc=desc, disable=not enabled)

    def __call__(self, n: int, records: list[dict[str, Any]]) -> None:
        tokens = sum(r["trace"]["cost"]["tokens_decoded"] for r in records)
        self.bar.update(n)
        self.bar.set_postfix(
            tok_s=f"{tokens / max(self.bar.format_dict['elapsed'], 1e-9):.0f}",
            reward=f"{sum(r['reward'] for r in records) / max(len(records), 1):.3f}",
        )

    def __enter__(self) -> EvalProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.close()  # before any error line, so that the error is the last line on stderr


def prediction_record(example_id: str, proposal: str, sample: Sample) -> dict[str, Any]:
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


def to_prediction(record: dict[str, Any]) -> Prediction:
    """The ``Prediction`` of one line of ``predictions.jsonl``."""
    return Prediction(
        example_id=record["example_id"],
        completion=record["completion"],
        extracted=record["extracted"],
        reward=record["reward"],
        sample_index=record["sample_index"],
        confidence=record["confidence"],
        info=record.get("info") or {},
    )


class EvalError(FemError):
    """Drawing or scoring an eval chunk failed, or a proposal returned the wrong number of traces: the eval stops
    (no metrics are written) rather than report numbers over fewer rows than it was given."""


def _draw_chunk(
    drawer: ProposalDrawer,
    chunk: list[Example],
    num_samples: int,
    seed: int,
    c: int,
    proposal_name: str,
    out_dir: Path,
) -> list[list[Any]]:
    """``drawer.draw`` for eval chunk ``c`` (which checks every example gets ``num_samples`` traces). Any other
    exception from the proposal or the task (user code included) becomes one ``EvalError`` line; its traceback
    goes to ``out_dir/error.txt``."""
    span = f"eval chunk {c} ({chunk[0].id} .. {chunk[-1].id})" if chunk else f"eval chunk {c}"
    try:
        draws = drawer.draw(chunk, PLAIN, num_samples, seed=derive_seed(seed, "eval", c))
    except FemError:
        raise
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
            raise  # a full disk: the CLI's own one-line error
        raise _failed(exc, proposal_name, span, out_dir) from exc
    except Exception as exc:
        raise _failed(exc, proposal_name, span, out_dir) from exc
    return draws


def _failed(exc: BaseException, proposal_name: str, span: str, out_dir: Path) -> EvalError:
    where = out_dir / "error.txt"
    try:
        atomic_write_text(where, "".join(traceback.format_exception(exc)))
        see = f"; traceback in {where}"
    except OSError:
        see = ""
    first = (str(exc).strip().splitlines() or [""])[0][:200]
    return EvalError(
        f"proposal '{proposal_name}' failed on {span}: {type(exc).__name__}: {first}; no metrics written",
        field="proposal",
        fix=f"fix the proposal (or the task code it calls){see}, then run the same command again",
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
    if world.is_main:  # a failed re-run must not leave an earlier run's results looking like its own
        for stale in ("metrics.json", "error.txt"):
            (out_dir / stale).unlink(missing_ok=True)
    start = time.perf_counter()
    records: list[dict[str, Any]] = []
    for c, chunk in world.chunks(examples, chunk_size):
        draws = _draw_chunk(drawer, chunk, num_samples, seed, c, proposal_name, out_dir)
        for example, samples in zip(chunk, draws):
            records += [{**prediction_record(example.id, proposal_name, s), "chunk": c} for s in samples]
        if progress is not None:
            progress(len(chunk), records)
    path = out_dir / "predictions.jsonl"
    write_jsonl(world.rank_file(path), records)
    world.merge_rank_files(path, key=lambda r: (r["chunk"], r["example_id"], r["sample_index"]), remove=True)
    if world.is_main:
        records = read_jsonl(path) if world.size > 1 else records
        metrics = summarize(task, examples, records, wall_s=time.perf_counter() - start, proposal_name=proposal_name)
        atomic_write_json(out_dir / "metrics.json", metrics)
    world.barrier()
    return metrics if world.is_main else read_json(out_dir / "metrics.json")


def summarize(
    task: Task, examples: Sequence[Example], records: list[dict[str, Any]], *, wall_s: float, proposal_name: str
) -> dict[str, Any]:
    """Task metrics plus cost for a list of prediction records."""
    predictions = [to_prediction(r) for r in records]
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
