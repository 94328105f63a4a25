"""EngineConfig: the settings of the vLLM engine behind ``backend: vllm`` (``vllm_*`` keys; ignored by ``hf``).

fem fixes the settings its statistics contract depends on (``fem/generation/vllm_engine.py``); these are the ones a
user may choose. The defaults run the CPU demo.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fem.validation import validate_fields

VLLM_DTYPES = ("auto", "fastest", "float32", "bfloat16", "float16")
VLLM_BLOCK_SIZES = (16, 32, 64, 128, 256)


@dataclass
class EngineConfig:
    """> Parameters of the vLLM engine (backend: vllm)."""

    vllm_dtype: str = field(
        default="auto",
        metadata={
            "help": "vLLM weights dtype: auto (the loaded model's dtype), fastest (bfloat16 where the CPU has "
            "avx512_bf16/AMX or the GPU bf16, else the model's dtype), float32, bfloat16, float16.",
            "choices": VLLM_DTYPES,
        },
    )
    vllm_max_model_len: int | None = field(
        default=None,
        metadata={
            "help": "Longest prompt + completion in tokens (default: the model's context length).",
            "min": 16,
            "fix": "set e.g. 4096, or remove it (the model's context length)",
        },
    )
    vllm_kv_cache_gib: float | None = field(
        default=None,
        metadata={
            "help": "KV-cache size in GiB (default: 1 on CPU; on a GPU, vllm_gpu_memory_utilization decides).",
            "gt": 0,
            "fix": "set e.g. 1 (GiB), or remove it",
        },
    )
    vllm_gpu_memory_utilization: float = field(
        default=0.5,
        metadata={
            "help": "Fraction of GPU memory for weights + KV cache (GPU only; the rest is the M-step's).",
            "gt": 0,
            "max": 1,
            "fix": "set e.g. 0.5",
        },
    )
    vllm_tensor_parallel_size: int = field(
        default=1,
        metadata={"help": "Tensor-parallel size (GPUs per engine).", "min": 1, "fix": "set 1 (one device)"},
    )
    vllm_enable_prefix_caching: bool = field(
        default=True,
        metadata={"help": "Automatic prefix caching (forced read-outs and power_mh proposals reuse cached blocks)."},
    )
    vllm_block_size: int | None = field(
        default=None,
        metadata={
            "help": "KV-cache block size in tokens (only full blocks are prefix-cached). Default: 32 on CPU (the "
            "least vLLM's CPU attention takes: read-outs and power_mh proposals re-encode less), the engine's own on "
            "a GPU (16). CPU attention needs a multiple of 32.",
            "choices": VLLM_BLOCK_SIZES,
        },
    )
    vllm_max_num_seqs: int = field(
        default=256,
        metadata={"help": "Most sequences the engine decodes together.", "min": 1, "fix": "set e.g. 256"},
    )
    vllm_adapter_mode: str = field(
        default="merge",
        metadata={
            "help": "How each round's LoRA adapter is served: merge (its weights merged into the engine's, as TRL's "
            "colocate sync does: the engine runs without LoRA, as fast as the base model) or lora (vLLM's LoRA "
            "layers, a new adapter id per round; DoRA adapters need it).",
            "choices": ("merge", "lora"),
        },
    )
    vllm_enforce_eager: bool = field(
        default=True,
        metadata={
            "help": "No CUDA graphs / torch.compile: fast start. false (the GPU recipes; vLLM's own default) compiles "
            "at start-up (about a minute on CPU) and then decodes faster (CPU bf16: 1.1-1.7x; BENCHMARKS section 11)."
        },
    )

    def __post_init__(self) -> None:
        validate_fields(self)
