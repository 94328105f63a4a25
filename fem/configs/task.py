"""TaskConfig: which task, which data files, how prompts and answers are shaped."""

from __future__ import annotations

from dataclasses import dataclass, field

from fem.configs.choices import ANSWER_MODES, DATA_FORMATS, TIE_POLICIES, positive_count
from fem.validation import check, validate_fields


@dataclass
class TaskConfig:
    """> Parameters that choose the task and its data."""

    task: str = field(
        default="gsm8k",
        metadata={
            "help": "Task name (see `fem tasks list`) or dotted path to a Task class.",
            "nonempty": True,
            "fix": "name a task, e.g. task: gsm8k (see `fem tasks list`)",
        },
    )
    train_file: str | None = field(
        default=None,
        metadata={"help": "Training data file (JSONL/JSON/CSV/gz). Default: the task's shipped train split."},
    )
    eval_file: str | None = field(
        default=None, metadata={"help": "Evaluation data file. Default: the task's shipped eval split."}
    )
    task_fields: dict[str, str] | None = field(
        default=None,
        metadata={"help": "Map of task field -> column in your file, e.g. {prompt: question, label: label}."},
    )
    task_labels: dict[str, str] | None = field(
        default=None, metadata={"help": "Map of raw label value -> task label, e.g. {1: A, 2: B}."}
    )
    train_limit: int | None = field(
        default=None, metadata={"help": "Use only the first N training examples.", **positive_count("train_limit")}
    )
    eval_limit: int | None = field(
        default=None,
        metadata={
            "help": "Use only the first N evaluation examples (`--limit` in `fem eval`).",
            **positive_count("eval_limit"),
        },
    )
    prompt_template: str | None = field(
        default=None,
        metadata={"help": "Override the task's plain prompt: a Python format string or a path to a .txt/.jinja file."},
    )
    hinted_template: str | None = field(
        default=None, metadata={"help": "Override the task's hinted prompt (states the correct answer)."}
    )
    system_prompt: str | None = field(default=None, metadata={"help": "System message placed before every prompt."})
    answer_mode: str = field(
        default="generate",
        metadata={
            "help": "generate: the model writes the answer; forced: append the cue and read option probabilities.",
            "choices": ANSWER_MODES,
        },
    )
    tie_policy: str = field(
        default="drop",
        metadata={
            "help": "Pairwise data with ties: drop them, or keep them as a third verdict.",
            "choices": TIE_POLICIES,
        },
    )
    data_format: str = field(
        default="auto",
        metadata={
            "help": "Layout of train_file / eval_file: preference (TRL's prompt/chosen/rejected or implicit-prompt "
            "chosen/rejected, strings or message lists; pairwise tasks), fields (columns mapped by task_fields), or "
            "auto (preference when the rows have chosen and rejected and no task_fields are given).",
            "choices": DATA_FORMATS,
        },
    )
    preference_seed: int = field(
        default=0,
        metadata={"help": "Seed of the per-example coin that puts the chosen response in position A or B."},
    )

    def __post_init__(self) -> None:
        validate_fields(self)
        for name in ("task_fields", "task_labels"):
            value = getattr(self, name)
            check(
                value is None or isinstance(value, dict),
                name,
                f"must be a mapping (got {type(value).__name__})",
                f"write {name} as a YAML mapping, e.g. {{prompt: question}}",
            )
