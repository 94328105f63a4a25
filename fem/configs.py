"""Config dataclasses parsed from one flat YAML recipe by ``trl.TrlParser``; CLI flags override the recipe.

Every field name is unique across the dataclasses (the recipe is flat). Each field declares its bounds or choices
once, in its metadata next to its help; ``__post_init__`` checks them (``fem.validation``) plus what spans two
fields (``fem.run_configs`` checks what spans several dataclasses). Errors are ``ConfigError`` with the field and
the fix; the CLI adds the recipe's file name.

This module imports neither torch nor TRL (``fem --help`` reads it): ``MStepConfig`` (a ``trl.SFTConfig``) and the
model config (a ``trl.ModelConfig``) live in ``fem.trl_configs``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fem.validation import check, validate_fields

SCHEMES = ("rejection", "star", "pps")
CUTS = ("uniform", "entropy")
ANSWER_MODES = ("generate", "forced")
TIE_POLICIES = ("drop", "third")


def positive_count(name: str) -> dict[str, Any]:
    return {"min": 1, "fix": f"remove {name} or set it to a positive count"}


@dataclass
class TaskConfig:
    """> Parameters that choose the task and its data."""

    task: str = field(
        default="gsm8k",
        metadata={
            "help": "Task name (see `fem tasks list`) or dotted path to a Task class.",
            "nonempty": True,
            "fix": "name a task, e.g. task: gsm8k (see `fem tasks list`)",
        },
    )
    train_file: str | None = field(
        default=None,
        metadata={"help": "Training data file (JSONL/JSON/CSV/gz). Default: the task's shipped train split."},
    )
    eval_file: str | None = field(
        default=None, metadata={"help": "Evaluation data file. Default: the task's shipped eval split."}
    )
    task_fields: dict[str, str] | None = field(
        default=None,
        metadata={"help": "Map of task field -> column in your file, e.g. {prompt: question, label: label}."},
    )
    task_labels: dict[str, str] | None = field(
        default=None, metadata={"help": "Map of raw label value -> task label, e.g. {1: A, 2: B}."}
    )
    train_limit: int | None = field(
        default=None, metadata={"help": "Use only the first N training examples.", **positive_count("train_limit")}
    )
    eval_limit: int | None = field(
        default=None,
        metadata={
            "help": "Use only the first N evaluation examples (`--limit` in `fem eval`).",
            **positive_count("eval_limit"),
        },
    )
    prompt_template: str | None = field(
        default=None,
        metadata={"help": "Override the task's plain prompt: a Python format string or a path to a .txt/.jinja file."},
    )
    hinted_template: str | None = field(
        default=None, metadata={"help": "Override the task's hinted prompt (states the correct answer)."}
    )
    system_prompt: str | None = field(default=None, metadata={"help": "System message placed before every prompt."})
    answer_mode: str = field(
        default="generate",
        metadata={
            "help": "generate: the model writes the answer; forced: append the cue and read option probabilities.",
            "choices": ANSWER_MODES,
        },
    )
    tie_policy: str = field(
        default="drop",
        metadata={
            "help": "Pairwise data with ties: drop them, or keep them as a third verdict.",
            "choices": TIE_POLICIES,
        },
    )

    def __post_init__(self) -> None:
        validate_fields(self)
        for name in ("task_fields", "task_labels"):
            value = getattr(self, name)
            check(
                value is None or isinstance(value, dict),
                name,
                f"must be a mapping (got {type(value).__name__})",
                f"write {name} as a YAML mapping, e.g. {{prompt: question}}",
            )


@dataclass
class ProposalConfig:
    """> Parameters of the proposal that draws each rationale (ancestral, power_mh, best_of_n, or a dotted path)."""

    proposal: str = field(
        default="ancestral",
        metadata={
            "help": "ancestral | power_mh | best_of_n | a dotted path to your own Proposal class.",
            "nonempty": True,
            "fix": "set proposal: ancestral, power_mh, best_of_n or a dotted path",
        },
    )
    temperature: float = field(
        default=1.0,
        metadata={
            "help": "Sampling temperature (0 = greedy) for ancestral / best_of_n draws.",
            "min": 0,
            "fix": "use 0 for greedy or a positive temperature",
        },
    )
    top_k: int = field(
        default=0, metadata={"help": "Top-k truncation (0 = off).", "min": 0, "fix": "use 0 to disable top-k"}
    )
    top_p: float = field(
        default=1.0,
        metadata={
            "help": "Nucleus truncation (1 = off).",
            "gt": 0,
            "max": 1,
            "fix": "use 1.0 to disable nucleus sampling",
        },
    )
    max_new_tokens: int = field(
        default=256,
        metadata={
            "help": "Response length cap (the horizon T of power_mh).",
            "min": 1,
            "fix": "set a positive response length cap",
        },
    )
    generation_batch_size: int = field(
        default=16,
        metadata={
            "help": "Sequences (or MH chains) decoded together in one batch.",
            "min": 1,
            "fix": "set a positive batch size",
        },
    )
    power_alpha: float = field(
        default=4.0,
        metadata={
            "help": "Power-sampling exponent alpha (target p^alpha).",
            "gt": 0,
            "fix": "use alpha > 1 to sharpen (the papers use 4)",
        },
    )
    power_block_size: int | None = field(
        default=None,
        metadata={
            "help": "Stage block size B (default max_new_tokens // 16).",
            "min": 1,
            "fix": "set a positive block size or remove it",
        },
    )
    power_mh_steps: int = field(
        default=10,
        metadata={"help": "MH steps N per stage.", "min": 0, "fix": "set the MH steps per stage (the papers use 10)"},
    )
    power_cut: str = field(
        default="entropy",
        metadata={
            "help": "Cut law: uniform (Karan & Du) or entropy (cut at next-token entropy jumps).",
            "choices": CUTS,
        },
    )
    power_beta: float = field(
        default=4.0,
        metadata={
            "help": "Entropy-cut exponent beta: weights max(H_j - H_{j-1}, 0)^beta.",
            "min": 0,
            "fix": "use beta >= 0 (the paper uses 4)",
        },
    )
    power_epsilon: float = field(
        default=0.1,
        metadata={
            "help": "Mixture weight of the uniform cut in the entropy cut law (keeps the chain irreducible).",
            "min": 0,
            "max": 1,
            "fix": "use a small mixture weight such as 0.1",
        },
    )
    power_proposal_temperature: float | None = field(
        default=None,
        metadata={
            "help": "Suffix proposal temperature (default 1/alpha).",
            "gt": 0,
            "fix": "remove it to use 1/alpha",
        },
    )
    power_early_rejection: bool = field(
        default=True,
        metadata={
            "help": "Stop decoding a proposal once its rejection is certain (exact; needs temperature 1/alpha)."
        },
    )
    power_early_stop: bool = field(
        default=True,
        metadata={
            "help": "Return a trace once it ends with EOS after a stage (as the papers do; slightly favours short answers)."
        },
    )
    power_reference_compat: bool = field(
        default=False,
        metadata={
            "help": "Reproduce the published codes' kernel (cap at current length, suffix truncation). Biased; for comparison only."
        },
    )
    best_of_n: int = field(
        default=4,
        metadata={
            "help": "Draws per returned sample for best_of_n (highest mean base log p wins).",
            "min": 1,
            "fix": "set the number of draws per returned sample",
        },
    )

    def __post_init__(self) -> None:
        validate_fields(self)
        check(
            self.power_block_size is None or self.power_block_size <= self.max_new_tokens,
            "power_block_size",
            f"block size {self.power_block_size} exceeds the horizon max_new_tokens={self.max_new_tokens}",
            "set power_block_size <= max_new_tokens (default max_new_tokens // 16)",
        )

    @property
    def block_size(self) -> int:
        return self.power_block_size or max(1, self.max_new_tokens // 16)

    @property
    def proposal_temperature(self) -> float:
        return self.power_proposal_temperature or 1.0 / self.power_alpha


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

    def __post_init__(self) -> None:
        validate_fields(self)
        labels = self.proposal_list
        check(len(set(labels)) == len(labels), "proposals", "names a proposal twice", "list each proposal once")

    @property
    def proposal_list(self) -> list[str]:
        return [p.strip() for p in (self.proposals or "").split(",") if p.strip()]


@dataclass
class EMConfig:
    """> Parameters of the EM loop."""

    rounds: int = field(
        default=2,
        metadata={"help": "EM rounds (E-step, M-step, eval).", "min": 1, "fix": "run at least one EM round"},
    )
    restart_from_base: bool = field(
        default=True,
        metadata={
            "help": "Train each round's adapter from the base model (ReST-EM/STaR); false continues from the last adapter."
        },
    )
    backend: str = field(
        default="hf",
        metadata={
            "help": "Generation backend: hf, or a dotted path to your own (vllm: GPU-only extra, not shipped yet)."
        },
    )
    gguf_file: str | None = field(
        default=None,
        metadata={"help": "GGUF file name inside model_name_or_path (set automatically for the smollm2 alias)."},
    )
    dry_run: bool = field(
        default=False, metadata={"help": "Validate the recipe and data, print the plan, load no model."}
    )
    overwrite_output_dir_contents: bool = field(
        default=False,
        metadata={"help": "Allow an output dir that holds a run with a different config (its files are replaced)."},
    )

    def __post_init__(self) -> None:
        validate_fields(self)


FEM_DATACLASSES = (TaskConfig, ProposalConfig, EStepConfig, EvalConfig, EMConfig)
