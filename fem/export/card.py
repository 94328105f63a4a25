"""The model card (``README.md``) of an exported folder, from the run's files alone.

YAML front matter as the hub reads it (``huggingface_hub.ModelCardData``): ``base_model`` and
``base_model_relation`` when the base has a hub id, ``library_name`` (``peft`` for an adapter, ``transformers`` for
a merged model), ``pipeline_tag``, ``tags``. The body: what was trained (base model, with the GGUF caveat, task,
E-step scheme, proposal, rounds, LoRA and M-step settings), the eval metrics of the base and of the exported round
with their split sizes, the EM rounds up to it, the command that produced the run with library versions and the
resolved config, and how to load the folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import ModelCardData

from fem import __version__
from fem.export.run import RunSource
from fem.models import SMOLLM2_ALIAS, TINY_ALIAS, hub_id_of

BASELINE = -1
# eval keys that are cost or bookkeeping, not quality (sizes get their own rows)
EVAL_COST = {"eval/tokens_decoded", "eval/wall_s", "eval/tokens_per_s", "eval/examples", "eval/predictions"}
ROUND_COLUMNS = (
    ("estep/acceptance_rate", "E-step acceptance"),
    ("estep/kept_samples", "kept samples"),
    ("mstep/loss", "M-step loss"),
)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    return str(int(value)) if float(value).is_integer() else f"{value:.4f}"


def base_model_text(source: RunSource, merged: bool) -> str:
    """One sentence on the base model, saying exactly which weights the adapter was trained on."""
    name, gguf = source.model_name_or_path, source.config.get("gguf_file")
    dtype = source.config.get("dtype") or "float32"
    if name == SMOLLM2_ALIAS or str(name).endswith(".gguf") or gguf:
        original = hub_id_of(name)
        what = (
            f"`{name}`" + (f" (the Q4_1 GGUF of `{original}`)" if original else "") + (f", `{gguf}`" if gguf else "")
        )
        tail = (
            "the merged weights are those de-quantised weights plus the LoRA delta"
            if merged
            else "applied to the original unquantised weights, the adapter gives a slightly different model; "
            "`fem export --merge` reproduces the trained one exactly"
        )
        return f"{what}, de-quantised to {dtype} as fem loads it; the adapter was trained on those weights ({tail})."
    if name == TINY_ALIAS:
        return f"`{name}`: fem's random ~100k-parameter test model, built locally (not on the hub)."
    hub_id = hub_id_of(name)
    return f"[`{hub_id}`](https://huggingface.co/{hub_id})" if hub_id else f"`{name}` (a local folder)."


def _proposal_text(config: dict[str, Any]) -> str:
    proposal = str(config.get("proposal") or "ancestral")
    text = f"`{proposal}` at temperature {config.get('temperature')}, max_new_tokens {config.get('max_new_tokens')}"
    if proposal == "power_mh":
        text += (
            f" (alpha {config.get('power_alpha')}, block {config.get('power_block_size')}, "
            f"{config.get('power_mh_steps')} MH steps, cut {config.get('power_cut')})"
        )
    return text


def training_table(source: RunSource, merged: bool) -> list[str]:
    c, k = source.config, source.round_index
    line = source.rounds.get(k, {})
    finished = "finished" if source.state.get("finished") else "not finished"
    rows = [
        ("base model", base_model_text(source, merged)),
        ("task", f"`{c.get('task')}` (answer_mode {c.get('answer_mode')})"),
        (
            "E-step scheme",
            f"`{c.get('scheme')}`: {c.get('estep_samples')} draws per example, keep <= {c.get('estep_max_keep')}",
        ),
        ("proposal", _proposal_text(c)),
        ("rounds", f"this is round {k} (0-based) of a run of {c.get('rounds')} rounds ({finished})"),
        (
            "train split",
            f"{_cell(line.get('estep/examples'))} examples per round; "
            f"{_cell(line.get('estep/kept_samples'))} kept samples trained on in round {k}",
        ),
        (
            "LoRA",
            f"r {c.get('lora_r')}, alpha {c.get('lora_alpha')}, dropout {c.get('lora_dropout')}, "
            f"targets {c.get('lora_target_modules')}",
        ),
        (
            "M-step",
            f"learning_rate {c.get('learning_rate')}, {c.get('num_train_epochs')} epochs, batch "
            f"{c.get('per_device_train_batch_size')} x {c.get('gradient_accumulation_steps')} accumulation, "
            f"seed {c.get('seed')}",
        ),
    ]
    return ["| | |", "|---|---|", *[f"| {key} | {value} |" for key, value in rows]]


def _evaluated(source: RunSource) -> int | None:
    """The exported round if it was evaluated, else the last evaluated round before it."""
    rounds = [r for r, line in source.rounds.items() if 0 <= r <= source.round_index and "eval/examples" in line]
    return max(rounds) if rounds else None


def eval_section(source: RunSource) -> list[str]:
    k, base = source.round_index, source.rounds.get(BASELINE, {})
    evaluated = _evaluated(source)
    lines = []
    if evaluated is None:
        return [f"Round {k} was not evaluated (`eval_every_round: false` evaluates the last round only)."]
    if evaluated != k:
        lines.append(f"Round {k} was not evaluated; the numbers below are round {evaluated}'s.\n")
    line = source.rounds[evaluated]
    proposal = line.get("eval/proposal") or source.config.get("eval_proposal") or "ancestral"
    lines.append(
        f"On the eval split of `{source.config.get('task')}` with proposal `{proposal}` at temperature "
        f"{source.config.get('eval_temperature')}:\n"
    )
    columns = [("base model", base)] if base else []
    columns.append((f"round {evaluated}", line))
    keys = [key for key in line if key.startswith("eval/") and key not in EVAL_COST and _is_number(line[key])]
    lines += ["| metric | " + " | ".join(name for name, _ in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for key, label in (("eval/examples", "eval examples (split size)"), ("eval/predictions", "predictions")):
        lines.append(f"| {label} | " + " | ".join(_cell(values.get(key)) for _, values in columns) + " |")
    for key in sorted(keys):
        lines.append(f"| {key[5:]} | " + " | ".join(_cell(values.get(key)) for _, values in columns) + " |")
    return lines


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def rounds_table(source: RunSource) -> list[str]:
    """One row per round up to the exported one."""
    rounds = [r for r in sorted(source.rounds) if r <= source.round_index]
    lines = ["| round | " + " | ".join(label for _, label in ROUND_COLUMNS) + " | eval accuracy |"]
    lines.append("|---" * (len(ROUND_COLUMNS) + 2) + "|")
    for r in rounds:
        line = source.rounds[r]
        cells = [_cell(line.get(key)) for key, _ in ROUND_COLUMNS] + [_cell(line.get("eval/accuracy"))]
        lines.append(f"| {'base' if r == BASELINE else r} | " + " | ".join(cells) + " |")
    return lines


def reproduce_section(source: RunSource) -> list[str]:
    record = source.record
    command = record.get("command_line") or "fem train --config RECIPE.yaml  # (this run predates recorded commands)"
    versions = record.get("versions") or {}
    pinned = ", ".join(f"{name} {v}" for name, v in versions.items() if v != "not installed")
    sha = record.get("git_sha")
    lines = ["```bash", str(command), "```", "", f"Libraries: {pinned}." if pinned else ""]
    if sha:
        lines.append(f"fem git commit `{sha}`.")
    config = yaml.safe_dump(source.config, sort_keys=False).rstrip()
    lines += ["", "<details><summary>Resolved config</summary>", "", "```yaml", config, "```", "", "</details>"]
    return lines


def usage_section(merged: bool, folder_name: str) -> list[str]:
    where = f"path/to/{folder_name}"
    if merged:
        return [
            "```python",
            "from transformers import AutoModelForCausalLM, AutoTokenizer",
            "",
            f'model = AutoModelForCausalLM.from_pretrained("{where}")',
            f'tokenizer = AutoTokenizer.from_pretrained("{where}")',
            "```",
            "",
            f"or serve it with vLLM: `vllm serve {where}`. Prompt it through the chat template, as it was trained.",
        ]
    return [
        "```python",
        "from peft import AutoPeftModelForCausalLM",
        "from transformers import AutoTokenizer",
        "",
        f'model = AutoPeftModelForCausalLM.from_pretrained("{where}")  # loads base_model_name_or_path + adapter',
        f'tokenizer = AutoTokenizer.from_pretrained("{where}")',
        "```",
        "",
        f"or `fem eval --config RECIPE.yaml --adapter {where}`; `fem export RUN_DIR --merge` gives a folder vLLM "
        "serves without PEFT. Prompt it through the chat template, as it was trained.",
    ]


def card_data(source: RunSource, merged: bool) -> ModelCardData:
    hub_id = hub_id_of(source.model_name_or_path)
    tags = [
        "fem",
        "filtered-em",
        "lora",
        "trl",
        "sft",
        str(source.config.get("scheme")),
        str(source.config.get("task")),
    ]
    extra: dict[str, Any] = {}
    if hub_id:
        extra = {"base_model": hub_id, "base_model_relation": "finetune" if merged else "adapter"}
    return ModelCardData(
        library_name="transformers" if merged else "peft",
        pipeline_tag="text-generation",
        tags=list(dict.fromkeys(t for t in tags if t and t != "None")),
        **extra,
    )


def model_card(source: RunSource, *, merged: bool, dtype: str | None = None, folder_name: str = "model") -> str:
    """The README.md text of an export of ``source`` (adapter, or merged model saved in ``dtype``)."""
    k = source.round_index
    what = (
        f"A full model: the base with round {k}'s LoRA adapter merged in (safetensors, {dtype})"
        if merged
        else f"The LoRA adapter of round {k} (PEFT)"
    )
    run = Path(source.root).resolve().name
    body = [
        f"# {run}, round {k}",
        "",
        f"{what}, trained with fem {__version__} by filtered EM: each round draws rationales with a proposal, keeps "
        "those that reach the right answer (E-step) and fine-tunes LoRA on them (M-step).",
        "",
        "## Training",
        "",
        *training_table(source, merged),
        "",
        "## Evaluation",
        "",
        *eval_section(source),
        "",
        "## EM rounds",
        "",
        *rounds_table(source),
        "",
        "## Reproduce",
        "",
        *reproduce_section(source),
        "",
        "## Use",
        "",
        *usage_section(merged, folder_name),
    ]
    return f"---\n{card_data(source, merged).to_yaml()}\n---\n\n" + "\n".join(body) + "\n"
