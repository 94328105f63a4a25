"""E-step schemes: what to draw (rejection, STaR, PPS) and what to keep. A scheme never knows the proposal."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from fem.configs import EStepConfig
from fem.drawing import HINTED, PLAIN, Drawer, Sample
from fem.errors import ConfigError
from fem.estep.filters import normalize_for_dedupe, rejection_reason
from fem.tasks.base import Example


class Scheme(Protocol):
    name: str

    def run(self, examples: Sequence[Example], drawer: Drawer, *, seed: int) -> list[list[Sample]]:
        """All draws per example (kept and rejected), in attempt order."""
        ...


def select(samples: list[Sample], config: EStepConfig) -> None:
    """Mark which draws of one example are kept (threshold, leakage, de-duplication, cap), in attempt order."""
    seen: set[str] = {normalize_for_dedupe(s.trace.text) for s in samples if s.kept}
    kept = sum(s.kept for s in samples)
    for s in samples:
        if s.kept or s.reason is not None:
            continue
        reason = rejection_reason(
            reward=s.reward,
            threshold=config.reward_threshold,
            origin=s.origin,
            rationale=s.trace.text,
            leakage_filter=config.leakage_filter,
            seen=seen,
            dedupe=config.dedupe,
            kept_so_far=kept,
            max_keep=config.estep_max_keep,
            reward_filter=config.reward_filter,
        )
        if reason is None:
            s.kept = True
            s.weight = s.reward if config.reward_weighting else 1.0
            if (s.reward < config.reward_threshold or s.reward <= 0) and s.own_completion is not None:
                s.completion = s.own_completion  # unfiltered: the draw with its own answer, not the gold one
                s.own_target = True
            seen.add(normalize_for_dedupe(s.trace.text))
            kept += 1
        else:
            s.reason = reason


@dataclass
class RejectionScheme:
    """Up to ``estep_samples`` draws from the plain prompt; keep the first correct, or up to ``estep_max_keep``."""

    config: EStepConfig
    name: str = "rejection"

    def run(self, examples: Sequence[Example], drawer: Drawer, *, seed: int) -> list[list[Sample]]:
        draws = drawer.draw(examples, PLAIN, self.config.estep_samples, seed=seed)
        for samples in draws:
            select(samples, self.config)
        return draws


@dataclass
class StarScheme:
    """STaR: plain draws; examples still failing are rationalized from the hinted prompt (trained under plain)."""

    config: EStepConfig
    name: str = "star"

    def run(self, examples: Sequence[Example], drawer: Drawer, *, seed: int) -> list[list[Sample]]:
        draws = drawer.draw(examples, PLAIN, self.config.estep_samples, seed=seed)
        for samples in draws:
            select(samples, self.config)
        failing = [i for i, samples in enumerate(draws) if not any(s.kept for s in samples)]
        if failing:
            hinted = drawer.draw([examples[i] for i in failing], HINTED, self.config.estep_samples, seed=seed + 1)
            for i, samples in zip(failing, hinted):
                offset = len(draws[i])
                for s in samples:
                    s.attempt += offset
                select(samples, self.config)
                draws[i].extend(samples)
        return draws


@dataclass
class PPSScheme:
    """Prompt posterior sampling: every draw sees the correct answer; kept draws are trained under the plain prompt."""

    config: EStepConfig
    name: str = "pps"

    def run(self, examples: Sequence[Example], drawer: Drawer, *, seed: int) -> list[list[Sample]]:
        draws = drawer.draw(examples, HINTED, self.config.estep_samples, seed=seed)
        for samples in draws:
            select(samples, self.config)
        return draws


SCHEMES = {"rejection": RejectionScheme, "star": StarScheme, "pps": PPSScheme}


def build_scheme(config: EStepConfig) -> Scheme:
    if config.scheme not in SCHEMES:
        raise ConfigError(f"unknown scheme '{config.scheme}'", field="scheme", fix=f"use one of {sorted(SCHEMES)}")
    return SCHEMES[config.scheme](config)
