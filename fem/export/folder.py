"""A training run's round as a folder others load as is, with a hub model card (``README.md``).

- Adapter (default): the round's PEFT folder (``adapter_model.safetensors``, ``adapter_config.json``, tokenizer,
  chat template). ``base_model_name_or_path`` names the base's hub id when fem knows one (the embedded alias's
  original; a hub id), else the local base the run used.
- Merged (``merge=True``): a full transformers folder: the base model's float weights, loaded exactly as training
  saw them (a GGUF base de-quantised by ``fem.models.load_model``), plus the LoRA delta through PEFT's
  ``merge_and_unload``, saved as safetensors with its config, generation config (stopping on the tokenizer's EOS),
  tokenizer and chat template, which transformers and vLLM load without fem or PEFT.

The folder is built beside ``out`` and renamed into place, so an interrupted export leaves nothing at ``out``. Every
user error (not a run dir, no finished adapter in the round, ``out`` already there, a failed upload) is an
``ExportError``: one line from the CLI.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from huggingface_hub import HfApi
from peft import PeftModel
from transformers import AutoTokenizer

from fem.export.card import model_card
from fem.export.run import ExportError, RunSource, read_run
from fem.models import hub_id_of, load_model, load_tokenizer, torch_dtype
from fem.mstep.adapters import ADAPTER_CONFIG
from fem.utils.io import atomic_write_json, atomic_write_text, read_json

DTYPES = ("float32", "bfloat16", "float16")


def export_run(
    run_dir: str | Path,
    out: str | Path,
    *,
    round_index: int | None = None,
    merge: bool = False,
    dtype: str | None = None,
) -> Path:
    """Write round ``round_index`` of the run in ``run_dir`` to the new folder ``out`` (the adapter, or with
    ``merge`` the merged model in ``dtype``, default the run's own dtype or float32). Returns ``out``."""
    out = Path(out)
    if out.exists():
        raise ExportError(f"{out} already exists", field="out", fix="choose a new --out (export never overwrites)")
    if dtype is not None and dtype not in DTYPES:
        raise ExportError(f"unknown dtype '{dtype}'", field="dtype", fix=f"use one of {', '.join(DTYPES)}")
    source = read_run(run_dir, round_index)
    partial = out.with_name(f".{out.name}.partial-{os.getpid()}")
    if partial.exists():
        shutil.rmtree(partial)
    try:
        if merge:
            saved_dtype = dtype or (source.config.get("dtype") if source.config.get("dtype") in DTYPES else "float32")
            write_merged(source, partial, saved_dtype)
            card = model_card(source, merged=True, dtype=saved_dtype, folder_name=out.name)
        else:
            write_adapter(source, partial)
            card = model_card(source, merged=False, folder_name=out.name)
        atomic_write_text(partial / "README.md", card)
        _readable(partial)
        partial.rename(out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return out


def _readable(folder: Path) -> None:
    """Files as the user's umask makes new files (temp-file writes and safetensors leave them owner-only), so that
    a folder shared on a cluster is readable by whoever it is shared with."""
    mask = os.umask(0)
    os.umask(mask)
    for path in folder.iterdir():
        if path.is_file():
            path.chmod(0o666 & ~mask)


def write_adapter(source: RunSource, folder: Path) -> None:
    """The round's adapter folder as it is, its base model named by hub id where fem knows one."""
    shutil.copytree(source.adapter, folder)
    hub_id = hub_id_of(source.model_name_or_path)
    if hub_id:
        config = read_json(folder / ADAPTER_CONFIG)
        config["base_model_name_or_path"] = hub_id
        atomic_write_json(folder / ADAPTER_CONFIG, config)


def write_merged(source: RunSource, folder: Path, dtype: str) -> None:
    """Base (float, as training loaded it) + LoRA merged, saved with its tokenizer and generation config."""
    name, gguf = source.model_name_or_path, source.config.get("gguf_file")
    base = load_model(name, gguf_file=gguf, dtype="float32")
    merged = PeftModel.from_pretrained(base, str(source.adapter)).merge_and_unload()
    merged.to(torch_dtype(dtype))
    has_tokenizer = (source.adapter / "tokenizer_config.json").is_file()
    tokenizer = AutoTokenizer.from_pretrained(str(source.adapter)) if has_tokenizer else load_tokenizer(name)
    generation = merged.generation_config
    eos = generation.eos_token_id
    eos_ids = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in eos_ids:
        eos_ids.append(tokenizer.eos_token_id)
    generation.eos_token_id = eos_ids[0] if len(eos_ids) == 1 else eos_ids
    if generation.pad_token_id is None:
        generation.pad_token_id = tokenizer.pad_token_id
    merged.save_pretrained(str(folder), safe_serialization=True)
    tokenizer.save_pretrained(str(folder))


def push_folder(folder: Path, repo_id: str, *, private: bool = False) -> str:
    """Upload an exported folder to the hub repo ``repo_id`` (created if missing); returns the commit URL.
    Any failure (offline, no token, no network, no rights) is one ``ExportError`` line: the folder stays valid."""
    api = HfApi()
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        info = api.upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message="fem export")
    except Exception as e:  # noqa: BLE001 - whatever the hub client raises (offline mode, httpx, HTTP errors)
        first = (str(e).strip().splitlines() or [""])[0][:160]
        raise ExportError(
            f"could not push {folder} to the hub repo {repo_id} ({type(e).__name__}: {first})",
            field="push_to_hub",
            fix=f"the folder is complete; upload it when the hub is reachable: hf upload {repo_id} {folder}",
        ) from None
    return str(getattr(info, "commit_url", info))
