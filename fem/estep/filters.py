"""What the E-step keeps: reward threshold, leakage filter for hinted draws, de-duplication, per-example cap."""

from __future__ import annotations

import re

# A hinted rationale that refers to having been given the answer teaches the model nothing it can use
# without the hint (it is trained under the plain prompt).
LEAKAGE_PATTERN = re.compile(
    r"\b(hint|hinted|as (?:given|stated|provided|told)|(?:we|i) (?:are|am|were|was) (?:told|given)|"
    r"(?:given|provided|stated|known) (?:the )?(?:correct )?(?:answer|verdict|label)|the (?:correct )?(?:answer|verdict) (?:is|was) "
    r"(?:given|provided|stated|said|known)|according to the (?:hint|prompt|question)|reference (?:answer|verdict))\b",
    re.IGNORECASE,
)


def leaks_hint(rationale: str) -> bool:
    """True when a hinted rationale mentions being given the answer."""
    return LEAKAGE_PATTERN.search(rationale) is not None


def normalize_for_dedupe(text: str) -> str:
    return " ".join(text.lower().split())


def rejection_reason(
    *,
    reward: float,
    threshold: float,
    origin: str,
    rationale: str,
    leakage_filter: bool,
    seen: set[str],
    dedupe: bool,
    kept_so_far: int,
    max_keep: int,
    reward_filter: bool = True,
) -> str | None:
    """Why a draw is not kept (None: keep it). The order of checks fixes which reason is reported. Without the
    reward filter (unfiltered distillation) a draw is kept whatever its reward."""
    if reward_filter and (reward < threshold or reward <= 0):
        return "reward"
    if leakage_filter and origin == "hinted" and leaks_hint(rationale):
        return "leakage"
    if dedupe and normalize_for_dedupe(rationale) in seen:
        return "duplicate"
    if kept_so_far >= max_keep:
        return "cap"
    return None
