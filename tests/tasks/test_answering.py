import pytest

from fem.configs import TaskConfig
from fem.drawing import render_prompt
from fem.readout import score_completions
from fem.tasks import build_task
from fem.tasks.answering import cut_rationale, own_completion, training_completion
from fem.tasks.base import Example


def judge_example(answer="A"):
    return Example(id="j1", answer=answer, fields={"prompt": "p", "response_a": "a", "response_b": "b"})


def test_forced_closed_reads_option_probabilities(fake_backend):
    task = build_task(TaskConfig(task="judge", answer_mode="forced"))
    backend = fake_backend(prefer={"A": 2.0, "B": 1.0})
    completion = "Response A answers the question. Verdict: B\nConfidence: 99%"
    preds = score_completions(
        task,
        backend,
        [judge_example("A"), judge_example("B")],
        [completion, "short"],
        "forced",
        prompt_ids=[[1, 2], [1, 2]],
    )
    import math

    p_a = math.exp(2) / (math.exp(2) + math.exp(1))
    assert preds[0].extracted == "A" and preds[0].reward == 1.0
    assert preds[0].confidence == pytest.approx(p_a)
    assert preds[1].extracted == "A" and preds[1].reward == 0.0
    # the model's own "Verdict: B" was cut: the query ends with the rationale, the cue and the shared space
    assert backend.decode(backend.queries[0][2:]) == "Response A answers the question.\n\nVerdict: "
    assert preds[0].info["rationale"] == "Response A answers the question."


def test_forced_closed_choice(fake_backend):
    task = build_task(TaskConfig(task="arc"))
    ex = Example(id="c", answer="C", fields={"question": "q", "choices": ["w", "x", "y", "z"]})
    [pred] = score_completions(
        task, fake_backend(prefer={"C": 3.0}), [ex], ["Because y. The answer is (A)"], "forced", prompt_ids=[[5]]
    )
    assert pred.extracted == "C" and pred.reward == 1.0 and pred.confidence > 0.8


def test_forced_open_greedy_to_stop(fake_backend):
    task = build_task(TaskConfig(task="toy_arith"))
    ex = Example(id="t", answer="7", fields={"a": 3, "b": 4})
    preds = score_completions(task, fake_backend(script=" 7. and more text"), [ex], ["3 plus 4 is seven."], "forced")
    assert preds[0].extracted == "7" and preds[0].reward == 1.0 and preds[0].info["forced_answer"] == " 7."
    math_task = build_task(TaskConfig(task="gsm8k"))
    ex2 = Example(id="m", answer="12", fields={"problem": "q"})
    [p] = score_completions(math_task, fake_backend(script=" \\boxed{12}.\nextra"), [ex2], ["work"], "forced")
    assert p.reward == 1.0


def test_forced_open_unparsed(fake_backend):
    task = build_task(TaskConfig(task="toy_arith"))
    ex = Example(id="t", answer="7", fields={"a": 3, "b": 4})
    [p] = score_completions(task, fake_backend(script=" seven"), [ex], ["hmm"], "forced")
    assert not p.parsed and p.reward == 0.0


def test_training_completion_cuts_model_answer():
    task = build_task(TaskConfig(task="gsm8k"))
    ex = Example(id="g", answer="18")
    text = training_completion(task, "16 - 3 - 4 = 9 eggs, 9 * 2 = 18. The answer is \\boxed{20}.", ex)
    assert text == "16 - 3 - 4 = 9 eggs, 9 * 2 = 18.\n\nThe answer is \\boxed{18}."
    assert task.reward(task.extract(text), ex) == 1.0
    judge = build_task(TaskConfig(task="judge"))
    jt = training_completion(judge, "A is right.\nVerdict: B\nConfidence: 60%", judge_example("A"), confidence=0.8)
    assert jt == "A is right.\n\nVerdict: A\nConfidence: 80%"
    assert judge.extract(jt) == "A"
    choice = build_task(TaskConfig(task="arc"))
    ex3 = Example(id="c", answer="B", fields={"question": "q", "choices": ["x", "y"]})
    assert training_completion(choice, "", ex3) == "The answer is (B)."
    assert cut_rationale(choice, "reason. Answer: A") == "reason."


def test_own_completion_is_the_draw_with_its_own_answer(fake_backend):
    """The M-step target of a draw kept without the reward filter: a correct draw's format, with the model's answer."""
    judge = build_task(TaskConfig(task="judge", answer_mode="forced"))
    ex = judge_example("A")
    text = "A is right. Verdict: A"
    [closed] = score_completions(judge, fake_backend(prefer={"B": 3.0}), [ex], [text], "forced", prompt_ids=[[1]])
    assert closed.reward == 0.0 and closed.extracted == "B"
    percent = round(100 * closed.confidence)
    assert own_completion(judge, ex, closed, text) == f"A is right.\n\nVerdict: B\nConfidence: {percent}%"
    choice = build_task(TaskConfig(task="arc"))
    ex = Example(id="c", answer="C", fields={"question": "q", "choices": ["w", "x", "y", "z"]})
    [picked] = score_completions(
        choice, fake_backend(prefer={"A": 3.0}), [ex], ["Because w."], "forced", prompt_ids=[[5]]
    )
    assert own_completion(choice, ex, picked, "Because w.") == "Because w.\n\nThe answer is (A)."
    arith = build_task(TaskConfig(task="toy_arith"))
    ex = Example(id="t", answer="7", fields={"a": 3, "b": 4})
    [opened] = score_completions(arith, fake_backend(script=" 8. more"), [ex], ["3 plus 4."], "forced")
    assert (
        opened.reward == 0.0
        and own_completion(arith, ex, opened, "3 plus 4.") == "3 plus 4.\n\n" + arith.answer_cue + " 8."
    )
    [unparsed] = score_completions(arith, fake_backend(script=" eight"), [ex], ["3 plus 4."], "forced")
    decoded = unparsed.info["forced_answer"]
    assert not unparsed.parsed and decoded.startswith(" ei")
    assert own_completion(arith, ex, unparsed, "3 plus 4.") == "3 plus 4.\n\n" + arith.answer_cue + decoded
    gsm = build_task(TaskConfig(task="gsm8k"))
    ex = Example(id="g", answer="4")
    for written, target in (
        ("2 + 2 = 5. The answer is \\boxed{5}.", "2 + 2 = 5.\n\nThe answer is \\boxed{5}."),
        ("2 + 2 is five", "2 + 2 is five"),  # unparsed: kept as written
    ):
        [generated] = score_completions(gsm, None, [ex], [written], "generate")
        assert generated.reward == 0.0 and own_completion(gsm, ex, generated, written) == target


def test_render_prompt_chat_and_plain(fake_backend):
    from fem.testing.tiny import build_tiny_tokenizer

    tok = build_tiny_tokenizer()
    msgs = [{"role": "user", "content": "hi"}]
    text = tok.decode(render_prompt(tok, msgs, system_prompt="be brief"))
    assert text.startswith("<|im_start|>system\nbe brief") and text.endswith("<|im_start|>assistant\n")
    backend = fake_backend()
    assert backend.decode(render_prompt(backend, msgs)) == "hi\n\n"


def test_prompts_and_hints_render_for_every_task():
    from fem.tasks import TASKS

    for name in TASKS:
        if name == "gpqa":
            continue
        task = build_task(TaskConfig(task=name, eval_limit=1, system_prompt="sys"))
        ex = task.load("eval")[0]
        plain, hinted = task.prompt(ex), task.hinted_prompt(ex)
        assert plain[0]["role"] == "system" and plain[-1]["content"]
        assert task.hint_text(ex) in hinted[-1]["content"]


def test_judge_swaps_and_position_consistency():
    from fem.tasks.base import Prediction

    task = build_task(TaskConfig(task="judge"))
    ex = judge_example("A")
    sw = task.swapped(ex)
    assert sw.answer == "B" and sw.fields["response_a"] == "b" and sw.id == "j1:swapped"
    preds = [Prediction("j1", "", "A", 1.0, 0, 0.9), Prediction("j1:swapped", "", "B", 1.0, 0, 0.7)]
    m = task.metrics(preds, task.with_swaps([ex]))
    assert m["position_consistency"] == 1.0 and m["accuracy"] == 1.0
    preds[1] = Prediction("j1:swapped", "", "A", 0.0, 0, 0.7)
    m = task.metrics(preds, task.with_swaps([ex]))
    assert m["position_consistency"] == 0.0
    assert m["brier"] == pytest.approx(((0.9 - 1) ** 2 + 0.7**2) / 2)


def test_summarize_human_target_metrics():
    from fem.tasks.base import Prediction

    task = build_task(TaskConfig(task="summarize"))
    ex = Example(id="s", answer="B", fields={"human_confidence": 9})
    m = task.metrics([Prediction("s", "", "B", 1.0, 0, 0.9)], [ex])
    assert m["brier"] == pytest.approx((0.9 - 8.5 / 9) ** 2)
    assert m["accuracy_by_human_confidence"]["definite (1/9)"]["accuracy"] == 1.0


def _runtime(fake, **eval_kwargs):
    from fem.configs import EMConfig, EStepConfig, EvalConfig, ProposalConfig
    from fem.run_configs import Configs
    from fem.runtime import Runtime

    task_config = TaskConfig(task="judge", answer_mode="forced")
    configs = Configs(
        task=task_config,
        proposal=ProposalConfig(max_new_tokens=16),
        estep=EStepConfig(),
        eval=EvalConfig(**eval_kwargs),
        em=EMConfig(),
        mstep=None,
        model=None,
    )
    return Runtime(configs, build_task(task_config), None, None, fake, None)


def test_estep_keeps_the_read_out_confidence_in_the_training_completion(fake_backend):
    """A forced E-step trains the whole asked format: rationale, verdict, and the model's read-out probability as
    its stated confidence, so a model trained on it writes what generate-mode evaluation parses."""
    import math

    from fem.drawing import PLAIN
    from fem.proposals.base import Trace

    class Fixed:
        name = "fixed"

        def propose(self, prompts, num_samples=1, *, seed=0):
            return [[Trace(token_ids=[1], text="A is right.", logp=[-1.0])] * num_samples for _ in prompts]

    runtime = _runtime(fake_backend(prefer={"A": 2.0, "B": 1.0}))
    drawer = runtime.drawer(Fixed(), sample_answers=True)
    drawer.render = lambda example, origin: [1, 2]
    [[sample]] = drawer.draw([judge_example("A")], PLAIN, 1, seed=0)
    p_a = math.exp(2) / (math.exp(2) + math.exp(1))
    expected = round(100 * p_a) if sample.prediction.extracted == "A" else round(100 * (1 - p_a))
    assert sample.completion == f"A is right.\n\nVerdict: A\nConfidence: {expected}%"
    assert runtime.task.extract(sample.completion) == "A"
    assert runtime.task.extract_confidence(sample.completion) == pytest.approx(expected / 100)


def test_eval_answer_mode_overrides_the_answer_mode_of_evaluation_only(fake_backend):
    runtime = _runtime(fake_backend(prefer={"A": 2.0}), eval_answer_mode="generate")
    ex = judge_example("A")
    written = "B looks better.\nVerdict: B\nConfidence: 70%"
    [evaluated] = runtime.drawer(None).score([ex], [[1]], [written], 0)
    assert evaluated.info["mode"] == "generate" and evaluated.extracted == "B" and evaluated.confidence == 0.7
    [estep] = runtime.drawer(None, sample_answers=True).score([ex], [[1]], [written], 0)
    assert estep.info["mode"] == "forced"
    [no_format] = runtime.drawer(None).score([ex], [[1]], ["B looks better."], 0)
    assert not no_format.parsed and no_format.reward == 0.0


def test_prompt_kv_is_kept_only_for_a_forced_read_out(fake_backend):
    import contextlib

    backend = fake_backend()
    backend.reuse_prompts = lambda: contextlib.nullcontext()  # stands for HFBackend.reuse_prompts
    runtime = _runtime(backend, eval_answer_mode="generate")
    assert runtime.drawer(None, sample_answers=True).session is backend.reuse_prompts  # forced E-step
    assert runtime.drawer(None).session is contextlib.nullcontext  # generate-mode evaluation


def test_eval_answer_mode_is_checked():
    from fem.configs import EvalConfig
    from fem.errors import ConfigError

    with pytest.raises(ConfigError, match="eval_answer_mode"):
        EvalConfig(eval_answer_mode="guess")
    with pytest.raises(ConfigError, match="eval_max_new_tokens"):
        EvalConfig(eval_max_new_tokens=0)
