"""Two fem runs writing to different output dirs at the same time both finish and both equal the
uninterrupted reference run (no shared temp file, cache or lock makes one corrupt the other)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from helpers import ROOT
from test_kill_resume import FAST, RECIPE, assert_same_as_reference, cache_dir, reference  # noqa: F401

pytestmark = [pytest.mark.reliability, pytest.mark.slow]


def test_two_runs_at_once_in_different_dirs(tmp_path, cache_dir, reference):  # noqa: F811
    env = {**os.environ, "FEM_CACHE": str(cache_dir)}
    outs = [tmp_path / "a", tmp_path / "b"]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "fem", "train", "--config", RECIPE, "--output_dir", str(out), *FAST],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for out in outs
    ]  # fmt: skip
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
    for out in outs:
        assert_same_as_reference(out, reference)
