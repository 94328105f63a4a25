"""``toy_arith``: tiny single-digit additions generated from a seed (no data files), for EM tests on tiny models."""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from typing import Any, ClassVar

from fem import metrics as M

from .base import Example, Prediction
from .common import DataTask, normalize_split

_ANSWER = re.compile(r"answer is\s*[:：]?\s*(-?\d+)", re.IGNORECASE)
SIZES = {"train": 200, "eval": 50}
SEEDS = {"train": 1234, "eval": 5678}


class ToyArithTask(DataTask):
    """ "What is a + b?" with single digits; the answer follows "The answer is". Train and eval are drawn from
    different seeds (the same sums may appear in both: the point is a learnable format, not generalization)."""

    name: ClassVar[str] = "toy_arith"
    answer_cue: ClassVar[str] = "The answer is"
    answer_markers: ClassVar[tuple[str, ...]] = ("The answer is", "the answer is")
    forced_stop: ClassVar[str] = "."
    forced_max_new_tokens: ClassVar[int] = 4
    plain_template: ClassVar[str] = "toy_arith.txt"
    hinted_template: ClassVar[str] = "toy_arith_hinted.txt"

    def files(self, split: str) -> list[str]:
        return []

    def load(self, split: str) -> list[Example]:
        split = normalize_split(split)
        rng = random.Random(SEEDS[split])
        examples = []
        for i in range(SIZES[split]):
            a, b = rng.randint(0, 9), rng.randint(0, 9)
            examples.append(Example(id=f"toy-{split}-{i:04d}", answer=str(a + b), fields={"a": a, "b": b}))
        limit = self.config.train_limit if split == "train" else self.config.eval_limit
        return examples[:limit] if limit else examples

    def extract(self, completion: str) -> str | None:
        found = _ANSWER.findall(completion or "")
        return found[-1].lstrip("0") or "0" if found else None

    def reward(self, extracted: Any | None, example: Example) -> float:
        return 1.0 if extracted is not None and str(extracted) == str(example.answer) else 0.0

    def answer_text(self, example: Example) -> str:
        return f" {example.answer}."

    def hint_text(self, example: Example) -> str:
        return str(example.answer)

    def wrong_answer_text(self, example: Example) -> str:
        return f" {int(example.answer) + 1}."

    def metrics(self, predictions: Sequence[Prediction], examples: Sequence[Example]) -> dict[str, Any]:
        return {
            "n": len(predictions),
            "accuracy": M.accuracy([p.reward for p in predictions]),
            "unparsed": sum(1 for p in predictions if not p.parsed),
        }


_VERDICT = re.compile(r"answer is \(?([AB])\)?", re.IGNORECASE)


class ToyParityTask(DataTask):
    """ "Is n even or odd?" for one digit, answered (A) even / (B) odd. A random tiny model is right half of the
    time and LoRA can learn the 10-entry table within two EM rounds: the task for tests that the loop *learns*."""

    name: ClassVar[str] = "toy_parity"
    answer_cue: ClassVar[str] = "The answer is ("
    answer_markers: ClassVar[tuple[str, ...]] = ("The answer is", "the answer is")
    plain_template: ClassVar[str] = "toy_parity.txt"
    hinted_template: ClassVar[str] = "toy_parity_hinted.txt"

    def files(self, split: str) -> list[str]:
        return []

    def load(self, split: str) -> list[Example]:
        split = normalize_split(split)
        rng = random.Random(SEEDS[split] + 1)
        size = {"train": 120, "eval": 40}[split]
        examples = []
        for i in range(size):
            n = i % 10 if split == "eval" else rng.randint(0, 9)
            examples.append(Example(id=f"parity-{split}-{i:04d}", answer="A" if n % 2 == 0 else "B", fields={"n": n}))
        limit = self.config.train_limit if split == "train" else self.config.eval_limit
        return examples[:limit] if limit else examples

    def options(self, example: Example) -> list[str]:
        return ["A", "B"]

    def extract(self, completion: str) -> str | None:
        found = _VERDICT.findall(completion or "")
        return found[-1].upper() if found else None

    def reward(self, extracted: Any | None, example: Example) -> float:
        return 1.0 if extracted == example.answer else 0.0

    def answer_text(self, example: Example) -> str:
        return f"{example.answer})"

    def option_text(self, option: str) -> str:
        return option

    def wrong_answer_text(self, example: Example) -> str:
        return "B)" if example.answer == "A" else "A)"

    def metrics(self, predictions: Sequence[Prediction], examples: Sequence[Example]) -> dict[str, Any]:
        return {
            "n": len(predictions),
            "accuracy": M.accuracy([p.reward for p in predictions]),
            "unparsed": sum(1 for p in predictions if not p.parsed),
        }
