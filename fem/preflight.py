"""Validate before compute: every check a command can make without loading a model, in one place.

``preflight`` resolves the model source and checks the backend, task, proposal and tracker names, the task's field
mapping, the data of the splits the command reads, and on request the adapter to evaluate and the output dir to train
in.
A recipe error names the recipe file (a data error its data file). Each command prints its plan from the
``Preflight`` it gets back (``--dry_run`` stops there).
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fem.configs.choices import DEFAULT_CONFIDENCE_TARGET
from fem.errors import ConfigError
from fem.eval.scaling import check_disjoint
from fem.generation import check_backend
from fem.generation.vllm_env import engine_dtype as resolve_engine_dtype
from fem.models import resolve_model_source
from fem.mstep.adapters import ADAPTER_CONFIG, AdapterError, verify_adapter
from fem.proposals import check_proposal_name
from fem.run_configs import Configs
from fem.rundir import STATE_FILE
from fem.state import RunState, check_output_dir, run_config
from fem.tasks import build_task, check_task_name, input_digests, validate_task_data
from fem.tracking import report_to_names


@dataclass(frozen=True)
class Preflight:
    """What the checks found: the model's folder (and GGUF file), examples per split read, the adapter to load,
    and the output dir's status (``new``, ``resume`` or ``not checked``)."""

    model_source: tuple[str, str | None]
    data: dict[str, int]
    adapter: str | None = None
    output_status: str = "not checked"
    data_formats: dict[str, str] = field(default_factory=dict)  # split -> how its user file is read


def preflight(
    configs: Configs,
    *,
    splits: Sequence[str],
    proposals: Sequence[str],
    adapter: bool = False,
    output_dir: bool = False,
) -> Preflight:
    """Check everything a command needs before a model loads. ``proposals`` are proposal labels (``power_mh:uniform``
    picks a cut of power_mh); only ``splits`` are read (eval-only tasks such as math500 ship no train split)."""
    try:
        source = resolve_model_source(configs.model.model_name_or_path, configs.em.gguf_file)
        check_backend(configs.em.backend, engine_dtype(configs), configs.engine.vllm_block_size)
        check_task_name(configs.task.task)
        for label in proposals:
            check_proposal_name(configs.eval_variant(label, "proposals").proposal)
        check_task_fields(configs)
        report_to_names(configs.mstep.report_to)
        check_pairwise_options(configs)
        data = validate_task_data(configs.task, tuple(splits))
        if configs.eval.temperature_scaling and "train" in splits:
            check_calibration_split(configs)
        found = resolve_adapter(configs.eval.adapter) if adapter else None
        status = "not checked"
        if output_dir:
            out = Path(configs.mstep.output_dir)
            status = check_output_dir(out, train_config(configs), overwrite=configs.em.overwrite_output_dir_contents)
            if status == "resume":
                check_last_adapter(out)
    except ConfigError as e:
        raise (e.in_file(configs.recipe) if configs.recipe else e) from None
    return Preflight(
        model_source=source, data=dict(data), adapter=found, output_status=status, data_formats=data.formats
    )


def check_calibration_split(configs: Configs) -> None:
    """Temperature scaling fits on the train split's first ``calibration_limit`` examples: none may be an eval item."""
    task = build_task(configs.task)
    limit = configs.eval.calibration_limit
    calibration = task.load("train")[:limit] if limit else task.load("train")
    check_disjoint(calibration, task.load("eval"))


def check_pairwise_options(configs: Configs) -> None:
    """Position swap and verdict balancing need a pairwise task (a verdict between two candidates); a confidence
    target other than the default needs a task that states a confidence, and the debiased one (the default: both
    presentation orders) a pairwise one."""
    task = build_task(configs.task)
    target = configs.estep.confidence_target
    if target != DEFAULT_CONFIDENCE_TARGET and not task.confidence_cue:
        raise ConfigError(
            f"task '{configs.task.task}' states no confidence (confidence_target '{target}' has nothing to set)",
            field="confidence_target",
            fix="remove confidence_target, or use a task that states one (judge*, summarize)",
        )
    options = [name for name in ("estep_position_swap", "estep_balance") if getattr(configs.estep, name)]
    if task.confidence_cue and target == "plain_readout_debiased":
        options.append("confidence_target")
    if options and not task.pairwise:
        debiased = options[0] == "confidence_target"
        what = (
            "plain_readout_debiased averages both orders of a pair"
            if debiased
            else "no A/B verdict to swap or balance"
        )
        change = "use confidence_target plain_readout" if debiased else f"remove {options[0]}"
        raise ConfigError(
            f"task '{configs.task.task}' is not pairwise ({what})",
            field=options[0],
            fix=f"{change}, or use a pairwise task (judge*, summarize)",
        )


def engine_dtype(configs: Configs) -> str:
    """The dtype an engine backend runs its weights in (``vllm_dtype`` resolved against the model's ``dtype``; for
    ``dtype: auto``, the one a Hugging Face folder's ``config.json`` names, as loading it will give)."""
    model_dtype = getattr(configs.model, "dtype", None)
    if model_dtype in (None, "auto"):
        model_dtype = checkpoint_dtype(configs.model.model_name_or_path, configs.em.gguf_file)
    return resolve_engine_dtype(configs.engine.vllm_dtype, model_dtype)


def checkpoint_dtype(name_or_path: str, gguf_file: str | None) -> str | None:
    """The weights dtype a model folder's ``config.json`` records (None for GGUF files or where it says none)."""
    try:
        folder, gguf = resolve_model_source(name_or_path, gguf_file)
        config = json.loads((Path(folder) / "config.json").read_text()) if gguf is None else {}
    except (ConfigError, OSError, ValueError):
        return None
    dtype = config.get("dtype") or config.get("torch_dtype")
    return str(dtype) if dtype else None


def backend_plan(configs: Configs) -> str:
    """The backend line of a plan (with the vLLM engine's main settings)."""
    if configs.em.backend != "vllm":
        return configs.em.backend
    e = configs.engine
    return (
        f"vllm (dtype={engine_dtype(configs)}, max_model_len={e.vllm_max_model_len or 'model'}, "
        f"prefix_caching={e.vllm_enable_prefix_caching}, block_size={e.vllm_block_size or 'auto'})"
    )


def check_task_fields(configs: Configs) -> None:
    """``task_fields`` may only name fields the task reads (a typo there would silently be ignored)."""
    if not configs.task.task_fields:
        return
    task = build_task(configs.task)
    known = task.field_names()
    if not known:  # a task that reads its own fields: they are its own business
        return
    for name in configs.task.task_fields:
        if str(name) not in known:
            close = difflib.get_close_matches(str(name), known, n=1)
            raise ConfigError(
                f"'{name}' is not a field of task {configs.task.task} (its fields: {', '.join(known)})",
                field="task_fields",
                fix=f"did you mean '{close[0]}'?" if close else "remove it from task_fields",
            )


def train_config(configs: Configs) -> dict[str, Any]:
    """The resolved config of a training run (``config.yaml``, the fingerprint): configs plus input file digests."""
    return run_config(configs, input_digests(configs.task))


def check_last_adapter(output_dir: Path, field_name: str = "output_dir") -> Path | None:
    """The adapter a resumed run loads first (its last finished round's), verified: present, complete, finite."""
    path = RunState.load(output_dir).adapter_path(output_dir)
    if path is not None:
        try:
            verify_adapter(path)
        except AdapterError as e:
            raise ConfigError(
                f"the adapter of the last finished round is unusable: {e.message}",
                field=field_name,
                fix="restore that adapter dir from a copy, or start over in a new output_dir",
            ) from None
    return path


def resolve_adapter(path: str | None) -> str | None:
    """An adapter dir, or a training output dir (its last finished round's adapter, inside that dir)."""
    if not path:
        return None
    p = Path(path)
    if (p / ADAPTER_CONFIG).is_file():
        try:
            verify_adapter(p)
        except AdapterError as e:
            raise ConfigError(e.message, field="adapter", fix="point --adapter to a complete adapter dir") from None
        return str(p)
    if (p / STATE_FILE).is_file():
        last = check_last_adapter(p, "adapter")
        if last is None:
            raise ConfigError(
                f"{p} holds a training run with no finished adapter yet",
                field="adapter",
                fix="finish a round first or name an adapter dir",
            )
        return str(last)
    raise ConfigError(
        f"{p} is neither a LoRA adapter dir nor a fem training dir",
        field="adapter",
        fix="point --adapter to round_K/adapter or to a training output_dir",
    )


def print_plan(title: str, plan: dict[str, Any], width: int) -> None:
    """``title`` and one ``key value`` line per plan entry (a mapping is written ``k=v, ...``)."""
    print(title)
    for key, value in plan.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items())
        print(f"  {key:<{width}} {value}")
