"""Proposals draw rationales: ``ancestral``, ``power_mh``, ``power_smc``, ``best_of_n``, or a user's class by dotted
path."""

from __future__ import annotations

import importlib
from typing import Any

from fem.errors import ConfigError
from fem.proposals.base import Cost, Proposal, Trace

PROPOSALS: dict[str, str] = {
    "ancestral": "fem.proposals.ancestral.AncestralProposal",
    "power_mh": "fem.proposals.power.PowerMHProposal",
    "power_smc": "fem.proposals.smc.PowerSMCProposal",
    "best_of_n": "fem.proposals.best_of_n.BestOfNProposal",
}

__all__ = ["Cost", "PROPOSALS", "Proposal", "Trace", "build_proposal", "check_proposal_name", "resolve_proposal_class"]

_FIX = f"use one of {', '.join(PROPOSALS)} or a dotted path pkg.module.ClassName to your own Proposal class"


def resolve_proposal_class(name: str) -> type:
    """The class registered as ``name`` or importable as ``pkg.module.ClassName``; ConfigError otherwise."""
    target = PROPOSALS.get(name, name)
    module_name, _, class_name = target.rpartition(".")
    if not module_name:
        raise ConfigError(f"'{name}' is not a registered proposal", field="proposal", fix=_FIX)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"cannot import module '{module_name}' for proposal '{name}' ({exc})", field="proposal", fix=_FIX
        ) from exc
    cls = getattr(module, class_name, None)
    if not isinstance(cls, type):
        raise ConfigError(f"'{module_name}' has no class '{class_name}'", field="proposal", fix=_FIX)
    if not callable(getattr(cls, "propose", None)):
        raise ConfigError(
            f"'{target}' has no propose(prompts, num_samples, *, seed) method", field="proposal", fix=_FIX
        )
    return cls


def check_proposal_name(name: str) -> None:
    """Validate a proposal name at config time (no model is loaded); raises ConfigError."""
    resolve_proposal_class(name)


def build_proposal(config: Any, backend: Any, name: str | None = None) -> Proposal:
    """Construct ``cls(config, backend)`` for ``name`` (default ``config.proposal``)."""
    cls = resolve_proposal_class(name or config.proposal)
    return cls(config, backend)
