"""Shared pieces of the M-step benchmarks: rows, the fem M-step, the plain TRL SFTTrainer + LoRA script."""

from __future__ import annotations

import copy
import tempfile
import time
from pathlib import Path

RATIONALE = (
    "Let's think step by step. She sold 48 clips in April and half as many in May, that is 24. "
    "Together that makes 48 + 24 = 72 clips. "
)


def rows(n: int) -> list[dict]:
    out = []
    for i in range(n):
        q = f"Question {i}: Natalia sold clips to {48 + i} of her friends in April, and then half as many in May. How many in total?"
        out.append(
            {
                "prompt": [{"role": "user", "content": q}],
                "completion": RATIONALE * 2 + f"The answer is {72 + i}.",
                "weight": 1.0,
            }
        )
    return out


def trainable(model):
    """Workaround (both sides alike): transformers 5 flags a GGUF-loaded model as quantized (``hf_quantizer`` = GGUF)
    although its modules are plain ``nn.Linear`` after de-quantisation, and ``Trainer`` then refuses to train it.
    fem's own M-step hits the same check; the fix belongs in ``fem.models.load_model`` (see BENCHMARKS.md)."""
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None
        model.is_quantized = False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
    return model


def lora():
    from peft import LoraConfig

    return LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", lora_dropout=0.0, task_type="CAUSAL_LM")


def count_tokens(tokenizer, data: list[dict]) -> int:
    total = 0
    for r in data:
        msgs = r["prompt"] + [{"role": "assistant", "content": r["completion"]}]
        ids = tokenizer.apply_chat_template(msgs, tokenize=True)
        ids = ids["input_ids"] if hasattr(ids, "keys") else ids
        total += len(ids)
    return total


def mstep_args(out: str, steps: int, batch: int, cls=None):
    """The same hyperparameters for both (TRL's own defaults differ: bf16 autocast and gradient checkpointing on)."""
    if cls is None:
        from fem.trl_configs import MStepConfig as cls
    return cls(
        bf16=False,
        gradient_checkpointing=False,
        output_dir=out,
        max_steps=steps,
        per_device_train_batch_size=batch,
        learning_rate=2e-4,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        max_length=512,
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
    )


def fem_mstep(model, tokenizer, data: list[dict], steps: int, batch: int) -> dict:
    from fem.mstep.sft import train_adapter

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        m = train_adapter(
            base_model=trainable(model),
            tokenizer=tokenizer,
            rows=data,
            args=mstep_args(tmp, steps, batch),
            peft_config=lora(),
            adapter_dir=Path(tmp) / "adapter",
            init_adapter=None,
            weighted=False,
            seed=0,
        )
        return {
            "train_runtime_s": m["mstep/time_s"],
            "wall_s": time.perf_counter() - t0,
            "steps": m["mstep/steps"],
            "loss": m["mstep/loss"],
        }


def plain_trl(model, tokenizer, data: list[dict], steps: int, batch: int) -> dict:
    """What a user would write without fem: SFTTrainer + LoRA on prompt/completion rows."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    ds = Dataset.from_list(
        [{"prompt": r["prompt"], "completion": [{"role": "assistant", "content": r["completion"]}]} for r in data]
    )
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        trainer = SFTTrainer(
            model=copy.deepcopy(trainable(model)),
            args=mstep_args(tmp, steps, batch, SFTConfig),
            train_dataset=ds,
            processing_class=tokenizer,
            peft_config=lora(),
        )
        res = trainer.train()
        trainer.save_model(str(Path(tmp) / "adapter"))
        return {
            "train_runtime_s": float(res.metrics["train_runtime"]),
            "wall_s": time.perf_counter() - t0,
            "steps": int(res.global_step),
            "loss": float(res.training_loss),
        }
