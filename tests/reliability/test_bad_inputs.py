"""Hostile input corpus (tests/reliability/bad_inputs/): every malformed recipe, data file and output dir is
refused before any model loads, with exit status 2 and one line that names the file, the field and the fix; no
traceback and nothing written. Each recipe's first line, ``# expect: a|b|c``, lists text the error line must hold;
an optional second line, ``# never: x|y``, text it must not hold (e.g. content of a file that is not data).
Generated cases (a 100 MB line, a 50,000-deep YAML nesting) are written into a private copy of the corpus.

The cases run in-process through ``fem.cli.main`` (one TRL import for the whole corpus) with the model loader
and the EM runner replaced by tripwires; a few also run as a real ``fem train`` subprocess."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from helpers import run_fem

pytestmark = pytest.mark.reliability

CORPUS = Path(__file__).resolve().parent / "bad_inputs"
HUGE_LINE_MB = 100
DEPTH = 50_000
GENERATED = {
    "r34_deep_nesting.yaml": "# expect: r34_deep_nesting.yaml|nested more than\nmodel_name_or_path: tiny-random-llama\n"
    f"task: toy_parity\nlora_target_modules: {'[' * DEPTH}{']' * DEPTH}\n",
}
RECIPES = sorted([p.name for p in CORPUS.glob("*.yaml")] + list(GENERATED))


class ReachedCompute(Exception):
    """A tripwire: validation let the input through to model loading or the EM loop."""


def _tripwire(*args, **kwargs):
    raise ReachedCompute


def expectations(recipe: Path) -> tuple[list[str], list[str]]:
    """What the error line must hold (first line ``# expect: a|b``) and must not (optional ``# never: x|y``)."""
    first, second = (recipe.read_bytes().split(b"\n", 2) + [b"", b""])[:2]
    assert first.startswith(b"# expect: "), f"{recipe.name}: first line must be '# expect: a|b'"
    never = second.decode().removeprefix("# never: ").split("|") if second.startswith(b"# never: ") else []
    return first.decode().removeprefix("# expect: ").split("|"), never


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """A private copy of the corpus plus the generated 100 MB single-line file."""
    root = tmp_path_factory.mktemp("bad_inputs") / "corpus"
    shutil.copytree(CORPUS, root)
    record = {"input": "x" * (HUGE_LINE_MB * 1024 * 1024), "output_1": "a", "output_2": "b", "label": 1}
    (root / "huge_line.jsonl").write_text(json.dumps(record) + "\n", encoding="utf-8")
    for name, text in GENERATED.items():
        (root / name).write_text(text, encoding="utf-8")
    return root


def run_in_process(argv: list[str], capsys) -> tuple[object, str]:
    from fem.cli import main

    try:
        main(argv)
    except SystemExit as e:
        return e.code, capsys.readouterr().err
    except ReachedCompute:
        return "reached model loading", capsys.readouterr().err
    except BaseException as e:  # noqa: BLE001 - a traceback is exactly what this suite looks for
        return f"traceback: {type(e).__name__}: {e}", capsys.readouterr().err
    return 0, capsys.readouterr().err


def command(recipe: str, corpus: Path, out: Path) -> list[str]:
    argv = ["train", "--config", recipe]
    if b"\noutput_dir:" not in (corpus / recipe).read_bytes():
        argv += ["--output_dir", str(out)]
    return argv


@pytest.mark.parametrize("recipe", RECIPES)
def test_bad_input_is_refused_before_compute(recipe, corpus, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(corpus)
    monkeypatch.setattr("fem.runtime.load_model_and_tokenizer", _tripwire)
    monkeypatch.setattr("fem.commands.train.EMRunner", _tripwire)
    before = snapshot(corpus)
    code, err = run_in_process(command(recipe, corpus, tmp_path / "out"), capsys)
    assert code == 2, f"{recipe}: exit {code!r}\n{err[-1500:]}"
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("fem train: error: ")]
    assert len(errors) == 1 and "Traceback" not in err, f"{recipe}: not one error line:\n{err[-1500:]}"
    line = errors[0]
    expect, never = expectations(corpus / recipe)
    missing = [text for text in expect if text not in line]
    assert not missing, f"{recipe}: the error line lacks {missing}:\n{line}"
    leaked = [text for text in never if text in err]
    assert not leaked, f"{recipe}: the error output holds {leaked}:\n{line}"
    assert " -> " in line, f"{recipe}: the error line names no fix:\n{line}"
    assert len(line) < 600, f"{recipe}: the error line is {len(line)} characters"
    assert not (tmp_path / "out").exists(), f"{recipe}: output dir created"
    assert snapshot(corpus) == before, f"{recipe}: files written or changed next to the inputs"


@pytest.mark.parametrize(
    "recipe", ["r17_python_object_apply_tag.yaml", "d04_truncated_jsonl.yaml", "o01_output_dir_of_another_run.yaml"]
)
def test_real_cli_prints_one_line_and_exits_2(recipe, corpus, tmp_path):
    result = run_fem(*command(recipe, corpus, tmp_path / "out"), cwd=corpus)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr and "loading model" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("fem train: error: ")
    assert not (corpus / "fem_pwned_by_yaml").exists()


def test_yaml_is_loaded_safely_and_no_field_reaches_eval_exec_or_pickle():
    """Static guard: no eval/exec/pickle/unsafe YAML in the code that reads recipes, data and run state."""
    root = Path(__file__).resolve().parents[2] / "fem"
    readers = [
        "recipe.py",
        *(str(p.relative_to(root)) for p in sorted((root / "configs").glob("*.py"))),
        "state.py",
        "rundir.py",
        "preflight.py",
        "commands/train.py",
        "utils/io.py",
        "tasks/loading.py",
        "tasks/__init__.py",
    ]
    banned = [
        "eval(",
        "exec(",
        "import pickle",
        "pickle.load",
        "yaml.unsafe_load",
        "yaml.Loader",
        "FullLoader",
        "UnsafeLoader",
        "marshal",
        "torch.load(",
    ]
    for name in readers:
        text = (root / name).read_text()
        found = [b for b in banned if b in text and not (b == "eval(" and "eval(" not in text.replace("_eval(", ""))]
        assert not found, f"fem/{name} uses {found}"
    import yaml

    from fem.recipe import RecipeLoader

    assert issubclass(RecipeLoader, yaml.SafeLoader)
    recipe_text = (root / "recipe.py").read_text()
    assert recipe_text.count("yaml.load(") == recipe_text.count("Loader=RecipeLoader")
    with pytest.raises(yaml.YAMLError):
        yaml.load("x: !!python/object/apply:os.getcwd []\n", Loader=RecipeLoader)  # noqa: S506


def test_corpus_size():
    assert len(RECIPES) >= 68
    assert os.path.getsize(CORPUS / "pairs_good.jsonl") > 0
