"""Task registry: names -> Task classes, dotted-path resolution, and data validation for ``--dry_run``."""

from __future__ import annotations

import importlib
from typing import Any

from fem.configs import TaskConfig
from fem.errors import ConfigError, DataError, FemError

from .base import Example, Messages, Prediction, Task

# name -> "module:Class" (imported lazily so `fem --help` stays fast)
_REGISTRY: dict[str, str] = {
    "judge": "fem.tasks.judge:JudgeTask",
    "judge_faireval": "fem.tasks.judge:JudgeFairEval",
    "judge_llmeval2": "fem.tasks.judge:JudgeLLMEval2",
    "judge_llmbar": "fem.tasks.judge:JudgeLLMBar",
    "judge_llmbar_natural": "fem.tasks.judge:JudgeLLMBarNatural",
    "judge_llmbar_adversarial": "fem.tasks.judge:JudgeLLMBarAdversarial",
    "summarize": "fem.tasks.summarize:SummarizeTask",
    "math500": "fem.tasks.math:Math500",
    "gsm8k": "fem.tasks.math:GSM8K",
    "aime24": "fem.tasks.math:AIME24",
    "aime26": "fem.tasks.math:AIME26",
    "amc23": "fem.tasks.math:AMC23",
    "humaneval": "fem.tasks.code:HumanEvalTask",
    "mbpp": "fem.tasks.code:MBPPTask",
    "arc": "fem.tasks.choice:ARC",
    "openbookqa": "fem.tasks.choice:OpenBookQA",
    "mmlu_stem": "fem.tasks.choice:MMLUStem",
    "gpqa": "fem.tasks.choice:GPQATask",
    "toy_arith": "fem.tasks.synthetic:ToyArithTask",
    "toy_parity": "fem.tasks.synthetic:ToyParityTask",
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
    "task_class",
    "validate_task_data",
]


def _import(target: str) -> Any:
    module, _, attr = target.rpartition(":") if ":" in target else target.rpartition(".")
    if not module:
        raise ImportError(f"'{target}' is not a dotted path")
    return getattr(importlib.import_module(module), attr)


def task_class(name: str) -> type:
    """The class of a registered task name or of a dotted path ``pkg.module.Class``; ConfigError otherwise."""
    if name in _REGISTRY:
        return _import(_REGISTRY[name])
    if "." not in name:
        close = [t for t in TASKS if name.lower() in t or t in name.lower()]
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ConfigError(
            f"unknown task '{name}'{hint}",
            field="task",
            fix=f"use one of {', '.join(TASKS)}, or a dotted path pkg.module.Class",
        )
    try:
        cls = _import(name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(
            f"cannot import task class '{name}' ({exc})",
            field="task",
            fix="check the dotted path and that its package is importable (pip install it or set PYTHONPATH)",
        ) from None
    if not isinstance(cls, type):
        raise ConfigError(
            f"'{name}' is not a class", field="task", fix="point task: to a class implementing fem.tasks.base.Task"
        )
    missing = [
        m
        for m in ("load", "prompt", "hinted_prompt", "extract", "reward", "options", "answer_text", "metrics")
        if not callable(getattr(cls, m, None))
    ]
    if missing:
        raise ConfigError(
            f"class '{name}' lacks {', '.join(missing)}",
            field="task",
            fix="implement the fem.tasks.base.Task protocol",
        )
    return cls


def check_task_name(name: str) -> None:
    """Raise ``ConfigError(field="task")`` unless ``name`` is a registered task or an importable Task class."""
    task_class(name)


def build_task(config: TaskConfig) -> Task:
    """The task a config names, constructed as ``cls(config)``."""
    return task_class(config.task)(config)


def validate_task_data(config: TaskConfig, splits: tuple[str, ...] = ("train", "eval")) -> dict[str, int]:
    """Load and validate the data of each split the config uses; returns ``{split: example count}``.

    Raises ``DataError`` (file, line, field, fix) on any problem, ``ConfigError`` for bad templates.
    """
    task = build_task(config)
    counts: dict[str, int] = {}
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
    return counts
