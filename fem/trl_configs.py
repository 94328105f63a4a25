"""The TRL-based configs (``MStepConfig`` extends ``trl.SFTConfig``, ``FemModelConfig`` extends
``trl.ModelConfig``). A separate module so that ``fem.configs`` stays light (no torch, no TRL) and these stay
picklable. The fields re-declared here carry fem's defaults and their rules (``fem.validation``)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from trl import ModelConfig, SFTConfig

from fem.validation import check, validate_fields


@dataclass
class MStepConfig(SFTConfig):
    """> Parameters of the M-step (all of ``trl.SFTConfig``; LoRA-friendly defaults)."""

    output_dir: str = field(default="outputs/fem", metadata={"help": "Run directory (rounds, metrics, state)."})
    learning_rate: float = field(
        default=2e-4,
        metadata={"help": "AdamW learning rate (LoRA default).", "gt": 0, "fix": "set learning_rate > 0"},
    )
    num_train_epochs: float = field(
        default=2.0,
        metadata={
            "help": "Epochs over the kept samples per M-step.",
            "gt": 0,
            "fix": "train at least a fraction of an epoch",
        },
    )
    per_device_train_batch_size: int = field(
        default=4,
        metadata={"help": "Per-device M-step batch size.", "min": 1, "fix": "set per_device_train_batch_size >= 1"},
    )
    gradient_accumulation_steps: int = field(
        default=1,
        metadata={
            "help": "Batches whose gradients add up to one optimizer step.",
            "min": 1,
            "fix": "set gradient_accumulation_steps >= 1",
        },
    )
    logging_steps: float = field(default=1, metadata={"help": "Log the loss every N steps."})
    save_strategy: str = field(
        default="no", metadata={"help": "Trainer checkpoints inside an M-step (the EM loop saves adapters itself)."}
    )
    report_to: None | str | list[str] = field(
        default="none", metadata={"help": "none | tensorboard | wandb (passed to TRL)."}
    )
    bf16: bool | None = field(default=False, metadata={"help": "bf16 mixed precision (recommended on GPUs)."})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "Trade compute for memory in the M-step."})
    max_length: int | None = field(
        default=1024,
        metadata={"help": "Truncate prompt+completion to this many tokens.", "min": 1, "fix": "set max_length >= 1"},
    )
    use_cpu: bool = field(
        default=not torch.cuda.is_available(), metadata={"help": "Train on CPU (default when no GPU is present)."}
    )
    ddp_find_unused_parameters: bool | None = field(
        default=False, metadata={"help": "DDP setting (LoRA has no unused parameters)."}
    )
    disable_tqdm: bool | None = field(default=True, metadata={"help": "Hide the trainer's own progress bar."})

    def __post_init__(self) -> None:
        validate_fields(self)  # before TRL's own checks, which may trip over an infinite or NaN value
        super().__post_init__()


@dataclass
class FemModelConfig(ModelConfig):
    """> Parameters of the model and its LoRA adapter (all of ``trl.ModelConfig``)."""

    model_name_or_path: str | None = field(
        default="smollm2-135m-instruct",
        metadata={
            "help": "A local HF folder, a .gguf file, or the alias smollm2-135m-instruct.",
            "nonempty": True,
            "fix": "name a local model folder, a .gguf file or smollm2-135m-instruct",
        },
    )
    use_peft: bool = field(default=True, metadata={"help": "Train LoRA adapters (the M-step is LoRA-only for now)."})
    lora_r: int = field(
        default=16, metadata={"help": "LoRA rank.", "min": 1, "fix": "use a LoRA rank such as 8 or 16"}
    )
    lora_alpha: int = field(
        default=32, metadata={"help": "LoRA alpha.", "gt": 0, "fix": "use e.g. lora_alpha = 2 * lora_r"}
    )
    lora_target_modules: list[str] | None = field(
        default_factory=lambda: ["all-linear"], metadata={"help": "Modules to adapt (all-linear or a list)."}
    )

    def __post_init__(self) -> None:
        validate_fields(self)  # before TRL's own checks, which may trip over an infinite or NaN value
        super().__post_init__()
        check(
            not self.load_in_4bit and not self.load_in_8bit,
            "load_in_4bit",
            "quantised training is not supported yet",
            "remove load_in_4bit/load_in_8bit",
        )
