"""Proposals draw rationales: ``ancestral``, ``power_mh``, ``power_smc``, ``best_of_n``, or a user's class by dotted
path."""

from __future__ import annotations

from fem.configs import ProposalConfig
from fem.generation.base import GenerationBackend
from fem.proposals.base import Cost, Proposal, Trace
from fem.registry import Registry, missing_methods

PROPOSALS: dict[str, str] = {
    "ancestral": "fem.proposals.ancestral.AncestralProposal",
    "power_mh": "fem.proposals.power.PowerMHProposal",
    "power_smc": "fem.proposals.smc.PowerSMCProposal",
    "best_of_n": "fem.proposals.best_of_n.BestOfNProposal",
}
PROPOSAL_REGISTRY = Registry(
    kind="proposal",
    entries=PROPOSALS,
    contract="your own Proposal class (name, propose(prompts, num_samples, *, seed))",
    missing=missing_methods("propose"),
)

__all__ = ["Cost", "PROPOSALS", "Proposal", "Trace", "build_proposal", "check_proposal_name", "resolve_proposal_class"]


def resolve_proposal_class(name: str) -> type:
    """The class registered as ``name`` or importable as ``pkg.module.ClassName``; ConfigError otherwise."""
    return PROPOSAL_REGISTRY.resolve(name)


def check_proposal_name(name: str) -> None:
    """Validate a proposal name at config time (no model is loaded); raises ConfigError."""
    PROPOSAL_REGISTRY.check(name)


def build_proposal(config: ProposalConfig, backend: GenerationBackend, name: str | None = None) -> Proposal:
    """Construct ``cls(config, backend)`` for ``name`` (default ``config.proposal``)."""
    return resolve_proposal_class(name or config.proposal)(config, backend)
