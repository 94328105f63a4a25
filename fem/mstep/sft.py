"""The M-step: LoRA SFT on the kept samples through TRL's ``SFTTrainer`` (prompt-completion data, loss on the
completion only, EOS from the chat template), optionally reward-weighted."""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from accelerate.state import AcceleratorState, GradientState
from datasets import Dataset, disable_progress_bars
from peft import PeftModel
from transformers import PrinterCallback, TrainerCallback, set_seed
from trl import SFTTrainer
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

from fem.errors import ConfigError, FemError
from fem.mstep.adapters import save_adapter
from fem.utils.faults import crash_point
from fem.utils.logging import get_logger

logger = get_logger(__name__)


class CrashPointCallback(TrainerCallback):
    """Fault injection inside the M-step (``FEM_CRASH_AT=mstep.step#N`` dies after optimizer step N)."""

    def on_step_end(self, args, state, control, **kwargs):
        crash_point("mstep.step")


class DivergedError(FemError):
    """The M-step's loss became NaN or infinite: training stopped and no adapter was saved."""


class FiniteLossCallback(TrainerCallback):
    """Stops training at the first logged loss that is NaN or infinite (the logged loss is gathered across ranks,
    so every rank stops at the same step). The M-step turns off TRL's ``logging_nan_inf_filter``, which would
    otherwise replace such a loss by the window's mean."""

    def __init__(self) -> None:
        self.bad: tuple[int, float] | None = None

    def on_log(self, args, state, control, logs=None, **kwargs):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss) and self.bad is None:
            self.bad = (state.global_step, loss)
            control.should_training_stop = True


class WeightedSFTTrainer(SFTTrainer):
    """``SFTTrainer`` whose per-sequence loss is multiplied by a ``weight`` column (TRL has no built-in weights).

    With every weight 1 the loss equals the stock completion-only loss (tested)."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        weights = inputs.pop("weight")
        inputs["use_cache"] = False
        outputs = model(**inputs, fused_lm_head=True)
        per_sequence = (-outputs.log_probs).sum(-1)  # log_probs are 0 on prompt/padding positions
        denominator = num_items_in_batch if num_items_in_batch is not None else outputs.label_mask.sum()
        loss = (per_sequence * weights.to(per_sequence.dtype)).sum() / torch.as_tensor(denominator).clamp(min=1)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * self.accelerator.num_processes
        return (loss, outputs) if return_outputs else loss


class WeightedCollator:
    """TRL's language-modeling collator plus a ``weight`` tensor."""

    def __init__(self, pad_token_id: int):
        self.inner = DataCollatorForLanguageModeling(pad_token_id=pad_token_id)

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.inner([{k: e[k] for k in ("input_ids", "labels") if k in e} for e in examples])
        batch["weight"] = torch.tensor([float(e["weight"]) for e in examples])
        return batch


def check_eos(tokenizer, eos_token_ids: Sequence[int]) -> None:
    """The chat template must close an assistant turn with a token the generation backend stops on; otherwise a
    fine-tuned model would never stop (a classic SFT pitfall)."""
    if not getattr(tokenizer, "chat_template", None):
        return
    messages = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    ids = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=False)
    if hasattr(ids, "tolist"):
        ids = ids.tolist()
    prompt_len = len(
        tokenizer.apply_chat_template(messages[:1], tokenize=True, add_generation_prompt=True, return_dict=False)
    )
    if not any(t in eos_token_ids for t in ids[prompt_len:]):
        raise ConfigError(
            "the chat template does not end an assistant turn with an EOS token the model stops on",
            field="model_name_or_path",
            fix="use a tokenizer whose chat template closes assistant turns with its eos_token",
        )


def build_dataset(rows: Sequence[dict[str, Any]], tokenizer, weighted: bool):
    """Prompt-completion rows (conversational when the tokenizer has a chat template) as a ``datasets.Dataset``."""
    conversational = bool(getattr(tokenizer, "chat_template", None))
    records = []
    for row in rows:
        if conversational:
            record = {"prompt": row["prompt"], "completion": [{"role": "assistant", "content": row["completion"]}]}
        else:
            record = {
                "prompt": "\n\n".join(m["content"] for m in row["prompt"]) + "\n",
                "completion": row["completion"],
            }
        if weighted:
            record["weight"] = float(row["weight"])
        records.append(record)
    return Dataset.from_list(records)


def _fresh_accelerator_state() -> None:
    """Let each round build a new Trainer: accelerate refuses a second Accelerator with a DeepSpeed plugin in one
    process, so the per-run accelerator state is cleared (the process group, held by PartialState, is kept)."""
    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()


def train_adapter(
    *,
    base_model,
    tokenizer,
    rows: Sequence[dict[str, Any]],
    args,
    peft_config,
    adapter_dir: Path,
    init_adapter: str | None,
    weighted: bool,
    seed: int,
    callbacks: Sequence[TrainerCallback] = (),
    report_to: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Fine-tune a LoRA adapter on ``rows`` (prompt messages, completion, weight) and save it to ``adapter_dir``.

    The base model is copied, so the generation backend's model is never touched. ``args`` is the run's
    ``MStepConfig``: this round trains with a shallow copy of it whose output dir, seeds and column handling are the
    round's, so the run's config stays what the recipe said. (A copy, not a new ``TrainingArguments``: building one
    would run its ``__post_init__`` again and reset accelerate's distributed state.) ``callbacks`` join the
    trainer's (the run's tracker forwards the training logs through one); ``report_to``, when given, replaces the
    trainers' own integrations (those the run's tracker does not drive). Returns ``mstep/*`` metrics and the loss
    curve."""
    disable_progress_bars()

    _fresh_accelerator_state()
    set_seed(seed)
    model = copy.deepcopy(base_model)
    model.train()
    if init_adapter:
        model = PeftModel.from_pretrained(model, init_adapter, is_trainable=True)
        peft_config = None
    dataset = build_dataset(rows, tokenizer, weighted)
    args = copy.copy(args)
    args.output_dir = str(adapter_dir.parent / "trainer")
    args.seed = seed
    args.data_seed = seed
    args.remove_unused_columns = not weighted
    args.logging_nan_inf_filter = False  # a NaN loss must reach FiniteLossCallback, not be averaged away
    if report_to is not None:
        args.report_to = list(report_to)
    trainer_cls = WeightedSFTTrainer if weighted else SFTTrainer
    extra = {"data_collator": WeightedCollator(tokenizer.pad_token_id)} if weighted else {}
    trainer = trainer_cls(
        model=model, args=args, train_dataset=dataset, processing_class=tokenizer, peft_config=peft_config, **extra
    )
    trainer.remove_callback(PrinterCallback)  # the loss curve goes to round metrics and report_to, not stdout
    trainer.add_callback(CrashPointCallback())
    finite = FiniteLossCallback()
    trainer.add_callback(finite)
    for callback in callbacks:
        trainer.add_callback(callback)
    result = trainer.train()
    if finite.bad is not None or not math.isfinite(result.training_loss):
        step, loss = finite.bad or (int(result.global_step), result.training_loss)
        raise DivergedError(
            f"the M-step diverged: loss {loss} at step {step} (learning_rate {args.learning_rate}); no adapter saved",
            field="learning_rate",
            fix="lower learning_rate (or max_grad_norm), then train again in a new output_dir",
        )
    save_adapter(trainer, adapter_dir)
    history = [h for h in trainer.state.log_history if "loss" in h]
    metrics = {
        "mstep/loss": float(result.training_loss),
        "mstep/steps": int(result.global_step),
        "mstep/samples": len(rows),
        "mstep/time_s": float(result.metrics.get("train_runtime", 0.0)),
        "mstep/train_tokens": int(trainer._total_train_tokens) if hasattr(trainer, "_total_train_tokens") else None,
        "mstep/num_processes": int(trainer.accelerator.num_processes),
        "mstep/distributed_type": str(trainer.accelerator.distributed_type.value),
        "mstep/loss_curve": [{"step": h.get("step"), "loss": h["loss"]} for h in history],
    }
    del trainer, model
    return metrics
