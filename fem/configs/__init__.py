"""Config dataclasses parsed from one flat YAML recipe by ``trl.TrlParser``; CLI flags override the recipe.

Every field name is unique across the dataclasses (the recipe is flat). Each field declares its bounds or choices
once, in its metadata next to its help; ``__post_init__`` checks them (``fem.validation``) plus what spans two
fields (``fem.run_configs`` checks what spans several dataclasses). Errors are ``ConfigError`` with the field and
the fix; the CLI adds the recipe's file name.

This package imports neither torch nor TRL (``fem --help`` reads it): ``MStepConfig`` (a ``trl.SFTConfig``) and the
model config (a ``trl.ModelConfig``) live in ``fem.trl_configs``.
"""

from __future__ import annotations

from fem.configs.choices import (
    ANSWER_MODES,
    CONFIDENCE_TARGETS,
    CUTS,
    DATA_FORMATS,
    EVAL_CONFIDENCES,
    SCHEMES,
    SMC_RESAMPLE_EVERY,
    SMC_RESAMPLINGS,
    TIE_POLICIES,
    positive_count,
)
from fem.configs.em import EMConfig
from fem.configs.engine import EngineConfig
from fem.configs.estep import EStepConfig
from fem.configs.eval import EvalConfig
from fem.configs.proposal import ProposalConfig
from fem.configs.task import TaskConfig

FEM_DATACLASSES = (TaskConfig, ProposalConfig, EStepConfig, EvalConfig, EMConfig, EngineConfig)

__all__ = [
    "ANSWER_MODES",
    "CONFIDENCE_TARGETS",
    "CUTS",
    "DATA_FORMATS",
    "EVAL_CONFIDENCES",
    "FEM_DATACLASSES",
    "SCHEMES",
    "SMC_RESAMPLE_EVERY",
    "SMC_RESAMPLINGS",
    "TIE_POLICIES",
    "EMConfig",
    "EStepConfig",
    "EngineConfig",
    "EvalConfig",
    "ProposalConfig",
    "TaskConfig",
    "positive_count",
]
