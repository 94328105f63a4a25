"""The run an export reads: ``config.yaml``, ``state.json``, ``metrics.jsonl`` and the chosen round's adapter."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from fem.errors import FemError
from fem.mstep.adapters import ADAPTER_WEIGHTS, verify_adapter
from fem.state import STATE_FILE
from fem.utils.io import read_json, read_jsonl


class ExportError(FemError):
    """The run, the round or the destination cannot be exported as asked."""


@dataclass(frozen=True)
class RunSource:
    """What an export reads from a run dir: ``config.yaml`` (the record and its resolved config), ``state.json``,
    the ``metrics.jsonl`` lines by round, and the chosen round with its adapter folder."""

    root: Path
    record: dict[str, Any]
    config: dict[str, Any]
    state: dict[str, Any]
    rounds: dict[int, dict[str, Any]]
    round_index: int
    adapter: Path

    @property
    def model_name_or_path(self) -> str:
        return str(self.config.get("model_name_or_path") or "")


def _finished_adapters(root: Path, state: dict[str, Any]) -> list[int]:
    """Rounds whose M-step finished (``state.json``) and left an adapter folder."""
    done = [int(k) for k, phases in (state.get("completed") or {}).items() if "mstep" in phases]
    return sorted(k for k in done if (root / f"round_{k:03d}" / "adapter" / ADAPTER_WEIGHTS).is_file())


def read_run(run_dir: str | Path, round_index: int | None = None) -> RunSource:
    """The run in ``run_dir`` and its round ``round_index`` (default: the last round with a finished adapter)."""
    root = Path(run_dir)
    fix = "point to the output_dir of a `fem train` run"
    if not (root / STATE_FILE).is_file() or not (root / "config.yaml").is_file():
        raise ExportError(f"{root} is not a fem training run (no {STATE_FILE} and config.yaml)", fix=fix)
    try:
        state = read_json(root / STATE_FILE)
        record = yaml.safe_load((root / "config.yaml").read_text(encoding="utf-8")) or {}
    except (OSError, ValueError, yaml.YAMLError) as e:
        raise ExportError(f"{root}: unreadable run files ({type(e).__name__})", fix=fix) from None
    rounds = _finished_adapters(root, state)
    if not rounds:
        raise ExportError(f"{root} has no round with a finished adapter yet", fix="finish a round's M-step first")
    k = rounds[-1] if round_index is None else round_index
    if k not in rounds:
        raise ExportError(
            f"round {k} of {root} has no finished adapter (rounds with one: {', '.join(map(str, rounds))})",
            field="round",
            fix="choose one of those rounds",
        )
    adapter = root / f"round_{k:03d}" / "adapter"
    verify_adapter(adapter)
    lines = {int(m["round"]): m for m in read_jsonl(root / "metrics.jsonl") if isinstance(m.get("round"), int)}
    return RunSource(root, record, dict(record.get("config") or {}), state, lines, k, adapter)
