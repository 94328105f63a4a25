"""The task protocol: a dataset turned into EM material (prompts, hinted prompts, extractor, reward, metrics)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

Messages = list[dict[str, str]]  # chat messages: [{"role": "user", "content": "..."}]


@dataclass
class Example:
    """One task item. ``answer`` is the gold answer in the task's canonical form (e.g. "A", "72", a test suite)."""

    id: str
    answer: Any
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass
class Prediction:
    """One scored completion of one example (the unit that metrics consume)."""

    example_id: str
    completion: str
    extracted: Any | None
    reward: float
    sample_index: int = 0
    confidence: float | None = None  # probability the verdict is right, when the task has one
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def parsed(self) -> bool:
        return self.extracted is not None


@runtime_checkable
class Task(Protocol):
    """What every task provides. ``answer_cue`` starts the answer part of a completion (forced answer mode
    appends it and reads the model's option probabilities; the M-step trains ``rationale + cue + answer``)."""

    name: str
    answer_cue: str

    def load(self, split: str) -> list[Example]: ...

    def prompt(self, example: Example) -> Messages: ...

    def hinted_prompt(self, example: Example) -> Messages: ...

    def extract(self, completion: str) -> Any | None: ...

    def reward(self, extracted: Any | None, example: Example) -> float: ...

    def options(self, example: Example) -> list[str] | None:
        """The closed answer set (e.g. ["A", "B"]) for forced answer mode, or None for open answers."""
        ...

    def answer_text(self, example: Example) -> str:
        """The gold answer as it is written after the cue in a training completion."""
        ...

    def metrics(self, predictions: Sequence[Prediction], examples: Sequence[Example]) -> dict[str, Any]: ...
