"""Base-model statistics from inside vLLM: a V1 logits processor that reads the raw logits of tracked requests.

vLLM returns log-probabilities in one ``logprobs_mode`` per engine; fem needs two kinds per token (``logp`` under the
base model, ``logq`` under the sampling parameters) plus the base entropy, which no ``logprobs_mode`` gives. The
engine therefore runs in ``processed_logprobs`` mode (the sampled token's ``logq`` comes from the sampler itself) and
carries this processor, which the sampler calls on the float32 logits *before* temperature, top-k and top-p (it
declares itself not argmax-invariant, so it runs in ``Sampler.apply_logits_processors``, ahead of
``Sampler.sample``). It never changes the logits.

A request opts in with ``SamplingParams.extra_args[EXTRA_ARGS_KEY] = {"key": ..., "row": bool, "force": ids|None}``.
At each step the tracker
takes, for every tracked row, the log-normaliser and the entropy of the raw logits (the base next-token distribution
at position ``pos = len(output so far)``, temperature 1, the whole vocabulary; ``base_statistics``). The sampled token
at ``pos`` is known one step later through the request's live output list (vLLM hands logits processors a reference
to it), so the row waits until then (its log p is ``logit - lse``): at most one pending ``[vocab]`` row per request. ``keep_row`` requests (the forced read-out: one token, full distribution)
keep their first row for the caller. ``force`` requests (teacher forcing, for ``score``) are greedy requests whose
logits the tracker replaces, *after* reading them, by a one-hot on the given token of that position, so the engine
decodes exactly the given continuation from the prefix cache and the tracker reads its base statistics.

The tracker lives in the worker that samples (the caller's process when the engine runs in-process). The backend
reaches it by ``LLM.collective_rpc("fem_collect_stats", ...)`` (``vllm_worker.FemWorkerExtension``) either way: one
code path.

Requires vLLM's synchronous scheduler (``async_scheduling=False``): with asynchronous scheduling the live output list
holds placeholder ids while a step is in flight, and positions would be misread.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor, MoveDirectionality

EXTRA_ARGS_KEY = "fem_stats"


@dataclass
class _Record:
    """One tracked request: its live output list and the statistics resolved so far (position-indexed)."""

    output_ids: list[int]
    keep_row: bool
    force: list[int] | None = None
    logp: list[float] = field(default_factory=list)
    entropy: list[float] = field(default_factory=list)
    pending: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)  # pos -> (raw row, lse)
    row: torch.Tensor | None = None
    sent: int = 0


class StatsTracker(LogitsProcessor):
    """Records base ``log p`` of each sampled token and the base entropy at each position of tracked requests."""

    @classmethod
    def validate_params(cls, sampling_params) -> None:
        value = (sampling_params.extra_args or {}).get(EXTRA_ARGS_KEY)
        if value is None:
            return
        if not isinstance(value, dict) or not isinstance(value.get("key"), str):
            raise ValueError(f"extra_args[{EXTRA_ARGS_KEY!r}] must be {{'key': str, 'row': bool, 'force': ids}}")
        if sampling_params.allowed_token_ids or sampling_params.logit_bias:
            raise ValueError("a tracked request cannot mask or bias logits (its statistics would not be the model's)")
        if value.get("force") is not None and sampling_params.temperature != 0:
            raise ValueError("a teacher-forced request must be greedy")

    def __init__(self, vllm_config: Any, device: torch.device, is_pin_memory: bool) -> None:
        self.key_at: dict[int, str] = {}  # persistent-batch index -> key of the tracked request there
        self.records: dict[str, _Record] = {}

    def is_argmax_invariant(self) -> bool:
        return False  # so that vLLM applies it before temperature, top-k and top-p (and to greedy requests)

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        if batch_update is None:
            return
        for index in batch_update.removed:
            self.key_at.pop(index, None)
        for index, params, _prompt, output_ids in batch_update.added:
            value = (params.extra_args or {}).get(EXTRA_ARGS_KEY)
            if value is None:
                self.key_at.pop(index, None)
                continue
            key = value["key"]
            self.key_at[index] = key
            record = self.records.get(key)
            if record is None:
                force = value.get("force")
                self.records[key] = _Record(
                    output_ids=output_ids, keep_row=bool(value.get("row")), force=list(force) if force else None
                )
            else:  # re-added after a preemption: the output list object may be a new one
                record.output_ids = output_ids
        for a, b, direction in batch_update.moved:
            key_a, key_b = self.key_at.pop(a, None), self.key_at.pop(b, None)
            if key_a is not None:
                self.key_at[b] = key_a
            if direction == MoveDirectionality.SWAP and key_b is not None:
                self.key_at[a] = key_b

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        if not self.key_at:
            return logits
        indices = sorted(i for i, key in self.key_at.items() if key in self.records)
        if not indices:
            return logits
        rows, lse, entropy = base_statistics(logits[torch.tensor(indices, dtype=torch.long, device=logits.device)])
        for j, index in enumerate(indices):
            record = self.records[self.key_at[index]]
            _resolve(record)
            pos = len(record.output_ids)
            if pos < len(record.entropy):  # the same position computed again (a recomputed prefill)
                record.entropy[pos] = entropy[j]
            elif pos == len(record.entropy):
                record.entropy.append(entropy[j])
            else:
                raise RuntimeError(f"statistics tracker lost positions of request {self.key_at[index]}")
            record.pending[pos] = (rows[j], lse[j])
            if record.keep_row and pos == 0:
                record.row = rows[j] - lse[j]
            if record.force is not None and pos < len(record.force):
                logits[index] = float("-inf")
                logits[index, record.force[pos]] = 0.0
        return logits

    def collect(self, keys: list[str], release: bool) -> dict[str, tuple[list[float], list[float], Any] | None]:
        """For each key: the (logp, entropy) of positions not returned before, and the kept row as float32 bytes
        (``row_tensor`` reads them; bytes cross vLLM's process boundary, a tensor does not) or None. ``release``
        forgets the keys (their requests are finished or aborted)."""
        out: dict[str, tuple[list[float], list[float], Any] | None] = {}
        for key in keys:
            record = self.records.get(key)
            if record is None:
                out[key] = None
                continue
            _resolve(record)
            done = min(len(record.logp), len(record.entropy))
            row = None if record.row is None else record.row.float().cpu().numpy().tobytes()
            out[key] = (record.logp[record.sent : done], record.entropy[record.sent : done], row)
            record.sent = done
            record.row = None
            if release:
                del self.records[key]
        return out


def row_tensor(data: bytes) -> torch.Tensor:
    """A kept row as ``collect`` sends it, back as a float32 tensor."""
    return torch.frombuffer(bytearray(data), dtype=torch.float32)


def base_statistics(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[float]]:
    """Raw float32 logits rows, their log-normaliser and the entropy of each row's distribution, in three passes over
    the vocabulary (no log-softmax materialised: a token's log p is ``row[token] - lse``, read when it is known).
    ``H = lse - sum_v p_v z_v``; rows holding -inf logits take the guarded ``-sum p log p`` instead."""
    rows = logits.float()
    lse = torch.logsumexp(rows, dim=-1)
    p = torch.exp(rows - lse[:, None])
    entropy = lse - (p * rows).sum(-1)
    bad = torch.isnan(entropy)
    if bool(bad.any()):
        logp = rows[bad] - lse[bad, None]
        entropy[bad] = -torch.where(p[bad] > 0, p[bad] * logp, torch.zeros_like(logp)).sum(-1)
    return rows, lse, entropy.tolist()


def _resolve(record: _Record) -> None:
    """Read the log p of every pending position whose token the engine has sampled since."""
    if not record.pending:
        return
    known = len(record.output_ids)
    for pos in sorted(record.pending):
        if pos >= known:
            break
        row, lse = record.pending.pop(pos)
        value = float(row[record.output_ids[pos]] - lse)
        if pos < len(record.logp):
            record.logp[pos] = value
        elif pos == len(record.logp):
            record.logp.append(value)
        else:
            raise RuntimeError("statistics tracker resolved positions out of order")


def find_tracker(worker: Any) -> StatsTracker:
    """The tracker of a vLLM worker (or of the wrapper ``collective_rpc`` hands to callables)."""
    inner = getattr(worker, "worker", None) or worker
    runner = getattr(inner, "model_runner", None)
    batch = getattr(runner, "input_batch", None)
    for proc in getattr(getattr(batch, "logitsprocs", None), "all", ()):
        if isinstance(proc, StatsTracker):
            return proc
    raise RuntimeError("the vLLM engine has no fem StatsTracker logits processor (it must be built by fem)")
