"""The configs of one command as a whole (``Configs``): what they record, what an evaluation label means, and the
checks that span several of the dataclasses (each field's own rule is in its metadata, ``fem.configs``)."""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from typing import Any

from fem.configs import CUTS, EMConfig, EngineConfig, EStepConfig, EvalConfig, ProposalConfig, TaskConfig
from fem.errors import ConfigError


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
    engine: EngineConfig = field(default_factory=EngineConfig)  # vllm_* keys (backend: vllm)

    def flat(self) -> dict[str, Any]:
        """Every field of our own dataclasses plus the model fields (for config.yaml and run fingerprints)."""
        out: dict[str, Any] = {}
        for part in (self.task, self.proposal, self.estep, self.eval, self.em, self.engine, self.model):
            out.update(asdict(part))
        return out

    def eval_variant(self, label: str, field_name: str = "eval_proposal") -> ProposalConfig:
        """The proposal config an evaluation label means: the run's proposal settings at ``eval_temperature`` and
        ``eval_max_new_tokens``; ``power_mh:uniform`` / ``power_mh:entropy`` pick the cut of power_mh (the proposals
        of power_mh and power_smc run at ``1/alpha`` whatever the temperature)."""
        name, _, cut = label.partition(":")
        config = dataclasses.replace(self.proposal, proposal=name, temperature=self.eval.eval_temperature)
        if self.eval.eval_max_new_tokens is not None:
            config = dataclasses.replace(config, max_new_tokens=self.eval.eval_max_new_tokens)
        if cut:
            if name != "power_mh" or cut not in CUTS:
                raise ConfigError(
                    f"'{label}' is not a proposal variant",
                    field=field_name,
                    fix="use e.g. ancestral,power_mh:uniform,power_mh:entropy",
                )
            config = dataclasses.replace(config, power_cut=cut)
        return config

    def eval_variants(self) -> list[tuple[str, ProposalConfig]]:
        """``(label, ProposalConfig)`` per proposal ``fem eval`` compares: ``proposals``, or else the evaluation
        proposal of the EM loop (``eval_proposal``, default ancestral), so that ``fem eval --adapter RUN_DIR``
        reproduces the last round's eval."""
        labels = self.eval.proposal_list or [self.eval.eval_proposal or "ancestral"]
        field_name = "proposals" if self.eval.proposal_list else "eval_proposal"
        return [(label, self.eval_variant(label, field_name)) for label in labels]


def validate_configs(c: Configs) -> None:
    """Checks that span several dataclasses."""
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
