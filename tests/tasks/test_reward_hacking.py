"""Completions that try to pass without passing: early successful exits earn nothing, a correct program that exits
with a non-zero status earns nothing (the reward counts the program's exit status); truncated answers are unparsed.
The reward hacks that need the sandbox's isolation are in tests/reliability/test_reward_hacks.py."""

from __future__ import annotations

import pytest

from fem.configs import TaskConfig
from fem.tasks import build_task
from fem.tasks.math import final_answer


@pytest.mark.usefixtures("code_sandbox")
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


@pytest.mark.usefixtures("code_sandbox")
@pytest.mark.parametrize("name", ["humaneval", "mbpp"])
def test_a_correct_program_that_exits_with_a_non_zero_status_earns_nothing(name):
    """Its answers are right and everything it printed is flushed; only its exit status says it failed."""
    task = build_task(TaskConfig(task=name, eval_limit=1))
    example = task.load("eval")[0]
    assert task.reward(example.answer, example) == 1.0
    for tail in (
        "import atexit, os, sys\natexit.register(lambda: (sys.stdout.flush(), os._exit(3)))\n",
        "import os, sys, threading\nthreading.Timer(0.2, lambda: (sys.stdout.flush(), os._exit(4))).start()\n",
    ):
        assert task.reward(example.answer + "\n" + tail, example) == 0.0, tail


def test_unclosed_boxed_answer_is_unparsed():
    assert final_answer("The final answer is \\boxed{24") is None
    assert final_answer("The answer is 24.") == "24"
