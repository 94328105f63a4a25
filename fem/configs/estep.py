"""EStepConfig: which E-step scheme draws rationales and what it keeps."""

from __future__ import annotations

from dataclasses import dataclass, field

from fem.configs.choices import SCHEMES
from fem.validation import check, validate_fields


@dataclass
class EStepConfig:
    """> Parameters of the E-step: which scheme draws rationales and what is kept."""

    scheme: str = field(
        default="pps",
        metadata={
            "help": "rejection | star | pps (prompt posterior sampling: every draw sees the correct answer).",
            "choices": SCHEMES,
        },
    )
    estep_samples: int = field(
        default=4,
        metadata={
            "help": "Draws per example (budget M). For star: plain draws before rationalization.",
            "min": 1,
            "fix": "set the draw budget M per example to at least 1",
        },
    )
    estep_max_keep: int = field(
        default=1,
        metadata={
            "help": "Kept samples per example at most (k); 1 = keep the first correct.",
            "min": 1,
            "fix": "keep at least one sample per example",
        },
    )
    reward_threshold: float = field(
        default=1.0,
        metadata={
            "help": "Keep samples whose reward is >= this value.",
            "min": 0,
            "max": 1,
            "fix": "rewards lie in [0, 1]; use 1.0 for exact correctness",
        },
    )
    reward_weighting: bool = field(
        default=False, metadata={"help": "Weight each kept sample's loss by its reward (graded rewards)."}
    )
    reward_filter: bool = field(
        default=True,
        metadata={
            "help": "Keep only draws whose reward passes reward_threshold. false: keep every draw whatever its reward "
            "(unfiltered power self-distillation, arXiv 2605.04542); a draw below the threshold is trained on "
            "with its own answer, not the gold one."
        },
    )
    dedupe: bool = field(
        default=True, metadata={"help": "Drop kept rationales that repeat one already kept for the same example."}
    )
    leakage_filter: bool = field(
        default=True, metadata={"help": "Drop hinted rationales that mention being given the answer."}
    )
    save_rejected: bool = field(
        default=False, metadata={"help": "Also write rejected samples to samples.jsonl (kept: false)."}
    )

    def __post_init__(self) -> None:
        validate_fields(self)
        check(
            self.reward_filter or not self.reward_weighting,
            "reward_weighting",
            "weights unfiltered draws by their reward, which drops every reward-0 draw again",
            "remove reward_weighting, or keep reward_filter: true",
        )
