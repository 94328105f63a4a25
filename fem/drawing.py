"""Drawing: a task's prompt -> token ids -> proposal traces -> scored ``Sample``s, for the E-step, eval and sample.

``ProposalDrawer`` is the one drawer every scheme and the evaluation use; ``PLAIN``/``HINTED`` name which prompt a
rationale was drawn from. The drawer is handed its scoring (``fem.runtime`` wires it: a written answer is parsed
by the task, a forced one is read through the task's cue with the backend, ``fem.readout``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from transformers import PreTrainedTokenizerBase

from fem.errors import FemError
from fem.proposals.base import Proposal, Trace
from fem.tasks.answering import own_completion
from fem.tasks.base import Example, Messages, Prediction, Task
from fem.tasks.prompting import plain_text, with_system

PLAIN, HINTED = "plain", "hinted"


@dataclass
class Sample:
    """One draw for one example, scored, with provenance; ``kept`` says whether the M-step trains on it."""

    example: Example
    origin: str  # plain | hinted: which prompt the rationale was drawn from
    attempt: int
    trace: Trace
    prediction: Prediction
    completion: str  # what the M-step trains on, under the plain prompt: rationale + cue + gold answer
    kept: bool = False
    reason: str | None = None  # why it was not kept
    weight: float = 1.0
    own_completion: str | None = None  # the draw with its own answer (the target when kept without reward filter)
    own_target: bool = False  # kept without the reward filter and trained on ``own_completion``
    target_confidence: float | None = None  # the confidence the completion states, when the E-step set a target

    @property
    def reward(self) -> float:
        return self.prediction.reward

    def record(self, *, round_index: int, scheme: str, proposal: str) -> dict[str, Any]:
        """The JSON line written to ``round_K/samples.jsonl``."""
        return {
            "round": round_index,
            "example_id": self.example.id,
            "scheme": scheme,
            "origin": self.origin,
            "attempt": self.attempt,
            "proposal": proposal,
            "kept": self.kept,
            "reason": self.reason,
            "reward": self.reward,
            "weight": self.weight,
            "extracted": self.prediction.extracted,
            "confidence": self.prediction.confidence,
            "target_confidence": self.target_confidence,
            "gold": self.example.answer if isinstance(self.example.answer, str) else None,
            "rationale": self.trace.text,
            "completion": self.completion,
            "trace": self.trace.summary(),
        }


def render_prompt(tokenizer: Any, messages: Messages, system_prompt: str | None = None) -> list[int]:
    """Token ids of the prompt: the tokenizer's chat template with ``add_generation_prompt=True`` when it has one,
    otherwise the plain concatenation of the message contents. ``tokenizer`` may also be a generation backend or a
    test LM (anything with ``encode``), which has no chat template."""
    messages = with_system(messages, system_prompt)
    if not isinstance(tokenizer, PreTrainedTokenizerBase):
        return list(tokenizer.encode(plain_text(messages)))
    if tokenizer.chat_template:
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
        if isinstance(ids, Mapping):  # some tokenizers return a BatchEncoding regardless
            ids = ids["input_ids"]
        return [int(i) for i in ids]
    return list(tokenizer(plain_text(messages), add_special_tokens=True)["input_ids"])


class Drawer(Protocol):
    """Draws ``n`` scored samples per example from the plain or the hinted prompt."""

    def draw(self, examples: Sequence[Example], origin: str, n: int, *, seed: int) -> list[list[Sample]]: ...


class ProposalError(FemError):
    """A proposal returned something other than ``n`` traces for each prompt."""


def proposal_label(proposal: Any) -> str:
    """A proposal's name, plus its dotted class path when it is a user's class (what the recipe names)."""
    cls = type(proposal)
    name = proposal.name
    return name if cls.__module__.startswith("fem.") else f"{name} ({cls.__module__}.{cls.__qualname__})"


def check_trace_counts(traces: Any, examples: Sequence[Example], n: int, proposal: str) -> None:
    """Every prompt must get exactly ``n`` traces, in order: a missing row would shift later rows onto the wrong
    examples and silently drop data."""
    if not isinstance(traces, list) or len(traces) != len(examples):
        got = len(traces) if isinstance(traces, list) else type(traces).__name__
        span = f" ({examples[0].id} .. {examples[-1].id})" if examples else ""
        raise ProposalError(
            f"proposal '{proposal}' returned {got} trace lists for {len(examples)} prompts{span}",
            field="proposal",
            fix="propose(prompts, num_samples) must return one list of num_samples traces per prompt, in order",
        )
    for example, row in zip(examples, traces):
        if len(row) != n:
            raise ProposalError(
                f"proposal '{proposal}' returned {len(row)} traces for example {example.id} (expected {n})",
                field="proposal",
                fix="propose(prompts, num_samples) must return num_samples traces for every prompt",
            )


@dataclass
class ProposalDrawer:
    """The production drawer: task prompt -> token ids -> proposal traces -> task scoring."""

    task: Task
    proposal: Proposal
    render: Callable[[Example, str], list[int]]  # (example, origin) -> prompt token ids
    score: Callable[[Sequence[Example], Sequence[list[int]], Sequence[str], int], list[Prediction]]  # (..., seed)
    train_completion: Callable[[str, Example, float | None], str]  # (rationale, example, stated confidence)
    # around each draw-and-score: e.g. the backend keeping the prompts' KV for the forced-answer read-out
    session: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext
    # (examples, prompt ids) -> option probabilities read right after each prompt (no rationale)
    read_options: Callable[[Sequence[Example], Sequence[list[int]]], list[dict[str, float]]] | None = None

    def read_out(self, examples: Sequence[Example], origin: str) -> list[dict[str, float]]:
        """The option probabilities each example's ``origin`` prompt gives right after the answer cue. Examples
        whose prompts are the same token ids (a pair and the swap of its swapped copy) are read once."""
        if self.read_options is None:
            raise FemError("this drawer has no read-out", fix="build it with read_options (fem.runtime does)")
        prompts = [self.render(e, origin) for e in examples]
        first: dict[tuple[int, ...], int] = {}
        for i, prompt in enumerate(prompts):
            first.setdefault(tuple(prompt), i)
        unique = list(first.values())
        read = self.read_options([examples[i] for i in unique], [prompts[i] for i in unique])
        by_prompt = {tuple(prompts[i]): probs for i, probs in zip(unique, read)}
        return [dict(by_prompt[tuple(p)]) for p in prompts]

    def draw(self, examples: Sequence[Example], origin: str, n: int, *, seed: int) -> list[list[Sample]]:
        prompts = [self.render(e, origin) for e in examples]
        with self.session():
            traces = self.proposal.propose(prompts, n, seed=seed)
            check_trace_counts(traces, examples, n, proposal_label(self.proposal))
            flat_examples = [e for e, ts in zip(examples, traces) for _ in ts]
            flat_prompts = [p for p, ts in zip(prompts, traces) for _ in ts]
            flat_traces = [t for ts in traces for t in ts]
            predictions = self.score(flat_examples, flat_prompts, [t.text for t in flat_traces], seed)
        out: list[list[Sample]] = [[] for _ in examples]
        i = 0
        for row, ts in enumerate(traces):
            for attempt, trace in enumerate(ts):
                pred = predictions[i]
                pred.sample_index = attempt
                out[row].append(
                    Sample(
                        example=examples[row],
                        origin=origin,
                        attempt=attempt,
                        trace=trace,
                        prediction=pred,
                        completion=self.train_completion(trace.text, examples[row], pred.confidence),
                        own_completion=own_completion(self.task, examples[row], pred, trace.text),
                    )
                )
                i += 1
        return out
