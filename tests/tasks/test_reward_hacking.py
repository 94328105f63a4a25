"""Completions that try to pass without passing: early successful exits earn nothing; truncated answers are unparsed."""

from __future__ import annotations

import pytest

from fem.configs import TaskConfig
from fem.tasks import build_task
from fem.tasks.math import final_answer


@pytest.mark.parametrize(
    "trick",
    [
        "import sys\nsys.exit(0)\n",
        "import os\nos._exit(0)\n",
        "import atexit, os\natexit.register(os._exit, 0)\nraise SystemExit(1)\n",
    ],
)
def test_exiting_with_status_zero_before_the_tests_earns_nothing(trick):
    task = build_task(TaskConfig(task="humaneval", eval_limit=1))
    example = task.load("eval")[0]
    assert task.reward(example.answer, example) == 1.0  # the canonical solution still passes
    entry = task.entry_point(example)
    hacked = f"{trick}\ndef {entry}(*args, **kwargs):\n    return None\n"
    assert task.reward(hacked, example) == 0.0


def test_unclosed_boxed_answer_is_unparsed():
    assert final_answer("The final answer is \\boxed{24") is None
    assert final_answer("The answer is 24.") == "24"
