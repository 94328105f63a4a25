"""Answers as text: where a rationale ends, what the M-step trains, and scoring an answer the model wrote.

- ``generate`` answer mode: ``score_written`` parses the completion with the task's ``extract``; an unparsed
  completion gets reward 0 and is counted (``Prediction.parsed`` is False), never an exception.
- ``forced`` answer mode reads the answer through the task's cue with the model: ``fem.readout`` (it uses
  ``cut_rationale`` and ``join_rationale`` from here).
"""

from __future__ import annotations

import dataclasses

from .base import Example, Prediction, Task

SEPARATOR = "\n\n"


def answer_markers(task: Task) -> tuple[str, ...]:
    return tuple(task.answer_markers) + ((task.answer_cue.strip(),) if task.answer_cue.strip() else ())


def cut_rationale(task: Task, completion: str) -> str:
    """The completion up to (excluding) the first answer marker the model wrote, trailing space removed."""
    end = len(completion)
    lowered = completion.lower()
    for marker in answer_markers(task):
        i = lowered.find(marker.lower())
        if 0 <= i < end:
            end = i
    return completion[:end].rstrip()


def join_rationale(rationale: str) -> str:
    """The rationale followed by the separator that precedes the cue (nothing when the rationale is empty)."""
    return rationale.rstrip() + SEPARATOR if rationale.strip() else ""


def training_completion(task: Task, rationale: str, example: Example, confidence: float | None = None) -> str:
    """M-step target: rationale (cut before any answer it wrote) ⊕ cue ⊕ gold answer.

    Tasks that state a confidence (``confidence_text``) get it appended when ``confidence`` is given (e.g. the
    kept sample's stated confidence in generate mode).
    """
    text = join_rationale(cut_rationale(task, rationale)) + task.answer_cue + task.answer_text(example)
    if confidence is not None:
        text += task.confidence_text(confidence)
    return text


def own_completion(task: Task, example: Example, prediction: Prediction, rationale: str) -> str:
    """The M-step target of a draw kept without the reward filter: the target a correct draw gets, with the model's
    own answer in place of the gold one (``training_completion`` of the extracted answer). An unparsed draw is kept
    as written: the completion (generate mode), or rationale ⊕ cue ⊕ the decoded answer text (forced mode: the
    ``rationale`` and ``forced_answer`` that ``fem.readout`` records in the prediction's info)."""
    if prediction.extracted is None:
        if prediction.info.get("mode") == "forced":
            info = prediction.info
            return join_rationale(info.get("rationale", "")) + task.answer_cue + info.get("forced_answer", "")
        return prediction.completion
    own = dataclasses.replace(example, answer=prediction.extracted)
    return training_completion(task, rationale, own, prediction.confidence)


def score_written(task: Task, example: Example, completion: str, index: int) -> Prediction:
    """The prediction of a completion that wrote its answer (generate mode)."""
    try:
        extracted = task.extract(completion)
    except Exception as exc:  # an extractor must never crash a run on odd model output
        return Prediction(
            example.id, completion, None, 0.0, index, info={"mode": "generate", "extract_error": repr(exc)}
        )
    reward = float(task.reward(extracted, example)) if extracted is not None else 0.0
    confidence = task.extract_confidence(completion) if extracted is not None else None
    return Prediction(example.id, completion, extracted, reward, index, confidence, {"mode": "generate"})
