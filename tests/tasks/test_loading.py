import gzip
import json

import pytest

from fem.configs import TaskConfig
from fem.errors import ConfigError, DataError
from fem.tasks import TASKS, build_task, check_task_name, validate_task_data
from fem.tasks.loading import hash_split, read_rows

PAIR = {"input": "q", "output_1": "a", "output_2": "b", "label": 1}


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def judge_config(path, **kw):
    return TaskConfig(task="judge", train_file=str(path), eval_file=str(path), **kw)


def test_field_and_label_mapping_on_odd_csv(tmp_path):
    f = tmp_path / "my pairs.csv"
    f.write_text(
        "Question Text,first answer,second answer,winner\nWhat is 2+2?,4,5,one\nName a colour,blue,,two\n",
        encoding="utf-8",
    )
    cfg = judge_config(
        f,
        task_fields={
            "prompt": "Question Text",
            "response_a": "first answer",
            "response_b": "second answer",
            "label": "winner",
        },
        task_labels={"one": "A", "two": "B"},
    )
    examples = build_task(cfg).load("eval")
    assert [e.answer for e in examples] == ["A", "B"]
    assert examples[0].fields["prompt"] == "What is 2+2?"
    assert validate_task_data(cfg) == {"train": 2, "eval": 2}


def test_numeric_label_mapping_and_nested_fields(tmp_path):
    f = write_jsonl(tmp_path / "n.jsonl", [{"x": {"q": "Q"}, "r": ["a", "b"], "pref": 2}])
    cfg = judge_config(
        f,
        task_fields={"prompt": "x.q", "response_a": "r.0", "response_b": "r.1", "label": "pref"},
        task_labels={1: "A", 2: "B"},
    )
    [ex] = build_task(cfg).load("train")
    assert ex.answer == "B" and ex.fields["response_b"] == "b"


def _error(cfg):
    with pytest.raises(DataError) as info:
        validate_task_data(cfg)
    return str(info.value)


def test_missing_field_names_file_line_field(tmp_path):
    f = write_jsonl(tmp_path / "d.jsonl", [PAIR, {"input": "q", "output_1": "a", "label": 2}])
    msg = _error(judge_config(f))
    assert "d.jsonl" in msg and "line 2" in msg and "output_2" in msg and "->" in msg


def test_wrong_label_value(tmp_path):
    f = write_jsonl(tmp_path / "d.jsonl", [PAIR, PAIR, {**PAIR, "label": 3}])
    msg = _error(judge_config(f))
    assert "line 3" in msg and "'label'" in msg and "3" in msg


def test_truncated_json_line(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text(json.dumps(PAIR) + "\n" + json.dumps(PAIR)[:-9] + "\n", encoding="utf-8")
    msg = _error(judge_config(f))
    assert "d.jsonl" in msg and "line 2" in msg and "not valid JSON" in msg


def test_empty_file(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text("\n  \n")
    assert "is empty" in _error(judge_config(f))


def test_non_utf8(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_bytes(
        (json.dumps(PAIR) + "\n").encode() + b'{"input": "caf\xe9", "output_1": "a", "output_2": "b", "label": 1}\n'
    )
    msg = _error(judge_config(f))
    assert "line 2" in msg and "UTF-8" in msg


def test_missing_file_and_bad_suffix(tmp_path):
    assert "not found" in _error(judge_config(tmp_path / "nope.jsonl"))
    bad = tmp_path / "d.parquet"
    bad.write_text("x")
    assert "unsupported" in _error(judge_config(bad))


def test_json_array_and_gz(tmp_path):
    f = tmp_path / "d.json.gz"
    f.write_bytes(gzip.compress(json.dumps([PAIR, {**PAIR, "label": 2}]).encode()))
    rows, where = read_rows(f)
    assert len(rows) == 2 and where == ["record 1", "record 2"]
    assert validate_task_data(judge_config(f)) == {"train": 2, "eval": 2}


def test_duplicate_ids_rejected(tmp_path):
    f = write_jsonl(tmp_path / "d.jsonl", [{**PAIR, "uid": "x"}, {**PAIR, "uid": "x"}])
    msg = _error(judge_config(f, task_fields={"id": "uid"}))
    assert "appears twice" in msg


def test_registry_names_and_dotted_paths():
    for name in TASKS:
        check_task_name(name)
    check_task_name("fem.tasks.math.GSM8K")
    for bad in ("gsm8", "no.such.module.Task", "fem.tasks.math.Nope"):
        with pytest.raises(ConfigError) as info:
            check_task_name(bad)
        assert info.value.field == "task"


def test_template_override_and_bad_placeholder(tmp_path):
    t = tmp_path / "p.txt"
    t.write_text("Q: {problem}\nA:")
    task = build_task(TaskConfig(task="gsm8k", prompt_template=str(t), eval_limit=2))
    ex = task.load("eval")[0]
    assert task.prompt(ex)[0]["content"].startswith("Q: Janet")
    with pytest.raises(ConfigError) as info:
        build_task(TaskConfig(task="gsm8k", prompt_template="{question}")).prompt(ex)
    assert info.value.field == "prompt_template"


def test_shipped_splits_deterministic_and_disjoint():
    task = build_task(TaskConfig(task="summarize"))
    train, evals = task.load("train"), task.load("eval")
    assert {e.fields["post_id"] for e in train}.isdisjoint({e.fields["post_id"] for e in evals})
    assert len(train) + len(evals) == 1771
    assert [e.id for e in task.load("eval")] == [e.id for e in evals]
    assert hash_split("abc", 0.5) == hash_split("abc", 0.5)
    judge = build_task(TaskConfig(task="judge"))
    assert {e.fields["prompt"] for e in judge.load("train")}.isdisjoint(
        {e.fields["prompt"] for e in judge.load("eval")}
    )


def test_limits_and_missing_split():
    task = build_task(TaskConfig(task="math500", eval_limit=5))
    assert len(task.load("eval")) == 5
    with pytest.raises(DataError) as info:
        task.load("train")
    assert info.value.field == "train_file"


def test_gpqa_official_csv_layout(tmp_path):
    import csv

    f = tmp_path / "gpqa_diamond.csv"
    with f.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(
            [
                "Record ID",
                "Question",
                "Correct Answer",
                "Incorrect Answer 1",
                "Incorrect Answer 2",
                "Incorrect Answer 3",
                "Subdomain",
            ]
        )
        for i in range(6):
            w.writerow(
                [
                    f"rec{i}",
                    f"Question {i}, with a comma?",
                    f"right {i}",
                    f"wrong {i}a",
                    f"wrong {i}b",
                    f"wrong {i}c",
                    "Physics",
                ]
            )
    cfg = TaskConfig(task="gpqa", eval_file=str(f))
    task = build_task(cfg)
    examples = task.load("eval")
    assert len(examples) == 6
    for ex in examples:
        assert ex.fields["choices"][ord(ex.answer) - 65].startswith("right")
        assert sorted(ex.fields["choices"]) == sorted(
            [f"right {ex.id[3:]}"] + [f"wrong {ex.id[3:]}{c}" for c in "abc"]
        )
    assert [e.answer for e in build_task(cfg).load("eval")] == [e.answer for e in examples]  # fixed seed
    assert len({e.answer for e in examples}) > 1  # shuffled
    assert task.reward(task.extract("The answer is (" + examples[0].answer + ")"), examples[0]) == 1.0


def test_choice_user_columns(tmp_path):
    f = tmp_path / "mc.csv"
    f.write_text("q,o1,o2,o3,key\nSky colour?,red,blue,green,2\n")
    cfg = TaskConfig(
        task="arc",
        eval_file=str(f),
        task_fields={"question": "q", "choices": "o1,o2,o3", "answer": "key"},
        task_labels={1: "A", 2: "B", 3: "C"},
    )
    [ex] = build_task(cfg).load("eval")
    assert ex.answer == "B" and ex.fields["choices"] == ["red", "blue", "green"]
    f.write_text("q,o1,o2,o3,key\nSky colour?,red,blue,green,E\n")
    with pytest.raises(DataError) as info:
        build_task(
            TaskConfig(
                task="arc", eval_file=str(f), task_fields={"question": "q", "choices": "o1,o2,o3", "answer": "key"}
            )
        ).load("eval")
    assert "line 2" in str(info.value) and "key" in str(info.value)
