import pytest

from fem.configs import TaskConfig
from fem.readout import score_completions
from fem.tasks import build_task
from fem.tasks.answering import training_completion
from fem.tasks.check import run_checks
from fem.tasks.code import program_names

pytestmark = pytest.mark.usefixtures("code_sandbox")


@pytest.fixture(scope="module")
def humaneval():
    task = build_task(TaskConfig(task="humaneval"))
    return task, task.load("eval")


def test_humaneval_completion_forms(humaneval):
    task, examples = humaneval
    ex = examples[0]
    body = ex.answer[len(ex.fields["prompt"]) :]
    full = "Here is my solution:\n```python\n" + ex.answer + "\n```\nDone."
    wrong = "```python\n" + ex.fields["prompt"] + "    return not True\n```"
    preds = score_completions(
        task, None, [ex, ex, ex, ex], [full, body, wrong, ""], "generate", sample_indices=[0, 1, 2, 3]
    )
    assert [p.reward for p in preds] == [1.0, 1.0, 0.0, 0.0]
    assert not preds[3].parsed
    m = task.metrics(preds, [ex])
    assert m["pass@1"] == pytest.approx(0.5) and m["pass@4"] == 1.0
    assert task.reward(task.extract(training_completion(task, "think", ex)), ex) == 1.0


def test_mbpp_examples():
    task = build_task(TaskConfig(task="mbpp", eval_limit=3))
    for ex in task.load("eval"):
        assert task.reward(task.extract("```python\n" + ex.answer + "\n```"), ex) == 1.0
        assert task.reward(task.extract(task.answer_cue + task.wrong_answer_text(ex)), ex) == 0.0


def test_check_summary_table(capsys):
    assert run_checks(["gsm8k", "humaneval"], limit=4) == 0
    out = capsys.readouterr().out
    assert "gsm8k" in out and "2/2 tasks pass" in out


@pytest.mark.slow
def test_all_humaneval_canonical_solutions_pass(capsys):
    assert run_checks(["humaneval"]) == 0
    assert "humaneval                       164       0        0" in capsys.readouterr().out


def test_mbpp_tests_take_from_the_program_only_what_they_do_not_define():
    setup_and_tests = "import math\nroot = Node(1)\nroot.left = Node(2)\nassert max_height(root) == 2\nassert math.isclose(f(1), 1.0)\n"
    assert program_names(setup_and_tests, "max_height") == ("Node", "f", "max_height")
    assert program_names("assert sum(1, 2) == 3\n", "sum") == ("sum",)  # an entry point shadowing a builtin
    assert program_names("assert [x for x in g()] == [1]\n") == ("g",)
