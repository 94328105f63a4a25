"""Math word problems with a final answer: MATH500, GSM8K, AIME 2024/2026, AMC23.

The answer is read from the last ``\\boxed{...}`` (nested braces), else ``#### n``, else "The answer is X".
Equivalence is decided by ``math_verify`` (parse + verify); there is no hand-written LaTeX normalizer.
Metrics: accuracy (mean reward over all samples), pass@k and maj@k with k = samples per example.
"""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Sequence
from typing import Any, ClassVar

from math_verify import parse, verify

from fem import metrics as M

from .base import Example, Prediction
from .common import DataTask, group_by_example
from .loading import Record, Source, record_error

_ANSWER_IS = re.compile(r"answer is\s*[:：]?\s*(.+)", re.IGNORECASE)
_HASHES = re.compile(r"####\s*([^\n]+)")


_BOX = re.compile(r"\\(?:boxed|fbox)\s*\{")


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox{...}``) with balanced braces; None if there is none or
    the last one is never closed (a truncated answer)."""
    matches = list(_BOX.finditer(text or ""))
    if not matches:
        return None
    depth = 0
    start = matches[-1].end() - 1
    for j in range(start, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1 : j].strip() or None
    return None


def final_answer(text: str) -> str | None:
    """The final answer written in ``text``: last boxed, else ``#### n``, else the last "The answer is X"."""
    if not text:
        return None
    boxed = last_boxed(text)
    if boxed:
        return boxed
    hashes = _HASHES.findall(text)
    if hashes:
        value = hashes[-1].strip().replace(",", "")
        return value or None
    said = _ANSWER_IS.findall(text)
    if said:
        value = said[-1].strip().strip("$ ").rstrip(".").strip("$ ")
        if "\\boxed{" in value:  # a \boxed{ that never closes: a truncated answer, not an answer
            return None
        return value or None
    return None


def _timeout() -> int | None:
    """math_verify's timeouts use SIGALRM, which only works in the main thread."""
    return 5 if threading.current_thread() is threading.main_thread() else None


@functools.lru_cache(maxsize=65536)
def _parse(answer: str) -> tuple[Any, ...]:
    return tuple(parse("\\boxed{" + answer + "}", parsing_timeout=_timeout()))


def equivalent(gold: str, predicted: str | None) -> bool:
    """Whether ``predicted`` equals ``gold`` according to math_verify (False when either does not parse)."""
    if predicted is None:
        return False
    g, p = _parse(str(gold)), _parse(str(predicted))
    if not g or not p:
        return False
    try:
        return bool(verify(list(g), list(p), timeout_seconds=_timeout()))
    except Exception:  # a verifier failure on odd input means "not shown equal"
        return False


class MathTask(DataTask):
    """An open-answer math task (answer after the cue as ``\\boxed{...}``)."""

    answer_cue: ClassVar[str] = "The answer is"
    answer_markers: ClassVar[tuple[str, ...]] = ("The answer is", "the answer is", "\\boxed", "####")
    forced_stop: ClassVar[str] = "\n"
    required_fields: ClassVar[tuple[str, ...]] = ("problem", "answer")
    text_fields: ClassVar[tuple[str, ...]] = ("problem",)
    plain_template: ClassVar[str] = "math.txt"
    hinted_template: ClassVar[str] = "math_hinted.txt"
    id_prefix: ClassVar[str] = "math"

    def make_example(self, record: Record, split: str) -> Example | None:
        raw = record["answer"]
        if isinstance(raw, float) and raw.is_integer():
            raw = int(raw)
        text = str(raw).strip()
        gold = final_answer(text) if ("####" in text or "\\boxed" in text) else text
        if gold is None or not _parse(gold):
            raise record_error(
                record,
                self.field_map(split).get("answer", "answer"),
                f"answer {text[:60]!r} cannot be parsed by math_verify",
                "write the final answer in LaTeX or as a number",
            )
        if re.fullmatch(r"0\d+", gold):  # AIME answers are written zero-padded ("073")
            gold = str(int(gold))
        fields = {"problem": str(record["problem"]).strip()}
        return Example(id=self.example_id(record, f"{self.id_prefix}-{split}"), answer=gold, fields=fields)

    def extract(self, completion: str) -> str | None:
        return final_answer(completion)

    def reward(self, extracted: Any | None, example: Example) -> float:
        return 1.0 if equivalent(str(example.answer), extracted) else 0.0

    def answer_text(self, example: Example) -> str:
        return f" \\boxed{{{example.answer}}}."

    def hint_text(self, example: Example) -> str:
        return str(example.answer)

    def wrong_answer_text(self, example: Example) -> str:
        return " \\boxed{-98765}." if not equivalent(str(example.answer), "-98765") else " \\boxed{12345}."

    def answer_key(self, extracted: str | None) -> str | None:
        """A canonical key for majority voting (math_verify's parsed string form)."""
        if extracted is None:
            return None
        parsed = _parse(extracted)
        return str(parsed[0]) if parsed else extracted

    def metrics(self, predictions: Sequence[Prediction], examples: Sequence[Example]) -> dict[str, Any]:
        groups = group_by_example(predictions)
        k = min((len(g) for g in groups.values()), default=0)
        out: dict[str, Any] = {
            "n": len(predictions),
            "examples": len(groups),
            "accuracy": M.accuracy([p.reward for p in predictions]),
            "unparsed": sum(1 for p in predictions if not p.parsed),
        }
        if k >= 1:
            out[f"pass@{k}"] = M.mean_pass_at_k([[p.reward for p in g[:k]] for g in groups.values()], k)
            if k > 1:
                out["pass@1"] = M.mean_pass_at_k([[p.reward for p in g[:k]] for g in groups.values()], 1)
            out[f"maj@{k}"] = M.maj_at_k(
                ([self.answer_key(p.extracted) for p in g[:k]], [p.reward for p in g[:k]]) for g in groups.values()
            )
        return out


def _math_variant(task_name: str, sources: dict[str, Source], prefix: str, doc: str) -> type[MathTask]:
    return type(
        f"Math_{task_name}",
        (MathTask,),
        {"name": task_name, "sources": sources, "id_prefix": prefix, "__doc__": doc, "__module__": __name__},
    )


MATH_FIELDS = {"problem": "problem", "answer": "answer", "id": "unique_id"}
GSM8K_FIELDS = {"problem": "question", "answer": "answer"}
COMPETITION_FIELDS = {"problem": "problem", "answer": "answer"}

Math500 = _math_variant(
    "math500", {"eval": Source(("math500/test.jsonl",), MATH_FIELDS)}, "math500", "MATH-500 (eval only; 500 problems)."
)
GSM8K = _math_variant(
    "gsm8k",
    {
        "train": Source(("gsm8k/train_first1000.jsonl",), GSM8K_FIELDS),
        "eval": Source(("gsm8k/test.jsonl",), GSM8K_FIELDS),
    },
    "gsm8k",
    "GSM8K: train = first 1000 of the official train split, eval = the full test split (1319).",
)
AIME24 = _math_variant(
    "aime24",
    {"eval": Source(("aime/aime2024_qwen25math.jsonl",), COMPETITION_FIELDS)},
    "aime24",
    "AIME 2024 I+II (30).",
)
AIME26 = _math_variant(
    "aime26",
    {"eval": Source(("aime/aime2026_thirdparty.jsonl",), COMPETITION_FIELDS)},
    "aime26",
    "AIME 2026 I+II (30).",
)
AMC23 = _math_variant(
    "amc23", {"eval": Source(("amc23/test.jsonl",), COMPETITION_FIELDS)}, "amc23", "AMC 12 2023 (40)."
)
