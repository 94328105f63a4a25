"""Config dataclasses parsed from one flat YAML recipe by ``trl.TrlParser``; CLI flags override the recipe.

Every field name is unique across the dataclasses (the recipe is flat). Each dataclass validates its own
fields in ``__post_init__``; ``validate_configs`` checks what spans several of them. Errors are
``ConfigError`` with the field and the fix; the CLI adds the recipe's file name.

Only the light dataclasses live at module level: ``MStepConfig`` (a ``trl.SFTConfig``) and the model config (a
``trl.ModelConfig``) are built lazily by ``mstep_config_class()`` / ``model_config_class()`` so that
``fem --help`` does not import torch.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

from fem.errors import ConfigError

SCHEMES = ("rejection", "star", "pps")
CUTS = ("uniform", "entropy")
SMC_RESAMPLINGS = ("systematic", "multinomial")
SMC_RESAMPLE_EVERY = ("block", "token")
ANSWER_MODES = ("generate", "forced")
TIE_POLICIES = ("drop", "third")


def _check(condition: bool, field_name: str, message: str, fix: str) -> None:
    if not condition:
        raise ConfigError(message, field=field_name, fix=fix)


def _check_choice(value: str, choices: tuple[str, ...], field_name: str) -> None:
    _check(
        value in choices,
        field_name,
        f"'{value}' is not one of {', '.join(choices)}",
        f"set {field_name} to one of {choices}",
    )


@dataclass
class TaskConfig:
    """> Parameters that choose the task and its data."""

    task: str = field(
        default="gsm8k", metadata={"help": "Task name (see `fem tasks list`) or dotted path to a Task class."}
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
    train_limit: int | None = field(default=None, metadata={"help": "Use only the first N training examples."})
    eval_limit: int | None = field(
        default=None, metadata={"help": "Use only the first N evaluation examples (`--limit` in `fem eval`)."}
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
            "help": "generate: the model writes the answer; forced: append the cue and read option probabilities."
        },
    )
    tie_policy: str = field(
        default="drop", metadata={"help": "Pairwise data with ties: drop them, or keep them as a third verdict."}
    )

    def __post_init__(self) -> None:
        _check(bool(self.task), "task", "is empty", "name a task, e.g. task: gsm8k (see `fem tasks list`)")
        _check_choice(self.answer_mode, ANSWER_MODES, "answer_mode")
        _check_choice(self.tie_policy, TIE_POLICIES, "tie_policy")
        for name in ("train_limit", "eval_limit"):
            value = getattr(self, name)
            _check(
                value is None or value >= 1,
                name,
                f"must be >= 1 (got {value})",
                f"remove {name} or set it to a positive count",
            )
        for name in ("task_fields", "task_labels"):
            value = getattr(self, name)
            _check(
                value is None or isinstance(value, dict),
                name,
                f"must be a mapping (got {type(value).__name__})",
                f"write {name} as a YAML mapping, e.g. {{prompt: question}}",
            )


@dataclass
class ProposalConfig:
    """> Parameters of the proposal that draws each rationale (ancestral, power_mh, power_smc, best_of_n, yours)."""

    proposal: str = field(
        default="ancestral",
        metadata={"help": "ancestral | power_mh | power_smc | best_of_n | a dotted path to your own Proposal class."},
    )
    temperature: float = field(
        default=1.0, metadata={"help": "Sampling temperature (0 = greedy) for ancestral / best_of_n draws."}
    )
    top_k: int = field(default=0, metadata={"help": "Top-k truncation (0 = off)."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus truncation (1 = off)."})
    max_new_tokens: int = field(default=256, metadata={"help": "Response length cap (the horizon T of power_mh)."})
    generation_batch_size: int = field(
        default=16, metadata={"help": "Sequences (or MH chains) decoded together in one batch."}
    )
    power_alpha: float = field(default=4.0, metadata={"help": "Power-sampling exponent alpha (target p^alpha)."})
    power_block_size: int | None = field(
        default=None, metadata={"help": "Stage block size B (default max_new_tokens // 16)."}
    )
    power_mh_steps: int = field(default=10, metadata={"help": "MH steps N per stage."})
    power_cut: str = field(
        default="entropy",
        metadata={"help": "Cut law: uniform (Karan & Du) or entropy (cut at next-token entropy jumps)."},
    )
    power_beta: float = field(
        default=4.0, metadata={"help": "Entropy-cut exponent beta: weights max(H_j - H_{j-1}, 0)^beta."}
    )
    power_epsilon: float = field(
        default=0.1,
        metadata={"help": "Mixture weight of the uniform cut in the entropy cut law (keeps the chain irreducible)."},
    )
    power_proposal_temperature: float | None = field(
        default=None, metadata={"help": "Suffix proposal temperature (default 1/alpha)."}
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
        default=4, metadata={"help": "Draws per returned sample for best_of_n (highest mean base log p wins)."}
    )
    # ---- power_smc (fem/proposals/smc.py); also uses power_alpha, power_block_size, power_proposal_temperature
    smc_particles: int = field(
        default=16, metadata={"help": "power_smc: particles per prompt, decoded in lockstep (Power-SMC uses 64)."}
    )
    smc_ess_threshold: float = field(
        default=0.5, metadata={"help": "power_smc: resample when ESS / particles falls below this (0 = never)."}
    )
    smc_resampling: str = field(
        default="systematic", metadata={"help": "power_smc: how ancestors are drawn: systematic or multinomial."}
    )
    smc_resample_every: str = field(
        default="block",
        metadata={"help": "power_smc: check the ESS at block boundaries (power_block_size) or after every token."},
    )
    smc_alpha_ramp: int = field(
        default=0,
        metadata={
            "help": "power_smc: tokens over which the target exponent ramps linearly from 1 to alpha (0 = off)."
        },
    )

    def __post_init__(self) -> None:
        _check(
            bool(self.proposal),
            "proposal",
            "is empty",
            "set proposal: ancestral, power_mh, power_smc, best_of_n or a dotted path",
        )
        _check(
            self.temperature >= 0,
            "temperature",
            f"must be >= 0 (got {self.temperature})",
            "use 0 for greedy or a positive temperature",
        )
        _check(self.top_k >= 0, "top_k", f"must be >= 0 (got {self.top_k})", "use 0 to disable top-k")
        _check(
            0 < self.top_p <= 1,
            "top_p",
            f"must be in (0, 1] (got {self.top_p})",
            "use 1.0 to disable nucleus sampling",
        )
        _check(
            self.max_new_tokens >= 1,
            "max_new_tokens",
            f"must be >= 1 (got {self.max_new_tokens})",
            "set a positive response length cap",
        )
        _check(
            self.generation_batch_size >= 1,
            "generation_batch_size",
            f"must be >= 1 (got {self.generation_batch_size})",
            "set a positive batch size",
        )
        _check(
            self.power_alpha > 0,
            "power_alpha",
            f"must be > 0 (got {self.power_alpha})",
            "use alpha > 1 to sharpen (the papers use 4)",
        )
        if self.power_block_size is not None:
            _check(
                self.power_block_size >= 1,
                "power_block_size",
                f"must be >= 1 (got {self.power_block_size})",
                "set a positive block size or remove it",
            )
            _check(
                self.power_block_size <= self.max_new_tokens,
                "power_block_size",
                f"block size {self.power_block_size} exceeds the horizon max_new_tokens={self.max_new_tokens}",
                "set power_block_size <= max_new_tokens (default max_new_tokens // 16)",
            )
        _check(
            self.power_mh_steps >= 0,
            "power_mh_steps",
            f"must be >= 0 (got {self.power_mh_steps})",
            "set the MH steps per stage (the papers use 10)",
        )
        _check_choice(self.power_cut, CUTS, "power_cut")
        _check(
            self.power_beta >= 0,
            "power_beta",
            f"must be >= 0 (got {self.power_beta})",
            "use beta >= 0 (the paper uses 4)",
        )
        _check(
            0 <= self.power_epsilon <= 1,
            "power_epsilon",
            f"must be in [0, 1] (got {self.power_epsilon})",
            "use a small mixture weight such as 0.1",
        )
        if self.power_proposal_temperature is not None:
            _check(
                self.power_proposal_temperature > 0,
                "power_proposal_temperature",
                f"must be > 0 (got {self.power_proposal_temperature})",
                "remove it to use 1/alpha",
            )
        _check(
            self.best_of_n >= 1,
            "best_of_n",
            f"must be >= 1 (got {self.best_of_n})",
            "set the number of draws per returned sample",
        )
        self._check_smc()

    def _check_smc(self) -> None:
        """The power_smc keys (and the full-support proposal power_smc needs to be exact)."""
        _check(
            self.smc_particles >= 1,
            "smc_particles",
            f"must be >= 1 (got {self.smc_particles})",
            "set the particles per prompt (Power-SMC uses 64)",
        )
        _check(
            0 <= self.smc_ess_threshold <= 1,
            "smc_ess_threshold",
            f"must be in [0, 1] (got {self.smc_ess_threshold})",
            "use a fraction of the particle count such as 0.5 (0 never resamples)",
        )
        _check_choice(self.smc_resampling, SMC_RESAMPLINGS, "smc_resampling")
        _check_choice(self.smc_resample_every, SMC_RESAMPLE_EVERY, "smc_resample_every")
        _check(
            self.smc_alpha_ramp >= 0,
            "smc_alpha_ramp",
            f"must be >= 0 (got {self.smc_alpha_ramp})",
            "set the ramp length in tokens, or 0 for no ramp",
        )
        if self.proposal == "power_smc":
            _check(
                self.top_k == 0 and self.top_p >= 1,
                "top_k" if self.top_k else "top_p",
                f"power_smc needs a full-support proposal (got top_k={self.top_k}, top_p={self.top_p})",
                "set top_k: 0 and top_p: 1.0 (truncation leaves responses unreachable: no weight makes it exact)",
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
        metadata={"help": "rejection | star | pps (prompt posterior sampling: every draw sees the correct answer)."},
    )
    estep_samples: int = field(
        default=4, metadata={"help": "Draws per example (budget M). For star: plain draws before rationalization."}
    )
    estep_max_keep: int = field(
        default=1, metadata={"help": "Kept samples per example at most (k); 1 = keep the first correct."}
    )
    reward_threshold: float = field(default=1.0, metadata={"help": "Keep samples whose reward is >= this value."})
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
        _check_choice(self.scheme, SCHEMES, "scheme")
        _check(
            self.estep_samples >= 1,
            "estep_samples",
            f"must be >= 1 (got {self.estep_samples})",
            "set the draw budget M per example to at least 1",
        )
        _check(
            self.estep_max_keep >= 1,
            "estep_max_keep",
            f"must be >= 1 (got {self.estep_max_keep})",
            "keep at least one sample per example",
        )
        _check(
            0 <= self.reward_threshold <= 1,
            "reward_threshold",
            f"must be in [0, 1] (got {self.reward_threshold})",
            "rewards lie in [0, 1]; use 1.0 for exact correctness",
        )
        _check(
            self.reward_filter or not self.reward_weighting,
            "reward_weighting",
            "weights unfiltered draws by their reward, which drops every reward-0 draw again",
            "remove reward_weighting, or keep reward_filter: true",
        )


@dataclass
class EvalConfig:
    """> Parameters of evaluation (between rounds and in `fem eval`)."""

    eval_proposal: str | None = field(
        default=None, metadata={"help": "Proposal used for evaluation (default: ancestral at eval_temperature)."}
    )
    eval_temperature: float = field(default=0.0, metadata={"help": "Temperature of evaluation draws (0 = greedy)."})
    eval_max_new_tokens: int | None = field(
        default=None, metadata={"help": "Response length cap of evaluation draws (default: max_new_tokens)."}
    )
    eval_answer_mode: str | None = field(
        default=None,
        metadata={
            "help": "Answer mode of evaluation (default: answer_mode). E.g. a forced E-step with generate evaluation: "
            "the E-step reads verdicts through the cue, evaluation scores what the model writes by itself."
        },
    )
    num_samples: int = field(default=1, metadata={"help": "Samples per eval prompt (pass@k / maj@k use them)."})
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
        _check(
            self.eval_temperature >= 0,
            "eval_temperature",
            f"must be >= 0 (got {self.eval_temperature})",
            "use 0 for greedy",
        )
        _check(
            self.eval_max_new_tokens is None or self.eval_max_new_tokens >= 1,
            "eval_max_new_tokens",
            f"must be >= 1 (got {self.eval_max_new_tokens})",
            "leave it unset to use max_new_tokens",
        )
        if self.eval_answer_mode is not None:
            _check_choice(self.eval_answer_mode, ANSWER_MODES, "eval_answer_mode")
        _check(
            self.num_samples >= 1,
            "num_samples",
            f"must be >= 1 (got {self.num_samples})",
            "set at least one sample per prompt",
        )

    @property
    def proposal_list(self) -> list[str]:
        return [p.strip() for p in (self.proposals or "").split(",") if p.strip()]


@dataclass
class EMConfig:
    """> Parameters of the EM loop."""

    rounds: int = field(default=2, metadata={"help": "EM rounds (E-step, M-step, eval)."})
    restart_from_base: bool = field(
        default=True,
        metadata={
            "help": "Train each round's adapter from the base model (ReST-EM/STaR); false continues from the last adapter."
        },
    )
    backend: str = field(
        default="hf", metadata={"help": "Generation backend: hf (vllm: GPU-only extra, not shipped yet)."}
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
        _check(self.rounds >= 1, "rounds", f"must be >= 1 (got {self.rounds})", "run at least one EM round")
        _check(self.backend in ("hf", "vllm"), "backend", f"'{self.backend}' is not a backend", "use backend: hf")


FEM_DATACLASSES = (TaskConfig, ProposalConfig, EStepConfig, EvalConfig, EMConfig)


@functools.cache
def mstep_config_class() -> type:
    """``MStepConfig`` (a ``trl.SFTConfig``); imported lazily because it pulls torch and TRL."""
    from fem.trl_configs import MStepConfig

    return MStepConfig


@functools.cache
def model_config_class() -> type:
    """``FemModelConfig`` (a ``trl.ModelConfig``); imported lazily."""
    from fem.trl_configs import FemModelConfig

    return FemModelConfig


@dataclass
class Configs:
    """All parsed configs of one command."""

    task: TaskConfig
    proposal: ProposalConfig
    estep: EStepConfig
    eval: EvalConfig
    em: EMConfig
    mstep: Any  # MStepConfig
    model: Any  # FemModelConfig
    recipe: str | None = None

    def flat(self) -> dict[str, Any]:
        """Every field of our own dataclasses plus the model fields (for config.yaml and run fingerprints)."""
        from dataclasses import asdict

        out: dict[str, Any] = {}
        for part in (self.task, self.proposal, self.estep, self.eval, self.em, self.model):
            out.update(asdict(part))
        return out


def validate_configs(c: Configs) -> None:
    """Checks that span several dataclasses (single-field checks live in ``__post_init__``)."""
    if c.estep.estep_max_keep > c.estep.estep_samples:
        raise ConfigError(
            f"estep_max_keep={c.estep.estep_max_keep} exceeds the draw budget estep_samples={c.estep.estep_samples}",
            field="estep_max_keep",
            fix="set estep_max_keep <= estep_samples",
        )
    if c.proposal.power_reference_compat and c.proposal.proposal != "power_mh":
        raise ConfigError(
            "power_reference_compat only applies to proposal power_mh",
            field="power_reference_compat",
            fix="remove it or set proposal: power_mh",
        )
    m = c.mstep
    for name, ok, rule in (
        ("per_device_train_batch_size", getattr(m, "per_device_train_batch_size", 1) >= 1, ">= 1"),
        ("gradient_accumulation_steps", getattr(m, "gradient_accumulation_steps", 1) >= 1, ">= 1"),
        ("learning_rate", getattr(m, "learning_rate", 1.0) > 0, "> 0"),
        ("num_train_epochs", getattr(m, "num_train_epochs", 1.0) > 0, "> 0"),
        ("max_length", (getattr(m, "max_length", None) or 1) >= 1, ">= 1"),
    ):
        if not ok:
            raise ConfigError(f"must be {rule} (got {getattr(m, name)})", field=name, fix=f"set {name} {rule}")
    if c.em.backend == "vllm":
        raise ConfigError(
            "the vllm backend is not shipped yet (it cannot be tested without a GPU here)",
            field="backend",
            fix="use backend: hf",
        )
