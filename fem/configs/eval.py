"""EvalConfig: evaluation between EM rounds and in ``fem eval``."""

from __future__ import annotations

from dataclasses import dataclass, field

from fem.configs.choices import ANSWER_MODES, EVAL_CONFIDENCES
from fem.validation import check, validate_fields


@dataclass
class EvalConfig:
    """> Parameters of evaluation (between rounds and in `fem eval`)."""

    eval_proposal: str | None = field(
        default=None, metadata={"help": "Proposal used for evaluation (default: ancestral at eval_temperature)."}
    )
    eval_temperature: float = field(
        default=0.0,
        metadata={"help": "Temperature of evaluation draws (0 = greedy).", "min": 0, "fix": "use 0 for greedy"},
    )
    eval_max_new_tokens: int | None = field(
        default=None,
        metadata={
            "help": "Response length cap of evaluation draws (default: max_new_tokens).",
            "min": 1,
            "fix": "leave it unset to use max_new_tokens",
        },
    )
    eval_answer_mode: str | None = field(
        default=None,
        metadata={
            "help": "Answer mode of evaluation (default: answer_mode). E.g. a forced E-step with generate evaluation: "
            "the E-step reads verdicts through the cue, evaluation scores what the model writes by itself.",
            "choices": ANSWER_MODES,
        },
    )
    num_samples: int = field(
        default=1,
        metadata={
            "help": "Samples per eval prompt (pass@k / maj@k use them).",
            "min": 1,
            "fix": "set at least one sample per prompt",
        },
    )
    eval_before_training: bool = field(default=True, metadata={"help": "Evaluate the base model before round 0."})
    eval_every_round: bool = field(default=True, metadata={"help": "Evaluate after every round's M-step."})
    proposals: str | None = field(
        default=None,
        metadata={"help": "fem eval: comma-separated proposals compared side by side on the same prompts."},
    )
    eval_position_swap: bool = field(
        default=True,
        metadata={
            "help": "Pairwise tasks: also ask each eval pair with the two candidates swapped (position consistency)."
        },
    )
    adapter: str | None = field(
        default=None,
        metadata={"help": "fem eval: a LoRA adapter dir, or a finished training dir (its last round is used)."},
    )
    eval_confidence: str = field(
        default="readout",
        metadata={
            "help": "Forced answer mode, tasks that state a confidence: readout (the confidence is the read-out "
            "probability of the verdict), stated (after the forced verdict the model writes its 'Confidence:' line, "
            "greedy: what a trained judge states; the read-out stays in the prediction's info) or stated_mean (the "
            "expected value of the number N in ' N%' the model would write there, 0-100, from 11 next-token read-outs; "
            "needs a tokenizer that writes numbers digit by digit, as SmolLM2's does).",
            "choices": EVAL_CONFIDENCES,
        },
    )
    temperature_scaling: bool = field(
        default=False,
        metadata={
            "help": "fem eval: fit one temperature on the predictions of calibration pairs (the train split, disjoint "
            "from eval; asked both ways like eval) and report the scaled ECE/Brier/NLL (ts_*) on the eval split."
        },
    )
    calibration_limit: int | None = field(
        default=None,
        metadata={
            "help": "temperature_scaling: use the first N examples of the train split (default: all).",
            "min": 1,
            "fix": "remove calibration_limit or set it to a positive count",
        },
    )

    def __post_init__(self) -> None:
        validate_fields(self)
        labels = self.proposal_list
        check(len(set(labels)) == len(labels), "proposals", "names a proposal twice", "list each proposal once")

    @property
    def proposal_list(self) -> list[str]:
        return [p.strip() for p in (self.proposals or "").split(",") if p.strip()]
