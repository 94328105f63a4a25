"""Run state: which phase of which round is finished, written atomically after each phase, and the run's
fingerprint, so that ``fem train`` on an existing output dir resumes instead of redoing or mixing runs."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fem.errors import ConfigError
from fem.run_configs import Configs
from fem.utils.io import atomic_write_json, is_temp_file, read_json, remove_stale_temp_files

STATE_FILE = "state.json"
PHASES = ("estep", "mstep", "eval")

# M-step settings that change a run's results (with every field of fem's own configs and the model's).
MSTEP_RESULT_KEYS = (
    "seed",
    "learning_rate",
    "num_train_epochs",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "max_length",
    "lr_scheduler_type",
    "warmup_steps",
    "weight_decay",
)
# Keys that may change between a run and its resumption without changing any result already on disk.
RESUMABLE_KEYS = {"rounds", "dry_run", "overwrite_output_dir_contents", "proposals", "adapter", "eval_before_training"}


def run_config(configs: Configs) -> dict[str, Any]:
    """The resolved config recorded in ``config.yaml`` and fingerprinted in ``state.json``."""
    return {**configs.flat(), **{k: getattr(configs.mstep, k, None) for k in MSTEP_RESULT_KEYS}}


def fingerprint(config: dict[str, Any]) -> dict[str, Any]:
    """The part of a resolved config that determines a run's results."""
    return {k: v for k, v in sorted(config.items()) if k not in RESUMABLE_KEYS}


def fingerprint_hash(config: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(fingerprint(config), sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class RunState:
    """What is finished. ``completed`` maps a round index (as a string) to its finished phases."""

    config_hash: str
    config: dict[str, Any]
    baseline_done: bool = False
    completed: dict[str, list[str]] = field(default_factory=dict)
    last_adapter: str | None = None
    finished: bool = False

    def done(self, round_index: int, phase: str) -> bool:
        return phase in self.completed.get(str(round_index), [])

    def mark(self, round_index: int, phase: str) -> None:
        phases = self.completed.setdefault(str(round_index), [])
        if phase not in phases:
            phases.append(phase)

    def save(self, output_dir: Path) -> None:
        atomic_write_json(output_dir / STATE_FILE, asdict(self))

    @classmethod
    def load_or_create(
        cls, output_dir: Path, config: dict[str, Any], *, overwrite: bool, clean: bool = True
    ) -> RunState:
        """Resume the run in ``output_dir`` if it has the same config; refuse one that belongs to another config.
        With ``clean``, temp files of writes a crash interrupted are removed (never for another config's dir)."""
        state = cls._load_or_create(output_dir, config, overwrite=overwrite)
        if clean and output_dir.is_dir():
            remove_stale_temp_files(output_dir)
        return state

    @classmethod
    def _load_or_create(cls, output_dir: Path, config: dict[str, Any], *, overwrite: bool) -> RunState:
        path = output_dir / STATE_FILE
        new = cls(config_hash=fingerprint_hash(config), config=fingerprint(config))
        if not path.exists():
            return new
        try:
            old = cls(**read_json(path))
        except (json.JSONDecodeError, TypeError, OSError) as e:
            raise ConfigError(
                f"{path} is unreadable ({e})", field="output_dir", fix="choose a new output_dir or remove the old run"
            ) from None
        if old.config_hash != new.config_hash and not overwrite:
            differs = sorted(k for k in set(old.config) | set(new.config) if old.config.get(k) != new.config.get(k))
            raise ConfigError(
                f"the output dir holds a run with a different config (differs in: {', '.join(differs[:6])})",
                field="output_dir",
                fix="choose a new output_dir, restore the old values, or pass --overwrite_output_dir_contents true",
            )
        return old if old.config_hash == new.config_hash else new


def check_output_dir(output_dir: Path, config: dict[str, Any], *, overwrite: bool) -> str:
    """For --dry_run: 'new', 'resume' or an error when the dir belongs to another config. Writes nothing."""
    if output_dir.exists() and not output_dir.is_dir():
        raise ConfigError(
            f"{output_dir} is not a directory", field="output_dir", fix="choose a new output_dir (a directory path)"
        )
    if not (output_dir / STATE_FILE).exists():
        # a run killed before its first state.json left only config.yaml (and a temp file): it resumes as new
        leftovers = {p.name for p in output_dir.iterdir() if not is_temp_file(p)} if output_dir.exists() else set()
        if leftovers - {"config.yaml"} and not overwrite:
            raise ConfigError(
                f"{output_dir} is not empty and holds no fem run",
                field="output_dir",
                fix="choose a new or empty output_dir",
            )
        return "new"
    RunState.load_or_create(output_dir, config, overwrite=overwrite, clean=False)
    return "resume"
