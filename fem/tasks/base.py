"""The task contract: a dataset turned into EM material (prompts, hinted prompts, extractor, reward, metrics).

``Task`` declares every member the rest of fem uses. Each task implements the abstract ones; the others have
defaults that suit a task with open answers, no stated confidence and no swapped copies. A task says *what* its
answer cue, options, option text and stop string are; reading an answer through the cue is the drawer's business
(``fem.readout``). A task of your own plugs in by dotted path as a subclass of ``Task`` built as ``cls(config)``
(``fem.tasks.common.DataTask`` adds data files, field mapping and templates).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

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


class Task(ABC):
    """What every task provides. ``answer_cue`` starts the answer part of a completion (forced answer mode
    appends it and reads the model's option probabilities; the M-step trains ``rationale + cue + answer``)."""

    name: ClassVar[str] = ""
    answer_cue: ClassVar[str] = ""
    answer_markers: ClassVar[tuple[str, ...]] = ()  # texts that start an answer: a rationale is cut before the first
    forced_stop: ClassVar[str] = "\n"  # forced mode, open answers: greedy decoding after the cue stops here
    forced_max_new_tokens: ClassVar[int] = 48
    # tasks that state a confidence: the text after the answer that starts the confidence line ("" when none)
    confidence_cue: ClassVar[str] = ""
    pairwise: ClassVar[bool] = False  # two candidates A/B: swapped copies, verdict balancing, preference data

    @abstractmethod
    def load(self, split: str) -> list[Example]:
        """Examples of ``split`` ("train" or "eval")."""

    @abstractmethod
    def prompt(self, example: Example) -> Messages: ...

    @abstractmethod
    def hinted_prompt(self, example: Example) -> Messages:
        """The prompt that also states the correct answer (PPS, STaR rationalization)."""

    @abstractmethod
    def extract(self, completion: str) -> Any | None:
        """The answer a completion wrote, or None when it wrote none."""

    @abstractmethod
    def reward(self, extracted: Any | None, example: Example) -> float: ...

    @abstractmethod
    def answer_text(self, example: Example) -> str:
        """The gold answer as it is written after the cue in a training completion."""

    @abstractmethod
    def metrics(self, predictions: Sequence[Prediction], examples: Sequence[Example]) -> dict[str, Any]: ...

    def options(self, example: Example) -> list[str] | None:
        """The closed answer set (e.g. ["A", "B"]) for forced answer mode, or None for open answers."""
        return None

    def option_text(self, option: str) -> str:
        """How an option is written right after the cue (forced mode reads the first token of this)."""
        return (" " + option) if self.answer_cue.endswith((":", ".")) else option

    def extract_confidence(self, completion: str) -> float | None:
        """The confidence a completion states, when the task asks for one."""
        return None

    def confidence_text(self, confidence: float) -> str:
        """The confidence line written after the answer in a training completion ("" when the task states none)."""
        return ""

    def target_distribution(self, example: Example) -> dict[str, float]:
        """What calibrated option probabilities should match (temperature scaling fits to it): the gold answer
        one-hot over the options (empty for open answers)."""
        return {o: float(o == example.answer) for o in (self.options(example) or [])}

    def with_swaps(self, examples: Sequence[Example]) -> list[Example]:
        """The examples to evaluate for position consistency (pairwise tasks add each pair swapped)."""
        return list(examples)

    def swapped(self, example: Example) -> Example:
        """Pairwise tasks: the same pair with its two candidates exchanged and its gold verdict swapped."""
        raise TypeError(f"task '{self.name}' is not pairwise: its examples have no swapped copy")

    def wrong_answer_text(self, example: Example) -> str | None:
        """A deliberately wrong answer written after the cue, for ``fem tasks check`` (None: not checked)."""
        return None

    def files(self, split: str) -> list[str]:
        """The data files ``split`` reads (empty when it generates its data or reads no file)."""
        return []

    def input_files(self) -> dict[str, list[str]]:
        """Every file the task reads, by role (``train``, ``eval``, ``templates``): a run's fingerprint holds their
        digests, so that a resume never mixes samples drawn from other data or prompts."""
        return {"train": self.files("train"), "eval": self.files("eval"), "templates": []}

    def data_format(self, split: str) -> str | None:
        """How the last load of ``split`` read its file, when worth saying (e.g. "preference (conversational, ...)")."""
        return None

    def field_names(self) -> tuple[str, ...]:
        """The fields ``task_fields`` may map (empty: the task reads its own fields and none are checked)."""
        return ()
