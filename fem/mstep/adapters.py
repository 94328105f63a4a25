"""Saving and verifying LoRA adapters: never an empty file (the LoRA + ZeRO-3 failure TRL users hit)."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import broadcast_object_list
from safetensors import SafetensorError
from safetensors.torch import load_file

from fem.errors import FemError
from fem.utils.faults import crash_point
from fem.utils.logging import get_logger

logger = get_logger(__name__)

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"


class AdapterError(FemError):
    """A saved adapter is missing, empty or unreadable."""


class NonFiniteAdapterError(AdapterError):
    """A saved adapter holds NaN or infinite values (a diverged M-step): it must never be evaluated or trained on."""


def verify_adapter(path: str | Path) -> dict[str, Any]:
    """Check an adapter dir holds a readable config and non-empty, finite LoRA tensors; returns tensor count, values
    and sum |w|. ``AdapterError`` (one line) otherwise: ``NonFiniteAdapterError`` when a value is NaN or infinite."""
    path = Path(path)
    weights, config = path / ADAPTER_WEIGHTS, path / ADAPTER_CONFIG
    if not weights.is_file() or not config.is_file():
        raise AdapterError(
            f"{path} lacks {ADAPTER_WEIGHTS} or {ADAPTER_CONFIG}", fix="re-run the M-step of this round"
        )
    try:
        json.loads(config.read_text(encoding="utf-8"))
        tensors = load_file(str(weights))
    except (OSError, ValueError, SafetensorError) as e:  # truncated or overwritten files
        raise AdapterError(
            f"{path} is damaged ({type(e).__name__}: {str(e)[:120]})", fix="re-run the M-step of this round"
        ) from None
    numel = sum(t.numel() for t in tensors.values())
    empty = [name for name, t in tensors.items() if t.numel() == 0]
    if not tensors or numel == 0 or empty:
        raise AdapterError(
            f"{weights} holds empty tensors ({len(empty)} of {len(tensors)})",
            fix="re-run the M-step (ZeRO-3 saves need a gathered state dict)",
        )
    bad = [name for name, t in tensors.items() if not bool(torch.isfinite(t).all())]
    if bad:
        raise NonFiniteAdapterError(
            f"{weights} holds NaN or infinite values in {len(bad)} of {len(tensors)} tensors (the M-step diverged)",
            fix="lower learning_rate or max_grad_norm, then train again in a new output_dir",
        )
    return {
        "tensors": len(tensors),
        "values": int(numel),
        "abs_sum": float(sum(t.float().abs().sum() for t in tensors.values())),
    }


@contextlib.contextmanager
def disk_errors(path: Path) -> Iterator[None]:
    """safetensors reports a full disk as a ``SafetensorError`` ("... (os error 28)"): raise it as the ``OSError``
    it is, which the CLI turns into its one-line "free space, then resume" error."""
    try:
        yield
    except SafetensorError as e:
        for code in (errno.ENOSPC, errno.EDQUOT):
            if f"(os error {code})" in str(e):
                raise OSError(code, os.strerror(code), str(path)) from e
        raise


def _gathered_save(trainer, out: Path) -> None:
    """Save from a gathered full state dict (ZeRO-3 partitions parameters; a plain save writes empty tensors)."""
    state_dict = trainer.accelerator.get_state_dict(trainer.deepspeed if trainer.deepspeed else trainer.model)
    if trainer.accelerator.is_main_process:
        model = trainer.accelerator.unwrap_model(trainer.model)
        model.save_pretrained(str(out), state_dict=state_dict, safe_serialization=True)


def save_adapter(trainer, adapter_dir: Path) -> dict[str, Any]:
    """Save the trained adapter to ``adapter_dir`` atomically (a temp dir renamed into place) on every rank's
    call (a ZeRO-3 save is a collective), and verify it; falls back to a gathered save when the first is empty."""
    accelerator = trainer.accelerator
    tmp = adapter_dir.with_name(adapter_dir.name + ".tmp")
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    with disk_errors(tmp):
        trainer.save_model(str(tmp))
    accelerator.wait_for_everyone()
    ok, diverged = True, None
    if accelerator.is_main_process:
        try:
            verify_adapter(tmp)
        except NonFiniteAdapterError as e:
            diverged = e.message
        except AdapterError as e:
            logger.warning("adapter save was empty (%s); saving again from a gathered state dict", e)
            ok = False
    if accelerator.num_processes > 1:
        flag = [ok, diverged]
        broadcast_object_list(flag, from_process=0)
        ok, diverged = flag
    if diverged is not None:  # every rank stops with the same line; nothing is renamed into place
        raise NonFiniteAdapterError(diverged, fix="lower learning_rate or max_grad_norm, then train again")
    if not ok:
        with disk_errors(tmp):
            _gathered_save(trainer, tmp)
        accelerator.wait_for_everyone()
    stats: dict[str, Any] = {}
    if accelerator.is_main_process:
        stats = verify_adapter(tmp)
        for extra in ("README.md", "training_args.bin"):
            (tmp / extra).unlink(missing_ok=True)
        crash_point("mstep.adapter_saved")
        if adapter_dir.exists():
            shutil.rmtree(adapter_dir)
        tmp.rename(adapter_dir)
    accelerator.wait_for_everyone()
    return stats
