"""The weights a PEFT LoRA adapter changes, merged into its base model's: what an engine that serves merged weights
(``VLLMBackend`` with ``adapter_mode="merge"``, TRL's colocate weight sync) loads in place of the base ones.

``merged_weights(model, adapter_dir)`` returns ``{parameter name: W + delta W}`` for every layer the adapter wraps,
with PEFT's own ``get_delta_weight`` (scaling, rsLoRA and ``fan_in_fan_out`` included) computed out of place: the
model's weights are not touched (no merge / unmerge round trip that would leave rounding error in the weights the
M-step trains next) and the model is returned to its caller unwrapped. ``full_weights(model, merged)`` is the
whole checkpoint with those layers replaced (the base checkpoint without ``merged``). Names are the model's own
parameter names (``model.layers.0.self_attn.q_proj.weight``), which is what vLLM's weight loading reads.
"""

from __future__ import annotations

from pathlib import Path

import torch
from peft import PeftConfig, PeftModel, PeftType
from peft.tuners.lora import LoraLayer
from peft.tuners.tuners_utils import BaseTunerLayer

ADAPTER_NAME = "fem_merge"


def merged_weights(model: torch.nn.Module, adapter_dir: str | Path) -> dict[str, torch.Tensor]:
    """``{name: base weight + the adapter's delta}`` for each layer the LoRA adapter at ``adapter_dir`` changes, in
    the base weight's dtype. Refused: an adapter other than LoRA, DoRA (its delta is not additive), a model that
    already carries adapter layers (its weights are not the base ones)."""
    if isinstance(model, PeftModel) or any(isinstance(m, BaseTunerLayer) for m in model.modules()):
        raise RuntimeError("the model already carries adapter layers: merge into the plain base model")
    config = PeftConfig.from_pretrained(str(adapter_dir))
    if config.peft_type != PeftType.LORA:
        raise ValueError(f"{adapter_dir}: a {config.peft_type} adapter; only LoRA adapters can be merged")
    if getattr(config, "use_dora", False):
        raise ValueError(f"{adapter_dir}: a DoRA adapter cannot be merged as an additive delta; use adapter_mode lora")
    wrapped = PeftModel.from_pretrained(model, str(adapter_dir), adapter_name=ADAPTER_NAME, is_trainable=False)
    try:
        merged = {}
        with torch.no_grad():
            for name, module in wrapped.base_model.model.named_modules():
                if isinstance(module, LoraLayer) and ADAPTER_NAME in module.lora_A:
                    base = module.get_base_layer().weight
                    delta = module.get_delta_weight(ADAPTER_NAME)
                    merged[f"{name}.weight"] = (base.float() + delta.float()).to(base.dtype)
    finally:
        unwrapped = wrapped.unload()
    if unwrapped is not model:  # PEFT unwraps in place; a copy would leave the caller's model wrapped
        raise RuntimeError("PEFT returned another model object from unload()")
    return merged


def full_weights(
    model: torch.nn.Module, merged: dict[str, torch.Tensor] | None = None
) -> list[tuple[str, torch.Tensor]]:
    """Every parameter of ``model`` (tied ones once), with the entries of ``merged`` in place of the base ones: a
    complete checkpoint, which an engine reloads without keeping any layer's old weights."""
    merged = merged or {}
    params = dict(model.named_parameters())  # a tied weight once, under its first name
    tied = sorted(set(merged) - set(params))
    if tied:
        raise ValueError(f"the adapter changes {tied}, tied to another weight of the model: it cannot be merged alone")
    return [(name, merged.get(name, param.detach())) for name, param in params.items()]
