"""EStepConfig: which E-step scheme draws rationales and what it keeps."""

from __future__ import annotations

from dataclasses import dataclass, field

from fem.configs.choices import CONFIDENCE_TARGETS, DEFAULT_CONFIDENCE_TARGET, SCHEMES
from fem.validation import check, validate_fields


@dataclass
class EStepConfig:
    """> Parameters of the E-step: which scheme draws rationales and what is kept (and, for pairwise judges, the
    trained confidence and the balanced, position-swapped draws)."""

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
    confidence_target: str = field(
        default=DEFAULT_CONFIDENCE_TARGET,
        metadata={
            "help": "Tasks that state a confidence (judge, summarize): the N of the trained 'Confidence: N%'. readout: "
            "the kept draw's own read-out (after a hinted rationale under PPS: near 100%); plain_readout: P(gold "
            "verdict) read from the plain prompt, no rationale (it carries the model's position bias); "
            "plain_readout_debiased (the default; pairwise tasks): P(gold candidate) from the plain prompt averaged "
            "over the pair as given and swapped; empirical: (k + 2a/K) / (m + 2a) over confidence_samples plain "
            "draws, k their summed P(correct), a = confidence_prior, K options.",
            "choices": CONFIDENCE_TARGETS,
        },
    )
    confidence_samples: int = field(
        default=4,
        metadata={
            "help": "confidence_target empirical: plain draws per example behind the estimate (the scheme's own plain "
            "draws are reused; missing ones are drawn and recorded with reason 'confidence').",
            "min": 1,
            "fix": "use at least one plain draw (4 or more for a usable estimate)",
        },
    )
    confidence_prior: float = field(
        default=1.0,
        metadata={
            "help": "confidence_target empirical: the Beta prior centred on chance 1/K weighs as 2a draws (a = 1: "
            "Laplace's rule of succession; 0: the raw fraction).",
            "min": 0,
            "fix": "use a >= 0 (1 is Laplace's rule)",
        },
    )
    estep_position_swap: bool = field(
        default=False,
        metadata={
            "help": "Pairwise tasks: draw each training pair in both orders (the swapped copy's gold verdict "
            "swapped), so the M-step sees each position as often."
        },
    )
    estep_balance: bool = field(
        default=False,
        metadata={
            "help": "Pairwise tasks: keep the same number of kept samples per gold verdict in a round (the excess of "
            "the majority verdict, chosen by a seeded shuffle, is marked reason 'balance')."
        },
    )

    def __post_init__(self) -> None:
        validate_fields(self)
        check(
            self.reward_filter or not self.reward_weighting,
            "reward_weighting",
            "weights unfiltered draws by their reward, which drops every reward-0 draw again",
            "remove reward_weighting, or keep reward_filter: true",
        )
