"""The forced answer read-out: after the rationale, append the task's answer cue and let the model answer.

For closed answers the backend's next-token log-probabilities over the options' first differing tokens are
renormalized over the options: the verdict is their argmax (or, with an ``rng``, a draw from them) and the
confidence its probability. For open answers the cue is followed by greedy decoding up to the task's stop string,
and the result is parsed. The task only declares its cue, options, option text and stop (``fem.tasks.base.Task``);
this module asks the backend. ``score_completions`` scores in either answer mode. Tasks that state a confidence
can also have it written by the model after the forced verdict (``confidence="stated"``) or read as the expected
value of the number it would write (``confidence="stated_mean"``, ``stated_means``), and ``option_probabilities``
reads the options right after a prompt (the plain read-out of ``confidence_target``).
"""

from __future__ import annotations

import functools
import math
import random
from collections.abc import Sequence

from fem.errors import ConfigError
from fem.generation.base import GenerationBackend, SamplingParams
from fem.tasks.answering import cut_rationale, join_rationale, score_written
from fem.tasks.base import Example, Prediction, Task
from fem.tasks.prompting import plain_text

STATED_MAX_NEW_TOKENS = 6  # " 85%" is 2-4 tokens for common tokenizers
CONFIDENCES = ("readout", "stated", "stated_mean")
READOUT_ROWS = 16  # next-token rows per backend call of the stated_mean tree (each holds its prefix's KV)
# the stated_mean tree: the nodes after " " whose next token is read (1 + 9 + 1 = 11 rows per prediction)
MEAN_NODES: tuple[tuple[int, ...], ...] = ((), *((d,) for d in range(1, 10)), (1, 0))


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _default_prompt_ids(task: Task, backend: GenerationBackend, example: Example) -> list[int]:
    return list(backend.encode(plain_text(task.prompt(example))))


def score_completions(
    task: Task,
    backend: GenerationBackend,
    examples: Sequence[Example],
    completions: Sequence[str],
    answer_mode: str = "generate",
    *,
    prompt_ids: Sequence[Sequence[int]] | None = None,
    sample_indices: Sequence[int] | None = None,
    batch_size: int = 16,
    rng: random.Random | None = None,
    confidence: str = "readout",
) -> list[Prediction]:
    """One ``Prediction`` per (example, completion) pair (the two lists are aligned).

    ``prompt_ids`` are the token ids each completion was generated from (needed by forced mode; by default the
    plain prompt text is encoded with ``backend.encode``). ``backend`` is unused in generate mode.
    With ``rng`` (the E-step), forced mode *samples* the verdict from the option probabilities instead of taking
    the argmax: the E-step draws the answer from the model, as it draws the rationale.
    ``confidence="stated"`` (forced mode, tasks with a ``confidence_cue``): after the verdict the model writes its
    confidence line (greedy, up to ``STATED_MAX_NEW_TOKENS``); the prediction's confidence is what it states (None
    when it states none), the read-out stays in ``info["readout"]``. ``confidence="stated_mean"``: the same greedy
    line is written (``info["stated"]``, its value ``info["stated_value"]``) but the confidence is the expected value
    of the number the model writes (``stated_means``).
    """
    if len(examples) != len(completions):
        raise ValueError(f"{len(examples)} examples but {len(completions)} completions")
    if confidence not in CONFIDENCES:
        raise ValueError(f"unknown confidence '{confidence}' (one of {', '.join(CONFIDENCES)})")
    indices = list(sample_indices) if sample_indices is not None else [0] * len(examples)
    if answer_mode == "generate":
        return [score_written(task, ex, c, i) for ex, c, i in zip(examples, completions, indices)]
    if answer_mode != "forced":
        raise ValueError(f"unknown answer_mode '{answer_mode}' (generate or forced)")
    if prompt_ids is None:
        prompt_ids = [_default_prompt_ids(task, backend, ex) for ex in examples]
    out: list[Prediction | None] = [None] * len(examples)
    closed = [i for i, ex in enumerate(examples) if task.options(ex)]
    opened = [i for i, ex in enumerate(examples) if not task.options(ex)]
    stated = confidence if confidence != "readout" and task.confidence_cue else None
    for kind, read in ((closed, functools.partial(_forced_closed, rng=rng, stated=stated)), (opened, _forced_open)):
        for start in range(0, len(kind), batch_size):
            rows = kind[start : start + batch_size]
            picked = [[seq[i] for i in rows] for seq in (examples, completions, prompt_ids, indices)]
            for i, pred in zip(rows, read(task, backend, *picked)):
                out[i] = pred
    return [p for p in out if p is not None]


def option_probabilities(
    task: Task, backend: GenerationBackend, examples: Sequence[Example], prompt_ids: Sequence[Sequence[int]]
) -> list[dict[str, float]]:
    """The read-out right after each prompt (no rationale): the option probabilities, renormalized over the options."""
    preds = score_completions(task, backend, examples, [""] * len(examples), "forced", prompt_ids=prompt_ids)
    return [dict(p.info["option_probs"]) for p in preds]


def stated_confidences(
    task: Task, backend: GenerationBackend, prefixes: Sequence[Sequence[int]]
) -> list[tuple[float | None, str]]:
    """What the model states after each prefix (which ends with the task's ``confidence_cue``): greedy decoding up
    to ``%`` or a line break, parsed with ``extract_confidence``; ``(confidence or None, the text written)``."""

    def stop_callback(row: int, cont) -> bool:
        text = backend.decode(cont.token_ids)
        return "%" in text or "\n" in text.lstrip("\n")

    params = SamplingParams(temperature=0.0)
    conts, _ = backend.generate(
        [list(p) for p in prefixes], params, STATED_MAX_NEW_TOKENS, stop_callback=stop_callback
    )
    out = []
    for cont in conts:
        text = backend.decode([t for t in cont.token_ids if t not in backend.eos_token_ids])
        out.append((task.extract_confidence(task.confidence_cue + text), text))
    return out


def number_tokens(backend: GenerationBackend, cue: str) -> tuple[int, list[int], int]:
    """``(space, [digit 0..9], percent)`` token ids, when the backend's tokenizer writes ``cue + " N%"`` for every
    N in 0..100 as the cue's own ids, one token for the space, one per digit and one for ``%`` (SmolLM2's does); a
    ``ConfigError`` otherwise, e.g. for a tokenizer with multi-digit tokens (``stated_mean`` would not be exact)."""
    head = list(backend.encode(cue))
    tails = [list(backend.encode(f"{cue} {n}%")) for n in range(101)]
    one_digit = [t[len(head) + 1] if len(t) == len(head) + 3 else -1 for t in tails[:10]]
    space, pct = (tails[0][len(head)], tails[0][-1]) if len(tails[0]) == len(head) + 3 else (-1, -1)
    for n, ids in enumerate(tails):
        if ids != [*head, space, *(one_digit[int(c)] for c in str(n)), pct]:
            raise ConfigError(
                f"eval_confidence stated_mean needs a tokenizer that writes numbers digit by digit: "
                f"{cue + f' {n}%'!r} encodes as {ids}",
                field="eval_confidence",
                fix="use eval_confidence stated (greedy) with this model",
            )
    return space, one_digit, pct


def _renormalized(row, token_ids: Sequence[int]) -> list[float]:
    """The probabilities of ``token_ids`` in a next-token log-probability row, renormalized over them."""
    scores = [float(row[t]) for t in token_ids]
    top = max(scores)
    if not math.isfinite(top):
        return [1.0 / len(scores)] * len(scores)
    weights = [math.exp(s - top) if math.isfinite(s) else 0.0 for s in scores]
    total = sum(weights)
    return [w / total for w in weights]


def stated_means(task: Task, backend: GenerationBackend, prefixes: Sequence[Sequence[int]]) -> list[float]:
    """The expected confidence the model states after each prefix (which ends with the task's ``confidence_cue``):
    ``E[N] / 100`` where N in 0..100 is written ``" N%"`` and drawn as constrained decoding would draw it, token by
    token from the model's next-token probabilities renormalized over the tokens that keep the text a number in
    0..100 (no leading zero) followed by ``%``. Exact, from 11 next-token rows per prefix (after ``" "``: the first
    digit; after ``" d"``, d = 1..9: ``%`` or a second digit; after ``" 10"``: ``%`` or the last ``0`` of 100);
    ``" 0"`` and two-digit numbers other than 10 can only be followed by ``%``. Needs a tokenizer that writes numbers
    digit by digit (``number_tokens``); the rows extend the prefix by 1-3 tokens, so a backend that keeps the
    prefix's KV (the ``hf`` prompt cache after ``stated_confidences``, vLLM's prefix cache) encodes almost nothing."""
    space, digits, pct = number_tokens(backend, task.confidence_cue)
    queries = [[*p, space, *(digits[d] for d in node)] for p in prefixes for node in MEAN_NODES]
    rows = []
    for start in range(0, len(queries), READOUT_ROWS):
        rows.extend(backend.next_token_logprobs(queries[start : start + READOUT_ROWS]))
    out = []
    for k in range(len(prefixes)):
        root, *after, ten = rows[k * len(MEAN_NODES) : (k + 1) * len(MEAN_NODES)]
        first = _renormalized(root, digits)  # the first digit; " 0" is 0
        end10, then0 = _renormalized(ten, [pct, digits[0]])
        mean = 0.0
        for d, row in zip(range(1, 10), after):
            stop, *second = _renormalized(row, [pct, *digits])
            value = stop * d + sum(p * (10 * d + e) for e, p in enumerate(second))
            if d == 1:  # " 10" goes on to 100 with probability then0
                value += second[0] * (end10 * 10 + then0 * 100 - 10)
            mean += first[d] * value
        out.append(mean / 100)
    return out


def _forced_closed(
    task: Task,
    backend: GenerationBackend,
    examples,
    completions,
    prompts,
    indices,
    rng: random.Random | None = None,
    stated: str | None = None,
) -> list[Prediction]:
    queries: dict[tuple[int, ...], int] = {}  # prefix -> row in the logprob batch (shared prefixes asked once)
    plans = []
    for ex, completion, prompt in zip(examples, completions, prompts):
        rationale = cut_rationale(task, completion)
        context = join_rationale(rationale) + task.answer_cue
        options = list(task.options(ex))
        fulls = [list(backend.encode(context + task.option_text(o))) for o in options]
        # the options are read at their first differing token, after the longest prefix they all share
        k = min(len(f) for f in fulls)
        for f in fulls[1:]:
            k = min(k, _common_prefix(fulls[0], f))
        k = min(k, min(len(f) for f in fulls) - 1)
        row = queries.setdefault(tuple(list(prompt) + fulls[0][:k]), len(queries))
        per_option = [(o, row, f[k]) for o, f in zip(options, fulls)]
        plans.append((ex, completion, rationale, per_option, prompt, context))
    logprobs = backend.next_token_logprobs([list(p) for p in queries]) if queries else None
    preds = []
    for (ex, completion, rationale, per_option, _, _), index in zip(plans, indices):
        scores = [float(logprobs[row, token]) for _, row, token in per_option]
        top = max(scores)
        weights = [math.exp(s - top) if math.isfinite(s) else 0.0 for s in scores]
        total = sum(weights)
        probs = [w / total for w in weights] if total > 0 else [1.0 / len(weights)] * len(weights)
        if rng is None:
            best = max(range(len(probs)), key=lambda j: probs[j])
        else:
            best = rng.choices(range(len(probs)), weights=probs)[0]
        verdict = per_option[best][0]
        mass = sum(math.exp(s) for s in scores if math.isfinite(s))
        info = {
            "mode": "forced",
            "rationale": rationale,
            "option_probs": {o: p for (o, _, _), p in zip(per_option, probs)},
            "option_mass": mass,
        }
        preds.append(Prediction(ex.id, completion, verdict, float(task.reward(verdict, ex)), index, probs[best], info))
    if stated:
        prefixes = [
            list(prompt) + list(backend.encode(context + task.option_text(p.extracted) + task.confidence_cue))
            for p, (_, _, _, _, prompt, context) in zip(preds, plans)
        ]
        for p, (value, text) in zip(preds, stated_confidences(task, backend, prefixes)):
            p.info.update(readout=p.confidence, stated=text, stated_value=value)
            p.confidence = value
        if stated == "stated_mean":  # after the greedy line: its prefixes are in the backend's cache now
            for p, mean in zip(preds, stated_means(task, backend, prefixes)):
                p.info["stated_mean"] = mean
                p.confidence = mean
    return preds


def _forced_open(task: Task, backend: GenerationBackend, examples, completions, prompts, indices) -> list[Prediction]:
    stop = task.forced_stop
    max_new = int(task.forced_max_new_tokens)
    rationales = [cut_rationale(task, c) for c in completions]
    prefixes = [
        list(p) + list(backend.encode(join_rationale(r) + task.answer_cue)) for p, r in zip(prompts, rationales)
    ]

    def stop_callback(row: int, cont) -> bool:
        return stop in backend.decode(cont.token_ids)

    conts, _ = backend.generate(prefixes, SamplingParams(temperature=0.0), max_new, stop_callback=stop_callback)
    preds = []
    for ex, completion, rationale, cont, index in zip(examples, completions, rationales, conts, indices):
        answer = backend.decode([t for t in cont.token_ids if t not in backend.eos_token_ids])
        if stop in answer:
            answer = answer[: answer.index(stop) + (len(stop) if stop in (".", "```") else 0)]
        text = task.answer_cue + answer
        try:
            extracted = task.extract(text)
        except Exception:
            extracted = None
        reward = float(task.reward(extracted, ex)) if extracted is not None else 0.0
        preds.append(
            Prediction(
                ex.id,
                completion,
                extracted,
                reward,
                index,
                None,
                {"mode": "forced", "rationale": rationale, "forced_answer": answer},
            )
        )
    return preds
