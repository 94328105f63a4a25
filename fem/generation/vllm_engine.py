"""Building the vLLM engine fem's ``vllm`` backend drives (this module imports vLLM: the registry reaches it only when a
recipe asks for ``backend: vllm``; ``vllm_env`` says, without importing vLLM, whether it can run here).

The engine is vLLM's offline ``LLM`` in **this process** by default (TRL's colocate style:
``VLLM_ENABLE_V1_MULTIPROCESSING=0``, a uni-process executor): it steps only when the backend asks, so an abort after
a ``stop_callback`` takes effect before the next token, and no engine process outlives the run. ``in_process=False``
gives vLLM's own engine process instead (the engine may run a few steps ahead of an abort; results are the same).

Engine settings fem fixes, whatever the recipe says (each one is part of the statistics contract):

- ``logprobs_mode="processed_logprobs"``: the sampled token's log-prob is ``logq`` (after temperature/top-k/top-p);
- ``logits_processors=[StatsTracker]``: base ``logp`` and entropy from the raw logits (``vllm_stats``), fetched by
  ``collective_rpc`` through ``worker_extension_cls=FemWorkerExtension`` (``vllm_worker``);
- ``async_scheduling=False``: the tracker reads positions from the live output lists;
- ``enable_chunked_prefill=False`` (``max_num_batched_tokens >= max_model_len``): a per-request ``seed`` crashes the
  CPU engine when a prompt is split across steps ("CPU Generator does not use offset", vLLM rewinds the generator of a
  discarded partial-prefill sample); whole-prompt scheduling keeps seeded sampling reproducible for any prompt length;
- ``skip_tokenizer_init=True`` and ``generation_config="vllm"``: vLLM sees token ids only and takes no sampling
  defaults from the model's generation config (each request also sets ``ignore_eos``, see ``VLLMBackend``: a request
  stops on the backend's EOS ids only, as in the ``hf`` backend).

**Under a launcher** (``accelerate launch``, torchrun): when this process already belongs to a ``torch.distributed``
group of several processes, each rank builds its own engine with ``distributed_executor_backend="external_launcher"``
(TRL's colocate mode): vLLM reuses the launcher's group (``RANK``/``LOCAL_RANK`` from the environment) as external
data parallelism, so every rank decodes its own shard of the E-step independently. vLLM's engine-closing teardown
would destroy that group; ``shutdown_engine`` keeps it for the launcher.

In-process construction has side effects vLLM intends for its own process; ``create_engine`` undoes those that would
leak into fem's (global RNG seeding, ``torch.set_num_threads`` turned into a no-op, ``gc.freeze``, the frozen
environment-variable cache). One stays: alone, vLLM initialises a one-process ``torch.distributed`` group, which TRL's
M-step in the same process tolerates (tested).

On CPU the engine uses the caller's torch threads (no vLLM thread binding in-process) and needs head sizes its
attention kernels support (``check_head_dim``).
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import random
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import torch
import torch.distributed as dist
from transformers import AutoConfig
from vllm import LLM, envs
from vllm.platforms import current_platform
from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend

from fem.errors import ConfigError
from fem.generation.vllm_env import engine_dtype, lora_rank_bound, vllm_problem, weights_dtype
from fem.generation.vllm_stats import StatsTracker
from fem.generation.vllm_worker import FemWorkerExtension

DEFAULT_CPU_KV_CACHE_GIB = 1.0
CPU_BLOCK_SIZE = 32  # fem's KV block size on CPU (the smallest vLLM's CPU kernels take; vLLM's own default is 128)


@dataclass
class EngineOptions:
    """Engine settings a recipe may choose (``vllm_*`` keys). ``dtype="auto"`` follows the loaded model."""

    dtype: str = "auto"
    max_model_len: int | None = None  # None: the model's own context length
    kv_cache_gib: float | None = None  # KV-cache size; default: 1 GiB on CPU, gpu_memory_utilization on a GPU
    gpu_memory_utilization: float = 0.5
    tensor_parallel_size: int = 1
    enable_prefix_caching: bool = True
    enforce_eager: bool = True
    max_num_seqs: int = 256
    adapter_mode: str = "merge"  # merge: adapters merged into the served weights (no LoRA layers); lora: vLLM LoRA
    max_lora_rank: int = 16
    lora_target_modules: tuple[str, ...] | None = None  # None: every layer vLLM can wrap, the logits' lm_head too
    block_size: int | None = None  # None: the engine's default (128 on CPU, 16 on GPU)
    in_process: bool = True
    seed: int = 0
    trust_remote_code: bool = False  # the model config's, as transformers loaded the model


def options_from_configs(configs: Any, model: Any) -> EngineOptions:
    """The engine options a recipe asks for: its ``vllm_*`` keys, the LoRA rank and target modules of its M-step,
    and on CPU 32-token KV blocks unless the recipe sets ``vllm_block_size`` (only full blocks are prefix-cached: a
    forced read-out re-encodes less than a block of its prompt, a power_mh proposal less than a block of its kept
    prefix; 32 is the least vLLM's CPU kernels take, and decoding measured no slower than with vLLM's 128)."""
    e = configs.engine
    block_size = e.vllm_block_size
    if block_size is None and current_platform.is_cpu():
        block_size = CPU_BLOCK_SIZE
    model_dtype = weights_dtype(model) if model is not None else configs.model.dtype
    return EngineOptions(
        dtype=engine_dtype(e.vllm_dtype, model_dtype),
        max_model_len=e.vllm_max_model_len,
        kv_cache_gib=e.vllm_kv_cache_gib,
        gpu_memory_utilization=e.vllm_gpu_memory_utilization,
        tensor_parallel_size=e.vllm_tensor_parallel_size,
        enable_prefix_caching=e.vllm_enable_prefix_caching,
        enforce_eager=e.vllm_enforce_eager,
        max_num_seqs=e.vllm_max_num_seqs,
        block_size=block_size,
        adapter_mode=e.vllm_adapter_mode,
        max_lora_rank=configs.model.lora_r,
        lora_target_modules=lora_module_names(model, configs.model.lora_target_modules),
        seed=configs.mstep.seed,
        trust_remote_code=bool(configs.mstep.trust_remote_code),
    )


def lora_module_names(model: Any, targets: Any) -> tuple[str, ...]:
    """The module names fem's adapters may target, for vLLM's ``lora_target_modules``: the recipe's list, or for
    ``all-linear`` (and PEFT's default) every linear layer but the output embeddings. Left unrestricted, vLLM would
    also wrap the logits (``lm_head``), which costs a vocabulary-wide LoRA product per decoded token on CPU."""
    if isinstance(targets, str) and targets != "all-linear":
        targets = [targets]
    if targets and targets != "all-linear":
        return tuple(sorted({str(t) for t in targets}))
    output = model.get_output_embeddings()
    linear = {name.rpartition(".")[2] for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    heads = {name.rpartition(".")[2] for name, m in model.named_modules() if m is output}
    return tuple(sorted(linear - heads))


def check_head_dim(model_dir: str) -> None:
    """vLLM's CPU attention supports a fixed set of head sizes; fail here rather than at the first request."""
    if not current_platform.is_cpu():
        return
    config_path = Path(model_dir) / "config.json"
    if not config_path.is_file():
        return
    config = json.loads(config_path.read_text())
    heads = config.get("num_attention_heads")
    head_dim = config.get("head_dim") or (
        config["hidden_size"] // heads if heads and "hidden_size" in config else None
    )
    if head_dim is None:
        return
    supported = CPUAttentionBackend.get_supported_head_sizes()
    if head_dim not in supported:
        raise ConfigError(
            f"head size {head_dim} of {model_dir} is not supported by vLLM's CPU attention ({supported})",
            field="backend",
            fix="use backend: hf for this model",
        )


def context_length(model_dir: str) -> int:
    """The model's own maximum sequence length (what vLLM derives when ``max_model_len`` is not given)."""
    config = AutoConfig.from_pretrained(model_dir)
    config = getattr(config, "text_config", None) or config
    return int(getattr(config, "max_position_embeddings", None) or 2048)


def engine_kwargs(model_dir: str, options: EngineOptions, model_dtype: str) -> dict[str, Any]:
    """Keyword arguments of ``vllm.LLM`` for ``options`` plus the settings fem fixes (module docstring)."""
    dtype = model_dtype if options.dtype == "auto" else options.dtype
    max_model_len = options.max_model_len or context_length(model_dir)
    kwargs: dict[str, Any] = dict(
        model=str(model_dir),
        dtype=dtype,
        max_model_len=max_model_len,
        tensor_parallel_size=options.tensor_parallel_size,
        enable_prefix_caching=options.enable_prefix_caching,
        enforce_eager=options.enforce_eager,
        max_num_seqs=options.max_num_seqs,
        seed=options.seed,
        trust_remote_code=options.trust_remote_code,
        logprobs_mode="processed_logprobs",
        logits_processors=[StatsTracker],
        worker_extension_cls=f"{FemWorkerExtension.__module__}.{FemWorkerExtension.__qualname__}",
        async_scheduling=False,
        enable_chunked_prefill=False,
        max_num_batched_tokens=max(max_model_len, 2048),
        skip_tokenizer_init=True,
        generation_config="vllm",
        gpu_memory_utilization=options.gpu_memory_utilization,
    )
    kv_gib = options.kv_cache_gib
    if kv_gib is None and current_platform.is_cpu():
        kv_gib = DEFAULT_CPU_KV_CACHE_GIB
    if kv_gib is not None:
        kwargs["kv_cache_memory_bytes"] = int(kv_gib * (1 << 30))
    if options.block_size is not None:
        kwargs["block_size"] = options.block_size
    if options.adapter_mode == "lora":
        kwargs.update(enable_lora=True, max_lora_rank=lora_rank_bound(options.max_lora_rank), max_loras=1)
        if options.lora_target_modules is not None:
            kwargs["lora_target_modules"] = list(options.lora_target_modules)
    if options.in_process and launched_world_size() > 1:
        kwargs["distributed_executor_backend"] = "external_launcher"
    return kwargs


def launched_world_size() -> int:
    """Processes in the ``torch.distributed`` group this process already belongs to (1 when there is none)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _no_tokenizer_warmup(record: logging.LogRecord) -> bool:
    """Drop vLLM's "Chat template warmup failed" traceback: the engine has no tokenizer by design."""
    return record.getMessage() != "Chat template warmup failed"


@contextlib.contextmanager
def _contained_side_effects(in_process: bool):
    """Keep what vLLM's engine construction does to its host process out of fem's process."""
    saved_env = os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING")
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "1" if not in_process else "0"
    envs.disable_envs_cache()  # an earlier engine froze the variables (vllm.envs.enable_envs_cache)
    rng = (random.getstate(), np.random.get_state(), torch.get_rng_state())
    set_num_threads, threads = torch.set_num_threads, torch.get_num_threads()
    renderer_log = logging.getLogger("vllm.renderers.base")
    renderer_log.addFilter(_no_tokenizer_warmup)
    try:
        yield
    finally:
        renderer_log.removeFilter(_no_tokenizer_warmup)
        torch.set_num_threads = set_num_threads
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        random.setstate(rng[0])
        np.random.set_state(rng[1])
        torch.set_rng_state(rng[2])
        gc.unfreeze()
        envs.disable_envs_cache()
        if saved_env is None:
            os.environ.pop("VLLM_ENABLE_V1_MULTIPROCESSING", None)
        else:
            os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = saved_env


_LIVE_IN_PROCESS: list[weakref.ref] = []  # the in-process engine of this process, while it is open


def create_engine(model_dir: str, options: EngineOptions, model_dtype: str = "float32"):
    """A ``vllm.LLM`` over the Hugging Face folder ``model_dir`` (see the module docstring for what is fixed).

    At most one in-process engine may be open per process: vLLM keeps its distributed state in module globals, shared
    by every in-process engine, and closing one tears that state down under the others."""
    _LIVE_IN_PROCESS[:] = [ref for ref in _LIVE_IN_PROCESS if ref() is not None]
    if options.in_process and _LIVE_IN_PROCESS:
        raise RuntimeError(
            "an in-process vLLM engine is already open in this process (vLLM's distributed state is per process): "
            "close() its backend first, or build this one with in_process=False"
        )
    problem = vllm_problem(options.dtype if options.dtype != "auto" else model_dtype, options.block_size)
    if problem is not None:
        raise ConfigError(problem[0], field="backend", fix=problem[1])
    check_head_dim(model_dir)
    kwargs = engine_kwargs(model_dir, options, model_dtype)
    with _contained_side_effects(options.in_process):
        llm = LLM(**kwargs)
    if options.in_process:
        _LIVE_IN_PROCESS.append(weakref.ref(llm))
        llm._fem_launcher_group = kwargs.get("distributed_executor_backend") == "external_launcher"
    return llm


def shutdown_engine(llm: Any) -> None:
    """Stop the engine (its process, when it has one) and free its memory. In-process, this also tears down vLLM's
    distributed state (``EngineCore.shutdown``), after which another in-process engine may be created; a launcher's
    process group survives it (vLLM would destroy it: the launcher owns it)."""
    _LIVE_IN_PROCESS[:] = [ref for ref in _LIVE_IN_PROCESS if ref() is not None and ref() is not llm]
    engine = getattr(llm, "llm_engine", None)
    core = getattr(engine, "engine_core", None)
    if core is None:
        return
    keep_group = (
        mock.patch.object(dist, "destroy_process_group", lambda *args, **kwargs: None)
        if getattr(llm, "_fem_launcher_group", False)
        else contextlib.nullcontext()
    )
    with keep_group, contextlib.suppress(Exception):
        core.shutdown()
