"""Task registry: names -> Task classes (or a dotted path to your own), and data validation before compute."""

from __future__ import annotations

import hashlib
from pathlib import Path

from fem.configs import TaskConfig
from fem.errors import DataError, FemError
from fem.registry import Registry

from .base import Example, Messages, Prediction, Task

# name -> "pkg.module.Class" (imported when resolved)
_REGISTRY: dict[str, str] = {
    "judge": "fem.tasks.judge.JudgeTask",
    "judge_faireval": "fem.tasks.judge.JudgeFairEval",
    "judge_llmeval2": "fem.tasks.judge.JudgeLLMEval2",
    "judge_llmbar": "fem.tasks.judge.JudgeLLMBar",
    "judge_llmbar_natural": "fem.tasks.judge.JudgeLLMBarNatural",
    "judge_llmbar_adversarial": "fem.tasks.judge.JudgeLLMBarAdversarial",
    "summarize": "fem.tasks.summarize.SummarizeTask",
    "math500": "fem.tasks.math.Math500",
    "gsm8k": "fem.tasks.math.GSM8K",
    "aime24": "fem.tasks.math.AIME24",
    "aime26": "fem.tasks.math.AIME26",
    "amc23": "fem.tasks.math.AMC23",
    "humaneval": "fem.tasks.code.HumanEvalTask",
    "mbpp": "fem.tasks.code.MBPPTask",
    "arc": "fem.tasks.choice.ARC",
    "openbookqa": "fem.tasks.choice.OpenBookQA",
    "mmlu_stem": "fem.tasks.choice.MMLUStem",
    "gpqa": "fem.tasks.choice.GPQATask",
    "toy_arith": "fem.tasks.synthetic.ToyArithTask",
    "toy_parity": "fem.tasks.synthetic.ToyParityTask",
}
TASKS: list[str] = list(_REGISTRY)

__all__ = [
    "TASKS",
    "Example",
    "Messages",
    "Prediction",
    "Task",
    "build_task",
    "check_task_name",
    "input_digests",
    "task_class",
    "validate_task_data",
]


def _task_contract_gaps(cls: type) -> list[str]:
    if not issubclass(cls, Task):
        return ["the base class fem.tasks.base.Task"]
    return sorted(cls.__abstractmethods__)  # the abstract members it does not implement


TASK_REGISTRY = Registry(
    kind="task",
    entries=_REGISTRY,
    contract="a subclass of fem.tasks.base.Task",
    missing=_task_contract_gaps,
)


def task_class(name: str) -> type[Task]:
    """The class of a registered task name or of a dotted path ``pkg.module.Class``; ConfigError otherwise."""
    return TASK_REGISTRY.resolve(name)


def check_task_name(name: str) -> None:
    """Raise ``ConfigError(field="task")`` unless ``name`` is a registered task or an importable Task class."""
    TASK_REGISTRY.check(name)


def build_task(config: TaskConfig) -> Task:
    """The task a config names, constructed as ``cls(config)``."""
    return task_class(config.task)(config)


class DataCounts(dict):
    """``{split: example count}``, with ``formats``: ``{split: how its file was read}`` for user files (e.g. TRL's
    preference format, detected)."""

    formats: dict[str, str]


def validate_task_data(config: TaskConfig, splits: tuple[str, ...] = ("train", "eval")) -> DataCounts:
    """Load and validate the data of each split the config uses; returns ``{split: example count}``.

    Raises ``DataError`` (file, line, field, fix) on any problem, ``ConfigError`` for bad templates.
    """
    task = build_task(config)
    counts = DataCounts()
    for split in splits:
        try:
            examples = task.load(split)
        except FemError:
            raise
        except Exception as exc:  # a user-supplied task class failing on its data
            raise DataError(
                f"loading split '{split}' failed: {exc}", field="task", fix="check the data files the task reads"
            ) from exc
        if examples:  # render one prompt of each kind to surface template errors before any model loads
            task.prompt(examples[0])
            task.hinted_prompt(examples[0])
        counts[split] = len(examples)
    counts.formats = {split: task.data_format(split) for split in splits if task.data_format(split)}
    return counts


def file_digest(path: str | Path) -> str:
    """sha256 of a file's bytes (first 16 hex digits); ``missing`` when it cannot be read."""
    digest = hashlib.sha256()
    try:
        with open(Path(path).expanduser(), "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return "missing"
    return digest.hexdigest()[:16]


def input_digests(config: TaskConfig) -> dict[str, list[str]]:
    """The digest of every data and template file the task reads, by role (what a run's fingerprint holds)."""
    files = build_task(config).input_files()
    return {role: [file_digest(p) for p in paths] for role, paths in sorted(files.items())}
