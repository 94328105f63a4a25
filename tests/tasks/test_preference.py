"""TRL preference data read natively: the four shapes, the seeded coin, conversational rendering, malformed rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fem.configs import TaskConfig
from fem.errors import ConfigError, DataError
from fem.tasks import build_task
from fem.tasks.preference import coin

PAIRS = [  # (prompt, chosen, rejected); responses differ in their first word (an implicit prompt is the common prefix)
    ("Name a prime number.", "Seven is prime.", "Eight is prime."),
    ("What is 2 + 2?", "Four.", "Five."),
    ("Spell 'cat'.", "c-a-t", "d-o-g"),
    ("Capital of France?", "Paris.", "Berlin."),
]


def shape_rows(shape: str) -> list[dict]:
    """The same pairs written in one of TRL's four preference shapes."""
    rows = []
    for i, (p, c, r) in enumerate(PAIRS):
        user = [{"role": "user", "content": p}]
        if shape == "explicit_standard":
            row = {"prompt": p, "chosen": c, "rejected": r}
        elif shape == "implicit_standard":
            row = {"chosen": f"{p} {c}", "rejected": f"{p} {r}"}
        elif shape == "explicit_conversational":
            row = {
                "prompt": user,
                "chosen": [{"role": "assistant", "content": c}],
                "rejected": [{"role": "assistant", "content": r}],
            }
        else:
            row = {
                "chosen": user + [{"role": "assistant", "content": c}],
                "rejected": user + [{"role": "assistant", "content": r}],
            }
        rows.append({"id": f"q{i}", **row})
    return rows


SHAPES = ["explicit_standard", "implicit_standard", "explicit_conversational", "implicit_conversational"]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def judge(path: Path, **kw) -> object:
    return build_task(TaskConfig(task="judge", train_file=str(path), eval_file=str(path), **kw))


@pytest.mark.parametrize("shape", SHAPES)
def test_each_shape_reads_without_field_mapping(shape, tmp_path):
    task = judge(write_jsonl(tmp_path / f"{shape}.jsonl", shape_rows(shape)))
    examples = task.load("train")
    assert [e.id for e in examples] == ["q0", "q1", "q2", "q3"]
    for e, (p, c, r) in zip(examples, PAIRS):
        assert e.fields["prompt"] == p
        chosen_in_a = coin(0, e.id)
        assert e.answer == ("A" if chosen_in_a else "B")
        assert (e.fields["response_a"], e.fields["response_b"]) == ((c, r) if chosen_in_a else (r, c))
    kind = "conversational" if "conversational" in shape else "standard"
    assert task.data_format("train").startswith(f"preference ({kind}, {shape.split('_')[0]} prompt")
    assert "detected" in task.data_format("train")
    assert "Response A:" in task.prompt(examples[0])[-1]["content"]


def test_a_100_row_file_has_balanced_reproducible_gold_verdicts(tmp_path):
    rows = [{"prompt": f"Question {i}?", "chosen": f"good {i}", "rejected": f"bad {i}"} for i in range(100)]
    path = write_jsonl(tmp_path / "prefs.jsonl", rows)
    gold = [e.answer for e in judge(path).load("train")]
    assert abs(gold.count("A") - 50) <= 15  # Binomial(100, 1/2): 3 standard deviations
    assert gold == [e.answer for e in judge(path).load("train")]  # the same coin on every run
    other = [e.answer for e in judge(path, preference_seed=1).load("train")]
    assert other != gold and abs(other.count("A") - 50) <= 15
    for e in judge(path).load("train"):  # the chosen response sits where the gold verdict says
        assert e.fields["response_a" if e.answer == "A" else "response_b"].startswith("good")


def test_conversations_render_readably(tmp_path):
    history = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi, who are you?"},
        {"role": "assistant", "content": "An assistant."},
        {"role": "user", "content": "Tell me a joke."},
    ]
    row = {
        "chosen": history + [{"role": "assistant", "content": "Why did the chicken cross the road?"}],
        "rejected": history + [{"role": "assistant", "content": [{"type": "text", "text": "No."}]}],
    }
    (e,) = judge(write_jsonl(tmp_path / "chat.jsonl", [row])).load("train")
    assert e.fields["prompt"] == (
        "System: Be brief.\n\nUser: Hi, who are you?\n\nAssistant: An assistant.\n\nUser: Tell me a joke."
    )
    assert {e.fields["response_a"], e.fields["response_b"]} == {"Why did the chicken cross the road?", "No."}


def test_implicit_strings_never_split_a_word(tmp_path):
    row = {
        "chosen": "Human: Can you help?\n\nAssistant: Sure, here it is.",
        "rejected": "Human: Can you help?\n\nAssistant: Surely not.",
    }
    (e,) = judge(write_jsonl(tmp_path / "hh.jsonl", [row])).load("train")
    assert e.fields["prompt"] == "Human: Can you help?\n\nAssistant:"
    assert {e.fields["response_a"], e.fields["response_b"]} == {"Sure, here it is.", "Surely not."}


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"prompt": "Q?", "chosen": "same", "rejected": "same"}, "chosen and rejected are the same response"),
        ({"prompt": "Q?", "chosen": "fine", "rejected": "  "}, "'rejected' is an empty response"),
        (
            {"chosen": [{"role": "user", "content": "Q?"}], "rejected": [{"role": "user", "content": "Q2?"}]},
            "'chosen' has no assistant turn",
        ),
        ({"prompt": "Q?", "chosen": [{"role": "assistant", "content": "x"}], "rejected": "y"}, "like the file's"),
        ({"chosen": "Same start", "rejected": "Same start and more"}, "'chosen' is an empty response"),
    ],
)
def test_malformed_row_is_one_line_naming_file_and_line(bad, message, tmp_path):
    first = {"prompt": "Q?", "chosen": "good", "rejected": "bad"}
    if isinstance(bad["chosen"], list) and "prompt" not in bad:
        first = {
            "chosen": [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "a"}],
            "rejected": [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "b"}],
        }
    elif "prompt" not in bad:
        first = {"chosen": "Q? good", "rejected": "Q? bad"}
    path = write_jsonl(tmp_path / "prefs.jsonl", [first, first, bad])
    with pytest.raises(DataError) as info:
        judge(path).load("train")
    text = str(info.value)
    assert "\n" not in text and str(path) in text and "line 3" in text and message in text, text


def test_format_choice_and_tasks_without_pairs(tmp_path):
    path = write_jsonl(tmp_path / "prefs.jsonl", shape_rows("explicit_standard"))
    with pytest.raises(ConfigError, match="does not read preference data"):
        build_task(TaskConfig(task="gsm8k", train_file=str(path), data_format="preference")).load("train")
    plain = write_jsonl(tmp_path / "plain.jsonl", [{"input": "Q?", "output_1": "x", "output_2": "y", "label": 1}])
    with pytest.raises(DataError, match="not in TRL's preference format"):
        judge(plain, data_format="preference").load("train")
    task = judge(plain)  # auto: no chosen/rejected -> the task's own fields
    assert task.load("train")[0].answer == "A" and task.data_format("train") == "the task's own column names"
    mapped = judge(path, task_fields={"prompt": "prompt", "response_a": "chosen", "response_b": "rejected"})
    with pytest.raises(DataError, match="missing value for 'label'"):  # task_fields given: the user's mapping rules
        mapped.load("train")
    with pytest.raises(ConfigError):
        TaskConfig(task="judge", data_format="pairs")


def test_summarize_reads_preference_data(tmp_path):
    rows = [
        {"prompt": f"SUBREDDIT: r/x\nPOST: story {i}\nTL;DR:", "chosen": f"short {i}", "rejected": "meh"}
        for i in range(3)
    ]
    task = build_task(TaskConfig(task="summarize", eval_file=str(write_jsonl(tmp_path / "tldr.jsonl", rows))))
    for e in task.load("eval"):
        assert e.fields["post"].startswith("SUBREDDIT") and e.fields["human_confidence"] is None
        assert e.fields["summary_a" if e.answer == "A" else "summary_b"].startswith("short")
