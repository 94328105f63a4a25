"""Pairwise judge calibration: which of two responses is better, with a stated confidence.

Completions end with ``Verdict: A`` (or ``B``; ``tie`` when tie_policy is "third") and ``Confidence: N%``.
Reward = the verdict matches the human label. Metrics: accuracy, ECE (15 equal-width bins and 15 equal-mass bins),
Brier, NLL of the stated confidence, reliability tables, unparsed count, and position consistency when swapped
copies (``swapped``) were scored.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, ClassVar

from fem import calibration as C
from fem import metrics as M

from .base import Example, Prediction
from .common import DataTask, group_by_example
from .loading import Record, Source

LLMBAR_FIELDS = {"prompt": "input", "response_a": "output_1", "response_b": "output_2", "label": "label"}
LLMBAR_LABELS = {1: "A", 2: "B"}
SWAP_SUFFIX = ":swapped"
TIE = "tie"

_VERDICT = re.compile(r"verdict\s*[:：]\s*[*\[\(\"']*\s*(A|B|tie)\b", re.IGNORECASE)
_CONFIDENCE = re.compile(r"confidence\s*[:：]\s*\**\s*(-?\d+(?:\.\d+)?)\s*(%?)", re.IGNORECASE)


def parse_verdict(text: str, allow_tie: bool = False) -> str | None:
    """The last ``Verdict: X`` in ``text`` ("A", "B", or "tie" when allowed), else None."""
    matches = _VERDICT.findall(text or "")
    if not matches:
        return None
    value = matches[-1]
    value = TIE if value.lower() == TIE else value.upper()
    return None if value == TIE and not allow_tie else value


def parse_confidence(text: str) -> float | None:
    """The last ``Confidence: N%`` as a probability in [0, 1]; None when missing or outside 0-100 %.

    Without a percent sign a value in [0, 1] is read as a probability and one in (1, 100] as a percentage.
    """
    matches = _CONFIDENCE.findall(text or "")
    if not matches:
        return None
    number, percent = matches[-1]
    value = float(number)
    if not percent and 0 <= value <= 1:
        return value
    return value / 100 if 0 <= value <= 100 else None


def flip(verdict: str | None) -> str | None:
    return {"A": "B", "B": "A"}.get(verdict, verdict) if verdict is not None else None


CALIBRATION_KEYS = ("ece", "ece_mass", "brier", "nll", "reliability", "reliability_mass")


def calibration_metrics(
    confidences: Sequence[float], targets: Sequence[float], prefix: str = "", n_bins: int = 15
) -> dict[str, Any]:
    """ECE (equal-width and equal-mass bins), Brier, NLL and both reliability tables of (confidence, target) pairs;
    None (tables: empty) when there is no pair."""
    if not confidences:
        return {f"{prefix}{k}": ([] if k.startswith("reliability") else None) for k in CALIBRATION_KEYS}
    out = {f"{prefix}{k}": v for k, v in C.calibration_summary(confidences, targets, n_bins).items()}
    out[f"{prefix}reliability"] = M.reliability_table(confidences, targets, n_bins)
    out[f"{prefix}reliability_mass"] = C.reliability(confidences, targets, n_bins, "mass")
    return out


class PairwiseTask(DataTask):
    """Shared by the judge and summarization tasks: A/B verdicts with a confidence."""

    answer_cue: ClassVar[str] = "Verdict:"
    pairwise: ClassVar[bool] = True
    answer_markers: ClassVar[tuple[str, ...]] = ("Verdict:", "Confidence:")
    label_field: ClassVar[str | None] = "label"
    text_fields: ClassVar[tuple[str, ...]] = ("prompt", "response_a", "response_b", "post", "summary_a", "summary_b")
    allow_empty: ClassVar[tuple[str, ...]] = (
        "response_a",
        "response_b",
        "summary_a",
        "summary_b",
    )  # an empty answer is a valid candidate
    first: ClassVar[str] = "response_a"
    second: ClassVar[str] = "response_b"
    preference_fields: ClassVar[tuple[str, str, str] | None] = ("prompt", "response_a", "response_b")

    @property
    def allow_tie(self) -> bool:
        return self.config.tie_policy == "third"

    @property
    def allowed_labels(self) -> tuple[str, ...]:  # type: ignore[override]
        return ("A", "B", TIE)

    def keep_label(self, label: str) -> bool:
        return label != TIE or self.allow_tie

    def options(self, example: Example) -> list[str]:
        return ["A", "B", TIE] if self.allow_tie else ["A", "B"]

    def option_text(self, option: str) -> str:
        return " " + option

    def extract(self, completion: str) -> str | None:
        """The verdict, only when both ``Verdict:`` and a well-formed ``Confidence: N%`` are present."""
        verdict = parse_verdict(completion, self.allow_tie)
        return verdict if verdict is not None and parse_confidence(completion) is not None else None

    def extract_confidence(self, completion: str) -> float | None:
        return parse_confidence(completion)

    def reward(self, extracted: Any | None, example: Example) -> float:
        return 1.0 if extracted is not None and extracted == example.answer else 0.0

    def answer_text(self, example: Example) -> str:
        return f" {example.answer}"

    confidence_cue: ClassVar[str] = "\nConfidence:"

    def confidence_text(self, confidence: float) -> str:
        """The confidence line written after the verdict in a training completion."""
        return f"{self.confidence_cue} {round(100 * min(max(confidence, 0.0), 1.0))}%"

    def wrong_answer_text(self, example: Example) -> str:
        return f" {flip(example.answer) if example.answer != TIE else 'A'}"

    candidate_noun: ClassVar[str] = "Response"

    def hint_text(self, example: Example) -> str:
        return "neither (a tie)" if example.answer == TIE else f"{self.candidate_noun} {example.answer}"

    def swapped(self, example: Example) -> Example:
        """The same pair with the two candidates exchanged (label flipped), id ``<id>:swapped``."""
        fields = dict(example.fields)
        fields[self.first], fields[self.second] = example.fields[self.second], example.fields[self.first]
        fields["swapped_from"] = example.id
        return Example(id=example.id + SWAP_SUFFIX, answer=flip(example.answer), fields=fields)

    def with_swaps(self, examples: Sequence[Example]) -> list[Example]:
        """Each example followed by its swapped copy (for position consistency)."""
        return [e for ex in examples for e in (ex, self.swapped(ex))]

    def metrics(self, predictions: Sequence[Prediction], examples: Sequence[Example]) -> dict[str, Any]:
        preds = list(predictions)
        out: dict[str, Any] = {"n": len(preds), "accuracy": M.accuracy([p.reward for p in preds])}
        scored = [p for p in preds if p.parsed and p.confidence is not None]
        out["unparsed"] = sum(1 for p in preds if not p.parsed)
        out["parsed_fraction"] = len(scored) / len(preds) if preds else 0.0
        # calibration of the verdicts that came with a confidence; undefined (None) without any
        out.update(calibration_metrics([float(p.confidence) for p in scored], [p.reward for p in scored]))
        out["mean_confidence"] = sum(float(p.confidence) for p in scored) / len(scored) if scored else None
        out.update(position_consistency(preds))
        return out


def position_consistency(predictions: Sequence[Prediction]) -> dict[str, Any]:
    """Fraction of (pair, swapped pair) prediction couples whose verdicts name the same candidate.

    Couples match on example id and sample index; couples with an unparsed side count as inconsistent.
    Empty when no swapped predictions are present.
    """
    groups = group_by_example(predictions)
    couples = 0
    consistent = 0
    for eid, swapped in groups.items():
        if not eid.endswith(SWAP_SUFFIX):
            continue
        original = {p.sample_index: p for p in groups.get(eid[: -len(SWAP_SUFFIX)], [])}
        for p in swapped:
            q = original.get(p.sample_index)
            if q is None:
                continue
            couples += 1
            consistent += int(p.extracted is not None and q.extracted is not None and q.extracted == flip(p.extracted))
    return {"position_consistency": consistent / couples, "position_pairs": couples} if couples else {}


def _pair_sources(files: tuple[str, ...]) -> dict[str, Source]:
    """Train and eval halves of the same files, split by the hash of the instruction (an instruction's pairs
    never land in both)."""
    return {
        s: Source(files, LLMBAR_FIELDS, LLMBAR_LABELS, split_key="prompt", eval_fraction=0.5)
        for s in ("train", "eval")
    }


class JudgeTask(PairwiseTask):
    """Judge calibration on LLMBar's processed MT-Bench human judgments (default ``judge``)."""

    name: ClassVar[str] = "judge"
    required_fields: ClassVar[tuple[str, ...]] = ("prompt", "response_a", "response_b", "label")
    plain_template: ClassVar[str] = "judge.txt"
    hinted_template: ClassVar[str] = "judge_hinted.txt"
    sources = _pair_sources(("llmbar/Processed_MT-Bench.json",))

    def make_example(self, record: Record, split: str) -> Example | None:
        if not self.keep_label(record["label"]):
            return None
        fields = {k: str(record[k]) for k in ("prompt", "response_a", "response_b")}
        return Example(id=self.example_id(record), answer=record["label"], fields=fields)


def _judge_variant(task_name: str, files: tuple[str, ...], doc: str) -> type[JudgeTask]:
    attrs = {"name": task_name, "sources": _pair_sources(files), "__doc__": doc, "__module__": __name__}
    return type(f"Judge_{task_name}", (JudgeTask,), attrs)


ADVERSARIAL = tuple(f"llmbar/LLMBar_Adversarial_{k}.json" for k in ("Neighbor", "GPTInst", "GPTOut", "Manual"))
JudgeFairEval = _judge_variant(
    "judge_faireval", ("llmbar/Processed_FairEval.json",), "FairEval human annotations (66 pairs)."
)
JudgeLLMEval2 = _judge_variant(
    "judge_llmeval2", ("llmbar/Processed_LLMEval2.json",), "LLMEval² human preferences (200 pairs)."
)
JudgeLLMBar = _judge_variant(
    "judge_llmbar", ("llmbar/LLMBar_Natural.json", *ADVERSARIAL), "LLMBar natural + adversarial (419 pairs)."
)
JudgeLLMBarNatural = _judge_variant(
    "judge_llmbar_natural", ("llmbar/LLMBar_Natural.json",), "LLMBar natural (100 pairs)."
)
JudgeLLMBarAdversarial = _judge_variant("judge_llmbar_adversarial", ADVERSARIAL, "LLMBar adversarial (319 pairs).")
