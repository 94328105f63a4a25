"""Reward hacks (tests/reliability/reward_hacks/): completions that try to earn a code reward without solving the
task -- print the old success token, return an object equal to everything, read the tests or the data set, jump
over the asserts. Each is scored by the real HumanEval and MBPP rewards on their first 10 eval examples and must
earn 0 on every one, under each isolation; the same examples' reference solutions earn 1 under the same config, so a
0 means the hack failed, not the sandbox. A hack whose header has ``# escapes-MODE: WHY`` is not stopped under MODE:
a strict xfail, so the day it is stopped the test says so and the docs must change. Hacks know ``ENTRY_NAME`` (the
function the tests call) and ``DATA_FILES`` (the task's shipped data files)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from sandbox_modes import sandbox_config

from fem.configs import TaskConfig
from fem.tasks import build_task
from fem.tasks.code import CodeTask

pytestmark = pytest.mark.reliability

CORPUS = Path(__file__).resolve().parent / "reward_hacks"
HACKS = sorted(p.stem for p in CORPUS.glob("*.py"))
EXAMPLES = 10


def known_escape(name: str, mode: str) -> str:
    for line in (CORPUS / f"{name}.py").read_text().splitlines():
        if line.startswith(f"# escapes-{mode}:"):
            return line.split(":", 1)[1].strip()
    return ""


@pytest.fixture(scope="module", params=["humaneval", "mbpp"])
def task_and_examples(request):
    task = build_task(TaskConfig(task=request.param))
    return task, task.load("eval")[:EXAMPLES]


@pytest.mark.parametrize("mode", ["bwrap", "fallback"])
@pytest.mark.parametrize("hack", HACKS)
def test_reward_hack_earns_nothing(hack, mode, task_and_examples, request):
    base, examples = task_and_examples
    task = copy.copy(base)
    task.sandbox = sandbox_config(mode, CodeTask.sandbox, root_only=True)
    if known_escape(hack, mode):
        request.applymarker(pytest.mark.xfail(strict=True, reason=known_escape(hack, mode)))
    reference = examples[0]
    assert task.reward(task.extract(task.answer_cue + task.answer_text(reference)), reference) == 1.0
    files = [*task.files("eval"), *task.files("train")]
    source = (CORPUS / f"{hack}.py").read_text()
    rewards = {}
    for example in examples:
        header = f"ENTRY_NAME = {task.entry_point(example)!r}\nDATA_FILES = {files!r}\n"
        rewards[example.id] = task.reward(header + source, example)
    earned = {k: v for k, v in rewards.items() if v}
    assert not earned, f"{hack} under {mode} earned a reward on {len(earned)}/{len(rewards)}: {sorted(earned)}"
    print(f"{base.name} {hack} ({mode}): 0/{len(rewards)}")
