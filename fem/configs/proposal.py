"""ProposalConfig: how each rationale is drawn (ancestral, power_mh, power_smc, best_of_n, a user's class)."""

from __future__ import annotations

from dataclasses import dataclass, field

from fem.configs.choices import CUTS, SMC_RESAMPLE_EVERY, SMC_RESAMPLINGS
from fem.validation import check, validate_fields


@dataclass
class ProposalConfig:
    """> Parameters of the proposal that draws each rationale (ancestral, power_mh, power_smc, best_of_n, yours)."""

    proposal: str = field(
        default="ancestral",
        metadata={
            "help": "ancestral | power_mh | power_smc | best_of_n | a dotted path to your own Proposal class.",
            "nonempty": True,
            "fix": "set proposal: ancestral, power_mh, power_smc, best_of_n or a dotted path",
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
    # ---- power_smc (fem/proposals/smc.py); also uses power_alpha, power_block_size, power_proposal_temperature
    smc_particles: int = field(
        default=16,
        metadata={
            "help": "power_smc: particles per prompt, decoded in lockstep (Power-SMC uses 64).",
            "min": 1,
            "fix": "set the particles per prompt (Power-SMC uses 64)",
        },
    )
    smc_ess_threshold: float = field(
        default=1.0,
        metadata={
            "help": "power_smc: resample when ESS / particles falls below this: 1 = at every check (the default; "
            "systematic resampling leaves near-equal weights almost as they are), 0 = never.",
            "min": 0,
            "max": 1,
            "fix": "use a fraction of the particle count such as 0.5 (0 never resamples)",
        },
    )
    smc_resampling: str = field(
        default="systematic",
        metadata={
            "help": "power_smc: how ancestors are drawn: systematic or multinomial.",
            "choices": SMC_RESAMPLINGS,
        },
    )
    smc_resample_every: str = field(
        default="block",
        metadata={
            "help": "power_smc: check the ESS at block boundaries (power_block_size) or after every token.",
            "choices": SMC_RESAMPLE_EVERY,
        },
    )
    smc_alpha_ramp: int = field(
        default=0,
        metadata={
            "help": "power_smc: tokens over which the target exponent ramps linearly from 1 to alpha (0 = off).",
            "min": 0,
            "fix": "set the ramp length in tokens, or 0 for no ramp",
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
        if self.proposal == "power_smc":
            check(
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
