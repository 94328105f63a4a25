"""The output dir as a run's home (issue 17, items 3, 4, 5 and 10): ``--overwrite_output_dir_contents`` replaces
exactly what fem wrote, the fingerprint covers everything that changes a result (every M-step setting but an
allow-list, the bytes of every data and template file), ``state.json`` is checked when read and names the adapter
relative to the run dir, so a moved or copied run resumes from its own files, from any working directory."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers import run_fem
from runs import FAST, RECIPE, assert_same_as_reference

from fem.preflight import resolve_adapter, train_config
from fem.recipe import parse_configs
from fem.state import MSTEP_NEUTRAL_KEYS, RunState, fingerprint
from fem.utils.run_info import run_record

CORPUS = Path(__file__).resolve().parent / "bad_inputs"


class ReachedCompute(Exception):
    pass


def _tripwire(*args, **kwargs):
    raise ReachedCompute


@pytest.fixture
def cli(monkeypatch, capsys):
    """``fem ...`` in-process with model loading replaced by a tripwire: returns (exit code, its error line)."""
    from fem.cli import main

    monkeypatch.setattr("fem.runtime.load_model_and_tokenizer", _tripwire)

    def run(*argv: str) -> tuple[object, str]:
        try:
            main(list(argv))
        except SystemExit as e:
            errors = [
                line for line in capsys.readouterr().err.splitlines() if line.startswith(f"fem {argv[0]}: error")
            ]
            assert len(errors) <= 1, errors
            return e.code, errors[-1] if errors else ""
        raise AssertionError("fem did not exit")

    return run


# -- item 3: overwrite replaces only what fem wrote --------------------------------------------------------------
def make_old_run(out: Path) -> dict[str, Path]:
    """A finished-looking run of another config, with the user's own files inside it."""
    RunState(config_hash="0123456789abcdef", config={"seed": 0}, completed={"0": ["estep"]}).save(out)
    fem_files = [
        "config.yaml", "metrics.jsonl", "report.md", "plots/curve.png", "baseline/metrics.json",
        "round_000/samples.jsonl", "round_000/estep_progress.jsonl", "round_000/metrics.json",
        "round_000/adapter/adapter_model.safetensors", "round_000/eval/predictions.jsonl",
        "round_007/samples.jsonl", ".state.json.k2j4h5g6.tmp", "round_000/.samples.jsonl.ab12cd34.tmp",
    ]  # fmt: skip
    user_files = [
        "notes.txt", "round_000/my_notes.txt", ".cache.abcdefgh.tmp", "data/.x.abcdefgh.tmp", "data/keep.jsonl",
    ]  # fmt: skip
    for name in fem_files + user_files:
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text("x\n")
    (out / "config.yaml").write_text(json.dumps(run_record({"seed": 0}, "fem train")))
    return {"fem": [out / n for n in fem_files], "user": [out / n for n in user_files]}


def test_overwrite_removes_every_file_of_the_old_run_and_nothing_else(tmp_path):
    out = tmp_path / "run"
    files = make_old_run(out)
    state = RunState.load_or_create(out, {"seed": 1}, overwrite=True)
    assert state.completed == {} and not (out / "state.json").exists()
    left = sorted(str(p.relative_to(out)) for p in files["fem"] if p.exists())
    assert not left, f"files of the old run survived the overwrite: {left}"
    lost = sorted(str(p.relative_to(out)) for p in files["user"] if not p.exists())
    assert not lost, f"the overwrite deleted files fem never wrote: {lost}"


# -- item 4: the fingerprint -------------------------------------------------------------------------------------
def judge_recipe(tmp_path: Path) -> list[str]:
    """A judge run on the user's own data and prompt template files (copied, so that the test may edit them)."""
    for name in ("pairs_good.jsonl",):
        shutil.copy(CORPUS / name, tmp_path / name)
    (tmp_path / "prompt.txt").write_text("Which is better for {prompt}?\nA: {response_a}\nB: {response_b}\n")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "model_name_or_path: tiny-random-llama\ntask: judge\n"
        "task_fields: {prompt: input, response_a: output_1, response_b: output_2, label: label}\n"
        f"task_labels: {{1: A, 2: B}}\ntrain_file: {tmp_path / 'pairs_good.jsonl'}\n"
        f"eval_file: {tmp_path / 'pairs_good.jsonl'}\nprompt_template: {tmp_path / 'prompt.txt'}\n"
        f"output_dir: {tmp_path / 'run'}\n"
    )
    return ["train", "--config", str(recipe), "--dry_run"]


def started_run(argv: list[str]) -> Path:
    """The state a run of ``argv`` writes at its start (what ``EMRunner.setup`` does, without a model)."""
    configs = parse_configs([a for a in argv[1:] if a != "--dry_run"])
    out = Path(configs.mstep.output_dir)
    out.mkdir(parents=True)
    RunState.load_or_create(out, train_config(configs), overwrite=False).save(out)
    return out


@pytest.mark.parametrize(
    "change, differs",
    [
        (["--max_grad_norm", "0.3"], "mstep.max_grad_norm"),
        (["--max_steps", "3"], "mstep.max_steps"),
        (["--optim", "sgd"], "mstep.optim"),
        (["--adam_beta2", "0.9"], "mstep.adam_beta2"),
        (["--packing", "true"], "mstep.packing"),
    ],
)
def test_a_changed_mstep_setting_is_refused_on_resume(change, differs, tmp_path, cli):
    argv = judge_recipe(tmp_path)
    started_run(argv)
    assert cli(*argv) == (0, "")
    assert cli(*argv, "--logging_steps", "7", "--report_to", "tensorboard") == (0, ""), "allow-listed keys resume"
    code, line = cli(*argv, *change)
    assert code == 2 and "different config" in line and differs in line, line


def test_edited_data_or_template_files_are_refused_on_resume(tmp_path, cli):
    argv = judge_recipe(tmp_path)
    started_run(argv)
    data = tmp_path / "pairs_good.jsonl"
    original = data.read_text()
    data.write_text(original.replace('"label": 1', '"label": 2', 1))  # a user "fixing" a label after a crash
    code, line = cli(*argv)
    assert code == 2 and "inputs.train" in line, line
    data.write_text(original)
    (tmp_path / "prompt.txt").write_text("Better for {prompt}? A: {response_a} B: {response_b}\n")
    code, line = cli(*argv)
    assert code == 2 and "inputs.templates" in line, line


def test_config_yaml_records_every_mstep_setting_and_the_fingerprint_all_but_the_allow_list(tmp_path):
    from fem.trl_configs import MStepConfig

    configs = parse_configs(["--config", RECIPE, "--output_dir", str(tmp_path / "run"), *FAST])
    config = train_config(configs)
    every = set(MStepConfig(output_dir=str(tmp_path)).to_dict())
    assert set(config["mstep"]) == every
    assert set(fingerprint(config)["mstep"]) == every - MSTEP_NEUTRAL_KEYS
    assert {"max_steps", "optim", "max_grad_norm", "adam_beta1", "packing", "seed"} <= set(
        fingerprint(config)["mstep"]
    )
    assert set(config["inputs"]) == {"train", "eval", "templates"} and len(config["inputs"]["templates"]) == 2


# -- items 5 and 10: state.json read with care; a run dir is self-contained -------------------------------------
@pytest.mark.parametrize(
    "edit, field",
    [
        ({"completed": {"0": "estep mstep eval", "1": "estep mstep eval"}}, "completed"),
        ({"completed": {"0": ["estep", "done"]}}, "completed"),
        ({"finished": "yes"}, "finished"),
        ({"last_adapter": "../../elsewhere/adapter"}, "last_adapter"),
        ({"config_hash": None}, "config_hash"),
    ],
)
def test_a_state_json_of_the_wrong_shape_is_one_line_not_a_finished_run(edit, field, tmp_path, cli):
    argv = ["train", "--config", RECIPE, "--output_dir", str(tmp_path / "run"), *FAST, "--dry_run"]
    out = started_run(argv)
    state = json.loads((out / "state.json").read_text())
    (out / "state.json").write_text(json.dumps({**state, **edit}))
    code, line = cli(*argv)
    assert code == 2 and "state.json" in line and f"field '{field}'" in line, line


def test_a_binary_state_json_is_one_line_for_train_and_eval(tmp_path, cli):
    out = tmp_path / "run"
    out.mkdir()
    (out / "state.json").write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe" * 10)
    code, line = cli("train", "--config", RECIPE, "--output_dir", str(out), "--dry_run")
    assert code == 2 and "state.json" in line and "unreadable" in line, line
    code, line = cli(
        "eval", "--config", RECIPE, "--adapter", str(out), "--output_dir", str(tmp_path / "e"), "--dry_run"
    )
    assert code == 2 and "state.json" in line and "unreadable" in line, line


def test_a_copied_run_dir_uses_its_own_adapter(tmp_path, reference, cli):
    copy = tmp_path / "copy"
    shutil.copytree(reference, copy)
    assert Path(resolve_adapter(str(copy))).is_relative_to(copy), "the copy resolves the original's adapter"
    weights = copy / "round_001" / "adapter" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # truncated: the copy's own adapter is unusable now
    argv = ["--config", RECIPE, "--output_dir", str(copy), *FAST, "--dry_run"]
    code, line = cli("train", *argv)
    assert code == 2 and "adapter" in line and "round_001" in line, line
    code, line = cli(
        "eval", "--config", RECIPE, "--adapter", str(copy), "--output_dir", str(tmp_path / "e"), "--dry_run"
    )
    assert code == 2 and "adapter" in line and "round_001" in line, line
    (copy / "round_001" / "adapter" / "adapter_config.json").unlink()
    code, line = cli("train", *argv)
    assert code == 2 and "adapter_config.json" in line, line


@pytest.mark.slow
def test_a_moved_run_resumes_from_another_working_directory(tmp_path, cache_dir, reference):
    """A run started as ``fem train --output_dir run`` (state.json then held ``run/round_001/adapter``, relative to
    that working dir), killed before its last eval, moved, and resumed from elsewhere: before the fix, a traceback."""
    moved = tmp_path / "moved"
    shutil.copytree(reference, moved)
    state = json.loads((moved / "state.json").read_text())
    state.update(finished=False, last_adapter="run/round_001/adapter")
    state["completed"]["1"] = ["estep", "mstep"]
    (moved / "state.json").write_text(json.dumps(state))
    shutil.rmtree(moved / "round_001" / "eval")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = run_fem(
        "train",
        "--config",
        RECIPE,
        "--output_dir",
        "../moved",
        *FAST,
        cwd=elsewhere,
        env={"FEM_CACHE": str(cache_dir)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "M-step" not in result.stderr and "E-step" not in result.stderr
    assert json.loads((moved / "state.json").read_text())["last_adapter"] == "round_001/adapter"
    assert_same_as_reference(moved, reference)
