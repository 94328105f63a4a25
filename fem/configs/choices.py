"""Choices and rule helpers shared by the config dataclasses."""

from __future__ import annotations

from typing import Any

SCHEMES = ("rejection", "star", "pps")
CUTS = ("uniform", "entropy")
SMC_RESAMPLINGS = ("systematic", "multinomial")
SMC_RESAMPLE_EVERY = ("block", "token")
ANSWER_MODES = ("generate", "forced")
TIE_POLICIES = ("drop", "third")
DATA_FORMATS = ("auto", "fields", "preference")
CONFIDENCE_TARGETS = ("readout", "plain_readout", "plain_readout_debiased", "empirical")
# chosen on held-out training pairs (BENCHMARKS section 9b): the only target whose trained judges tie temperature
# scaling
DEFAULT_CONFIDENCE_TARGET = "plain_readout_debiased"
EVAL_CONFIDENCES = ("readout", "stated", "stated_mean")


def positive_count(name: str) -> dict[str, Any]:
    return {"min": 1, "fix": f"remove {name} or set it to a positive count"}
