"""Run state: which phase of which round is finished, written atomically after each phase, and the run's
fingerprint, so that ``fem train`` on an existing output dir resumes instead of redoing or mixing runs.

The fingerprint is the whole resolved config (fem's configs, the model config and every ``trl.SFTConfig`` field but
an explicit allow-list of settings that cannot change a result) plus the sha256 of every data and template file the
run reads. ``state.json`` stores paths relative to the output dir (a moved or copied run dir resumes from its own
files) and is checked field by field when it is read.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fem.errors import ConfigError
from fem.run_configs import Configs
from fem.rundir import (
    CONFIG_FILE,
    STATE_FILE,
    check_dir_path,
    clear_run,
    foreign_entries,
    holds_fem_run,
    remove_stale_temp_files,
    run_entries,
)
from fem.utils.io import atomic_write_json, read_json

PHASES = ("estep", "mstep", "eval")
# Keys that may change between a run and its resumption without changing any result already on disk.
RESUMABLE_KEYS = {"rounds", "dry_run", "overwrite_output_dir_contents", "proposals", "adapter", "eval_before_training"}
# trl.SFTConfig / TrainingArguments fields that cannot change a trained adapter: where logs, checkpoints and hub
# pushes go, how verbose it is, per-process values, and the evaluation settings of a Trainer the M-step never uses.
MSTEP_NEUTRAL_KEYS = frozenset(
    {
        "output_dir", "run_name", "project", "report_to", "disable_tqdm", "log_level", "log_level_replica",
        "log_on_each_node", "logging_dir", "logging_strategy", "logging_steps", "logging_first_step",
        "logging_nan_inf_filter", "include_num_input_tokens_seen", "skip_memory_metrics", "debug",
        "save_strategy", "save_steps", "save_total_limit", "save_on_each_node", "save_only_model",
        "save_safetensors", "enable_jit_checkpoint", "overwrite_output_dir", "resume_from_checkpoint",
        "push_to_hub", "hub_token", "hub_model_id", "hub_strategy", "hub_private_repo", "hub_always_push",
        "hub_revision", "trackio_space_id", "trackio_bucket_id", "trackio_static_space_id",
        "local_rank", "ddp_timeout", "dataloader_num_workers", "dataloader_pin_memory",
        "dataloader_persistent_workers", "dataloader_prefetch_factor", "dataloader_multiprocessing_context",
        "dataset_num_proc", "do_train", "do_eval", "do_predict", "eval_strategy", "eval_steps", "eval_delay",
        "eval_on_start", "eval_accumulation_steps", "eval_do_concat_batches", "eval_use_gather_object",
        "eval_packing", "per_device_eval_batch_size", "prediction_loss_only", "include_for_metrics",
        "batch_eval_metrics", "bf16_full_eval", "fp16_full_eval", "load_best_model_at_end",
        "metric_for_best_model", "greater_is_better", "torch_empty_cache_steps",
    }
)  # fmt: skip
ADAPTER_PATH = re.compile(r"^round_\d{3,}/adapter$")


def run_config(configs: Configs, inputs: dict[str, list[str]]) -> dict[str, Any]:
    """The resolved config recorded in ``config.yaml`` and fingerprinted in ``state.json``: every field of every
    config (the M-step's in ``mstep``) and ``inputs``, the digests of the files the run reads (``input_digests``)."""
    mstep = json.loads(json.dumps(configs.mstep.to_dict(), default=str))
    return {**configs.flat(), "mstep": mstep, "inputs": inputs}


def fingerprint(config: dict[str, Any]) -> dict[str, Any]:
    """The part of a resolved config that determines a run's results."""
    out = {k: v for k, v in sorted(config.items()) if k not in RESUMABLE_KEYS}
    if isinstance(out.get("mstep"), dict):
        out["mstep"] = {k: v for k, v in sorted(out["mstep"].items()) if k not in MSTEP_NEUTRAL_KEYS}
    return out


def fingerprint_hash(config: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(fingerprint(config), sort_keys=True, default=str).encode()).hexdigest()[:16]


def differing_keys(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The fingerprinted keys whose values differ (``mstep.max_steps``, ``inputs.train``, ...)."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict) and key in ("mstep", "inputs"):
            out += [f"{key}.{k}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        elif a != b:
            out.append(key)
    return out


def _state_error(path: Path, message: str, name: str | None = None) -> ConfigError:
    return ConfigError(
        f"{path}{f', field {name!r}' if name else ''}: {message}",
        field="output_dir",
        fix="restore state.json from a copy, choose a new output_dir, or start over with "
        "--overwrite_output_dir_contents true",
    )


@dataclass
class RunState:
    """What is finished. ``completed`` maps a round index (as a string) to its finished phases; ``last_adapter`` is
    relative to the output dir (``round_001/adapter``)."""

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

    def unmark(self, round_index: int, phase: str) -> None:
        """Forget that ``phase`` (and the phases after it) of a round finished: it is done again."""
        phases = self.completed.get(str(round_index), [])
        self.completed[str(round_index)] = [p for p in phases if PHASES.index(p) < PHASES.index(phase)]

    def adapter_path(self, output_dir: Path) -> Path | None:
        """The last finished round's adapter dir inside ``output_dir`` (None before the first M-step)."""
        return output_dir / self.last_adapter if self.last_adapter else None

    def save(self, output_dir: Path) -> None:
        atomic_write_json(output_dir / STATE_FILE, asdict(self))

    @classmethod
    def from_json(cls, data: Any, path: Path) -> RunState:
        """A state read from ``path``, checked field by field (a wrong type must never let a run skip work)."""
        if not isinstance(data, dict):
            raise _state_error(path, f"is a JSON {type(data).__name__}, not an object")
        types = {"config_hash": str, "config": dict, "baseline_done": bool, "completed": dict, "finished": bool}
        unknown = sorted(data.keys() - {*types, "last_adapter"})
        if unknown:
            raise _state_error(path, "is not a field of fem's run state", unknown[0])
        for name, kind in types.items():
            if name not in data or not isinstance(data[name], kind):
                got = type(data[name]).__name__ if name in data else "nothing"
                raise _state_error(path, f"must be a {kind.__name__}, got {got}", name)
        for k, phases in data["completed"].items():
            if not k.isdigit() or not isinstance(phases, list) or not all(p in PHASES for p in phases):
                raise _state_error(
                    path, f"round {k!r}: {phases!r:.60} is not a list of {', '.join(PHASES)}", "completed"
                )
        last = data.get("last_adapter")
        if last is not None:
            if not isinstance(last, str):
                raise _state_error(path, f"must be a path or null, got {type(last).__name__}", "last_adapter")
            last = "/".join(Path(last).parts[-2:])  # runs before fem 0.1.1 stored it relative to their cwd
            if not ADAPTER_PATH.match(last):
                raise _state_error(path, f"{last!r:.80} is not round_NNN/adapter", "last_adapter")
        return cls(**{**data, "last_adapter": last})

    @classmethod
    def load(cls, output_dir: Path) -> RunState:
        """The state in ``output_dir``; a one-line ``ConfigError`` when it is unreadable or malformed."""
        path = output_dir / STATE_FILE
        try:
            data = read_json(path)
        except (OSError, ValueError) as e:  # ValueError: bad JSON, or bytes that are not UTF-8
            raise _state_error(path, f"is unreadable ({type(e).__name__}: {str(e)[:120]})") from None
        return cls.from_json(data, path)

    @classmethod
    def load_or_create(cls, output_dir: Path, config: dict[str, Any], *, overwrite: bool) -> RunState:
        """Resume the run in ``output_dir`` if it has the same fingerprint; refuse one that belongs to another config
        unless ``overwrite``, which removes that run's files (only fem's) first. Removes the temp files of writes a
        crash interrupted. Call it holding the run lock, on the main process only."""
        status = check_output_dir(output_dir, config, overwrite=overwrite)
        if status == "resume":
            state = cls.load(output_dir)
        else:
            if status.startswith("overwrite"):
                clear_run(output_dir)
            state = cls(config_hash=fingerprint_hash(config), config=fingerprint(config))
        if output_dir.is_dir():
            remove_stale_temp_files(output_dir)
        return state


def check_output_dir(output_dir: Path, config: dict[str, Any], *, overwrite: bool) -> str:
    """What a run of ``config`` would do in ``output_dir``: ``new``, ``resume`` or ``overwrite (...)``, or a
    ``ConfigError`` for a dir that cannot be one (a file, under a file, in /proc), that holds files of no fem run
    (even with ``overwrite``: it only replaces a fem run), or a run of another config. Writes nothing."""
    check_dir_path(output_dir)
    if not output_dir.exists():
        return "new"
    if not holds_fem_run(output_dir):
        foreign = foreign_entries(output_dir)
        if foreign:
            raise ConfigError(
                f"{output_dir} is not empty and holds no fem run (it holds {', '.join(foreign[:3])}"
                + (", ..." if len(foreign) > 3 else "")
                + ")",
                field="output_dir",
                fix="choose a new or empty output_dir (overwrite_output_dir_contents only replaces a fem run)",
            )
        return "new"
    if not (output_dir / STATE_FILE).exists():
        # a run killed before its first state.json left only its config.yaml (and the lock): it starts anew
        leftovers = [p.name for p in run_entries(output_dir) if p.name != CONFIG_FILE]
        if not leftovers:
            return "new"
        if overwrite:
            return "overwrite (replaces the run in it)"
        raise ConfigError(
            f"{output_dir} holds a fem run ({', '.join(leftovers[:3])}) whose {STATE_FILE} is missing",
            field="output_dir",
            fix="restore state.json, or start over with --overwrite_output_dir_contents true",
        )
    old = RunState.load(output_dir)
    if old.config_hash == fingerprint_hash(config):
        return "resume"
    if overwrite:
        return "overwrite (replaces the run in it)"
    differs = differing_keys(old.config, fingerprint(config))
    raise ConfigError(
        f"the output dir holds a run with a different config (differs in: {', '.join(differs[:6]) or 'its version'})",
        field="output_dir",
        fix="choose a new output_dir, restore the old values, or pass --overwrite_output_dir_contents true",
    )
