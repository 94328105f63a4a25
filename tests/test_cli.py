"""The CLI answers help quickly (no heavy imports) and turns user errors into one line without a traceback."""

from __future__ import annotations

import subprocess
import sys

from helpers import ROOT, run_fem


def test_top_level_help_lists_commands():
    out = run_fem("--help")
    assert out.returncode == 0
    for command in ("train", "eval", "sample", "tasks", "bench", "report"):
        assert command in out.stdout


def test_help_does_not_import_torch():
    code = "import sys; from fem.cli import main\ntry:\n main(['train','--help'])\nexcept SystemExit: pass\nprint('torch' in sys.modules, 'trl' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.stdout.strip().splitlines()[-1] == "False False"


def test_train_help_lists_recipe_keys():
    out = run_fem("train", "--help")
    assert out.returncode == 0
    for key in ("--scheme", "--proposal", "--power_cut", "--rounds", "--dry_run", "trl.SFTConfig"):
        assert key in out.stdout


def test_unknown_command_is_one_line():
    out = run_fem("trian")
    assert out.returncode == 2
    assert "unknown command" in out.stderr and "Traceback" not in out.stderr


def test_tasks_check_refuses_a_limit_below_one(capsys):
    """``fem tasks check --limit -5`` checked everything but the last five examples (issue 17, item 12)."""
    import pytest

    from fem.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["tasks", "check", "toy_parity", "--limit", "-5"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and err[-1].startswith("fem tasks: error:") and "limit" in err[-1]
