"""EMConfig: the EM loop and its generation backend."""

from __future__ import annotations

from dataclasses import dataclass, field

from fem.validation import validate_fields


@dataclass
class EMConfig:
    """> Parameters of the EM loop."""

    rounds: int = field(
        default=2,
        metadata={"help": "EM rounds (E-step, M-step, eval).", "min": 1, "fix": "run at least one EM round"},
    )
    restart_from_base: bool = field(
        default=True,
        metadata={
            "help": "Train each round's adapter from the base model (ReST-EM/STaR); false continues from the last adapter."
        },
    )
    backend: str = field(
        default="hf",
        metadata={
            "help": "Generation backend: hf, or a dotted path to your own (vllm: GPU-only extra, not shipped yet)."
        },
    )
    gguf_file: str | None = field(
        default=None,
        metadata={"help": "GGUF file name inside model_name_or_path (set automatically for the smollm2 alias)."},
    )
    dry_run: bool = field(
        default=False, metadata={"help": "Validate the recipe and data, print the plan, load no model."}
    )
    overwrite_output_dir_contents: bool = field(
        default=False,
        metadata={"help": "Allow an output dir that holds a run with a different config (its files are replaced)."},
    )

    def __post_init__(self) -> None:
        validate_fields(self)
