"""``fem sample``: one JSON line per trace with any proposal, on the tiny random model."""

from __future__ import annotations

import json

from helpers import ROOT, run_fem

RECIPE = str(ROOT / "recipes/smoke/tiny_cpu.yaml")
KEYS = {"example_id", "sample_index", "proposal", "text", "num_tokens", "sum_logp", "mh_steps", "cost"}


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_sample_writes_one_line_per_trace(tmp_path):
    out = tmp_path / "ancestral.jsonl"
    result = run_fem(
        "sample", "--config", RECIPE, "--output_dir", str(tmp_path), "--eval_limit", "3", "--num_samples", "2",
        "--max_new_tokens", "6", "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "6 traces from 3 prompts" in result.stdout
    records = _lines(out)
    assert len(records) == 6
    for r in records:
        assert KEYS <= set(r)
        assert r["proposal"] == "ancestral" and r["mh_steps"] == 0
        assert 1 <= r["num_tokens"] <= 6 and r["sum_logp"] <= 0.0
        assert r["cost"]["tokens_decoded"] >= r["num_tokens"]
    assert [(r["example_id"], r["sample_index"]) for r in records][:2] == [
        (records[0]["example_id"], 0),
        (records[0]["example_id"], 1),
    ]
    assert len({r["example_id"] for r in records}) == 3


def test_sample_power_mh_train_split_default_path(tmp_path):
    result = run_fem(
        "sample", "--config", RECIPE, "--output_dir", str(tmp_path), "--split", "train", "--train_limit", "2",
        "--proposal", "power_mh", "--power_cut", "entropy", "--max_new_tokens", "4", "--power_block_size", "2",
        "--power_mh_steps", "3",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    records = _lines(tmp_path / "samples.jsonl")
    assert len(records) == 2 and all(KEYS <= set(r) for r in records)
    assert all(r["proposal"] == "power_mh" and r["mh_steps"] > 0 for r in records)
    assert all(r["cost"]["mh_steps"] == r["mh_steps"] for r in records)


def test_sample_power_smc(tmp_path):
    result = run_fem(
        "sample", "--config", RECIPE, "--output_dir", str(tmp_path), "--split", "train", "--train_limit", "2",
        "--proposal", "power_smc", "--smc_particles", "4", "--max_new_tokens", "4", "--power_block_size", "2",
        "--num_samples", "2", "--smc_resample_every", "token",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    records = _lines(tmp_path / "samples.jsonl")
    assert len(records) == 4 and all(KEYS <= set(r) for r in records)
    assert all(r["proposal"] == "power_smc" and r["info"]["particles"] == 4 and r["mh_steps"] == 0 for r in records)
    for example_id in {r["example_id"] for r in records}:  # the two traces share their system's 4-particle cost
        pair = [r for r in records if r["example_id"] == example_id]
        assert sum(r["cost"]["tokens_decoded"] for r in pair) >= 3 + max(r["num_tokens"] for r in pair)


def test_sample_bad_split_is_one_line(tmp_path, capsys):
    import pytest

    from fem.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["sample", "--config", RECIPE, "--output_dir", str(tmp_path), "--split", "test"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err
    assert [line for line in err.splitlines() if line.strip()][0].startswith("fem sample: error:")


def _cli(argv, capsys):
    import pytest

    from fem.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("fem sample: error:")]
    return exit_info.value.code, errors


def test_sample_never_appends_to_an_existing_file(tmp_path, capsys):
    """Issue 17, item 11: two identical runs left 16 lines for 8 traces, and ``--out`` naming the recipe appended
    JSON lines to it. An existing file is refused (unchanged) unless ``--overwrite``, which replaces it whole."""
    out = tmp_path / "traces.jsonl"
    out.write_text("the user's own file\n")
    argv = ["sample", "--config", RECIPE, "--output_dir", str(tmp_path), "--eval_limit", "2", "--max_new_tokens", "2"]
    code, errors = _cli([*argv, "--out", str(out)], capsys)
    assert code == 2 and len(errors) == 1 and "already exists" in errors[0] and "--overwrite" in errors[0]
    assert out.read_text() == "the user's own file\n"
    for _ in range(2):
        assert _cli([*argv, "--out", str(out), "--overwrite"], capsys) == (0, [])
        assert len(_lines(out)) == 2
    code, errors = _cli([*argv, "--out", str(tmp_path)], capsys)
    assert code == 2 and "is a directory" in errors[0]
    code, errors = _cli([*argv, "--out", str(out / "under_a_file.jsonl")], capsys)
    assert code == 2 and "field 'out'" in errors[0] and "not a directory" in errors[0]
