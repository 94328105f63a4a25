"""Summarization from feedback: which of two TL;DR summaries humans preferred, with a stated confidence.

Data: OpenAI TL;DR comparisons (batch13 + batch18; choice = index of the preferred summary, human confidence
1-9 where 1 = "summary 1 definitely better" and 9 = "summary 2 definitely better"; 5 is never used).
Split: by the sha256 of the post id (30 % eval), so a post never lands in both splits.
Human-confidence target: P_human(B better) = (c - 0.5) / 9 (each of the nine points covers a ninth of [0, 1]);
ECE (equal-width and equal-mass bins), Brier and NLL compare the model's confidence in its verdict with
P_human(that verdict); the same measures against correctness carry the prefix ``correctness_``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from fem import metrics as M

from .base import Example, Prediction
from .judge import CALIBRATION_KEYS, TIE, PairwiseTask, calibration_metrics
from .loading import Record, Source, record_error

TLDR_FILES = ("tldr_comparisons/batch13.jsonl.gz", "tldr_comparisons/batch18.jsonl.gz")
TLDR_FIELDS = {
    "post_id": "info.id",
    "post": "info.post",
    "title": "info.title",
    "subreddit": "info.subreddit",
    "summary_a": "summaries.0.text",
    "summary_b": "summaries.1.text",
    "label": "choice",
    "human_confidence": "extra.confidence",
}
TLDR_LABELS = {0: "A", 1: "B"}
BUCKETS = {4: "definite (1/9)", 3: "strong (2/8)", 2: "moderate (3/7)", 1: "weak (4/6)"}  # by |c - 5|


def human_probability_b(confidence: float) -> float:
    """P_human(summary B is better) from the 1-9 scale."""
    return (float(confidence) - 0.5) / 9.0


class SummarizeTask(PairwiseTask):
    """Predict the human preference between two summaries of a Reddit post (``summarize``)."""

    name: ClassVar[str] = "summarize"
    first: ClassVar[str] = "summary_a"
    second: ClassVar[str] = "summary_b"
    candidate_noun: ClassVar[str] = "Summary"
    preference_fields: ClassVar[tuple[str, str, str] | None] = ("post", "summary_a", "summary_b")
    required_fields: ClassVar[tuple[str, ...]] = ("post", "summary_a", "summary_b", "label")
    plain_template: ClassVar[str] = "summarize.txt"
    hinted_template: ClassVar[str] = "summarize_hinted.txt"
    sources = {
        s: Source(
            TLDR_FILES,
            TLDR_FIELDS,
            TLDR_LABELS,
            split_key="post_id",
            eval_fraction=0.3,
            description="split by hash of the post id",
        )
        for s in ("train", "eval")
    }

    def make_example(self, record: Record, split: str) -> Example | None:
        if not self.keep_label(record["label"]):
            return None
        conf = record.get("human_confidence")
        if conf is not None and not (isinstance(conf, (int, float)) and 1 <= conf <= 9):
            raise record_error(
                record,
                self.field_map(split).get("human_confidence", "human_confidence"),
                f"human confidence {conf!r} is not in 1-9",
                "use the 1-9 scale, or leave it empty",
            )
        fields = {
            "post": str(record["post"]).strip(),
            "title": str(record.get("title") or "").strip(),
            "subreddit": str(record.get("subreddit") or "").strip(),
            "summary_a": str(record["summary_a"]).strip(),
            "summary_b": str(record["summary_b"]).strip(),
            "human_confidence": conf,
            "post_id": record.get("post_id"),
        }
        prefix = str(record.get("_file", "")).split("/")[-1].split(".")[0] or "tldr"
        return Example(id=self.example_id(record, f"tldr-{prefix}"), answer=record["label"], fields=fields)

    def swapped(self, example: Example) -> Example:
        ex = super().swapped(example)
        conf = example.fields.get("human_confidence")
        if conf is not None:
            ex.fields["human_confidence"] = 10 - conf
        return ex

    def target_distribution(self, example: Example) -> dict[str, float]:
        """The human-confidence target when the pair has one (P_human(A), P_human(B)), else the gold verdict."""
        conf = example.fields.get("human_confidence")
        if conf is None or self.allow_tie:
            return super().target_distribution(example)
        pb = human_probability_b(conf)
        return {"A": 1.0 - pb, "B": pb}

    def metrics(self, predictions: Sequence[Prediction], examples: Sequence[Example]) -> dict[str, Any]:
        out = super().metrics(predictions, examples)
        out = {("correctness_" + k if k in CALIBRATION_KEYS else k): v for k, v in out.items()}
        by_id = {e.id: e for e in examples}
        confs, targets = [], []
        buckets: dict[str, list[float]] = {}
        for p in predictions:
            ex = by_id.get(p.example_id)
            c = ex.fields.get("human_confidence") if ex else None
            if c is None:
                continue
            buckets.setdefault(BUCKETS[abs(int(c) - 5)], []).append(p.reward)
            if p.parsed and p.confidence is not None and p.extracted != TIE:
                pb = human_probability_b(c)
                confs.append(float(p.confidence))
                targets.append(pb if p.extracted == "B" else 1.0 - pb)
        out.update(calibration_metrics(confs, targets))
        out["accuracy_by_human_confidence"] = {
            k: {"n": len(v), "accuracy": M.accuracy(v)} for k, v in sorted(buckets.items())
        }
        return out
