"""Multiple choice: ARC-Challenge, OpenBookQA, MMLU-STEM, and GPQA (official CSV layout, user-supplied file).

The answer is an option letter written as "The answer is (X)". Metric: accuracy.
Field mapping: ``choices`` is a list column, a dotted path, or comma-separated columns ("opt_a,opt_b,opt_c,opt_d");
``answer`` is a letter, a label from ``choice_labels``, or a 0-based index (map other values with task_labels).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Sequence
from typing import Any, ClassVar

from fem import metrics as M

from .base import Example, Prediction
from .common import DataTask
from .loading import Record, Source, label_key, record_error

LETTERS = "ABCDEFGHIJ"
_ANSWER = re.compile(
    r"answer\s*(?:is)?\s*[:：]?\s*\**\s*\(([A-J])\)|answer\s*(?:is)?\s*[:：]?\s*\**\s*([A-J])(?![A-Za-z0-9])",
    re.IGNORECASE,
)


def parse_choice(text: str) -> str | None:
    """The last "The answer is (X)" / "Answer: X" letter in ``text``."""
    matches = _ANSWER.findall(text or "")
    if not matches:
        return None
    a, b = matches[-1]
    return (a or b).upper()


class ChoiceTask(DataTask):
    """A multiple-choice task (answer = option letter)."""

    answer_cue: ClassVar[str] = "The answer is ("
    answer_markers: ClassVar[tuple[str, ...]] = ("The answer is", "the answer is", "Answer:")
    required_fields: ClassVar[tuple[str, ...]] = ("question", "choices", "answer")
    text_fields: ClassVar[tuple[str, ...]] = ("question",)
    label_field: ClassVar[str | None] = "answer"
    plain_template: ClassVar[str] = "choice.txt"
    hinted_template: ClassVar[str] = "choice_hinted.txt"
    id_prefix: ClassVar[str] = "choice"

    def _choices(self, record: Record, split: str) -> list[str]:
        choices = record["choices"]
        if isinstance(choices, str):
            try:
                choices = json.loads(choices)
            except json.JSONDecodeError:
                choices = None
        if not isinstance(choices, list) or not 2 <= len(choices) <= len(LETTERS) or any(c is None for c in choices):
            raise record_error(
                record,
                self.field_map(split).get("choices", "choices"),
                f"choices must be a list of 2-{len(LETTERS)} options",
                "map choices to a list column or to comma-separated columns (task_fields: {choices: 'a,b,c,d'})",
            )
        return [str(c).strip() for c in choices]

    def _answer_index(self, record: Record, choices: list[str], split: str) -> int:
        answer, labels = record["answer"], record.get("choice_labels")
        key = label_key(answer)
        index: int | None = None
        if isinstance(labels, list) and len(labels) == len(choices):
            keys = [label_key(x) for x in labels]
            index = keys.index(key) if key in keys else None
        if index is None and len(key) == 1 and key.upper() in LETTERS and not key.isdigit():
            index = LETTERS.index(key.upper())
        if index is None and re.fullmatch(r"\d+", key):
            index = int(key)
        if index is None or not 0 <= index < len(choices):
            raise record_error(
                record,
                self.field_map(split).get("answer", "answer"),
                f"answer {answer!r} does not name one of the {len(choices)} options",
                "use a letter, a 0-based index, or map values with task_labels",
            )
        return index

    def make_example(self, record: Record, split: str) -> Example | None:
        choices = self._choices(record, split)
        index = self._answer_index(record, choices, split)
        fields: dict[str, Any] = {"question": str(record["question"]).strip(), "choices": choices}
        if record.get("subject"):
            fields["subject"] = str(record["subject"])
        return Example(id=self.example_id(record, f"{self.id_prefix}-{split}"), answer=LETTERS[index], fields=fields)

    def template_fields(self, example: Example) -> dict[str, Any]:
        choices = example.fields["choices"]
        return {
            "question": example.fields["question"],
            "choices": "\n".join(f"({LETTERS[i]}) {c}" for i, c in enumerate(choices)),
            "letters": ", ".join(LETTERS[: len(choices)]),
            "subject": example.fields.get("subject", ""),
        }

    def hint_text(self, example: Example) -> str:
        return f"({example.answer}) {example.fields['choices'][LETTERS.index(example.answer)]}"

    def options(self, example: Example) -> list[str]:
        return list(LETTERS[: len(example.fields["choices"])])

    def extract(self, completion: str) -> str | None:
        return parse_choice(completion)

    def reward(self, extracted: Any | None, example: Example) -> float:
        return 1.0 if extracted is not None and str(extracted).upper() == example.answer else 0.0

    def answer_text(self, example: Example) -> str:
        return f"{example.answer})."

    def wrong_answer_text(self, example: Example) -> str:
        options = self.options(example)
        return f"{options[(options.index(example.answer) + 1) % len(options)]})."

    def metrics(self, predictions: Sequence[Prediction], examples: Sequence[Example]) -> dict[str, Any]:
        return {
            "n": len(predictions),
            "accuracy": M.accuracy([p.reward for p in predictions]),
            "unparsed": sum(1 for p in predictions if not p.parsed),
        }


ARC_FIELDS = {
    "id": "id",
    "question": "question",
    "choices": "choices.text",
    "choice_labels": "choices.label",
    "answer": "answerKey",
}
MMLU_FIELDS = {"question": "question", "choices": "choices", "answer": "answer", "subject": "type"}


def _choice_variant(task_name: str, sources: dict[str, Source], doc: str) -> type[ChoiceTask]:
    return type(
        f"Choice_{task_name}",
        (ChoiceTask,),
        {"name": task_name, "sources": sources, "id_prefix": task_name, "__doc__": doc, "__module__": __name__},
    )


ARC = _choice_variant(
    "arc",
    {
        "train": Source(("arc_challenge/train.jsonl",), ARC_FIELDS),
        "eval": Source(("arc_challenge/test.jsonl",), ARC_FIELDS),
    },
    "ARC-Challenge: train (1119) and test (1172).",
)
OpenBookQA = _choice_variant(
    "openbookqa",
    {
        "train": Source(("openbookqa/train_first1000.jsonl",), ARC_FIELDS),
        "eval": Source(("openbookqa/test.jsonl",), ARC_FIELDS),
    },
    "OpenBookQA main: train = first 1000 of the official train split, eval = test (500).",
)
MMLUStem = _choice_variant(
    "mmlu_stem",
    {"eval": Source(("mmlu_stem/test.jsonl.gz",), MMLU_FIELDS)},
    "MMLU test, 18 STEM subjects (3018; eval only).",
)

GPQA_FIELDS = {
    "id": "Record ID",
    "question": "Question",
    "correct": "Correct Answer",
    "incorrect": "Incorrect Answer 1,Incorrect Answer 2,Incorrect Answer 3",
}


class GPQATask(ChoiceTask):
    """GPQA (e.g. Diamond) from the official CSV: "Question", "Correct Answer", "Incorrect Answer 1..3".

    No data ships (the authors ask that GPQA not be published in plain text): set eval_file (and train_file).
    Options are shuffled per question with a fixed seed (sha256 of "gpqa:<id or question>"), so the order and
    the correct letter are the same on every run and machine.
    """

    name: ClassVar[str] = "gpqa"
    id_prefix: ClassVar[str] = "gpqa"
    required_fields: ClassVar[tuple[str, ...]] = ("question", "correct", "incorrect")
    text_fields: ClassVar[tuple[str, ...]] = ("question", "correct")
    label_field: ClassVar[str | None] = None
    sources: ClassVar[dict[str, Source]] = {}
    shuffle_seed: ClassVar[str] = "gpqa"

    def field_map(self, split: str) -> dict[str, str]:
        fields = dict(GPQA_FIELDS)
        if self.config.task_fields:
            fields.update({str(k): str(v) for k, v in self.config.task_fields.items()})
        return fields

    def make_example(self, record: Record, split: str) -> Example | None:
        incorrect = record["incorrect"] if isinstance(record["incorrect"], list) else [record["incorrect"]]
        options = [str(record["correct"]).strip()] + [str(x).strip() for x in incorrect]
        key = str(record.get("id") or record["question"])
        rng = random.Random(int.from_bytes(hashlib.sha256(f"{self.shuffle_seed}:{key}".encode()).digest()[:8], "big"))
        order = list(range(len(options)))
        rng.shuffle(order)
        choices = [options[i] for i in order]
        fields = {"question": str(record["question"]).strip(), "choices": choices}
        return Example(id=self.example_id(record, f"gpqa-{split}"), answer=LETTERS[order.index(0)], fields=fields)
