"""`accelerate launch` with the shipped CPU config really starts 2 processes (MULTI_CPU would silently run 1)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from helpers import ROOT

SCRIPT = """
from accelerate import PartialState
state = PartialState(cpu=True)
import torch.distributed as dist
print(f"rank={state.process_index} world={state.num_processes} backend={dist.get_backend() if dist.is_initialized() else None}", flush=True)
"""


@pytest.mark.distributed
def test_cpu_ddp_config_launches_two_processes(tmp_path):
    script = tmp_path / "probe.py"
    script.write_text(SCRIPT)
    accelerate = os.path.join(os.path.dirname(sys.executable), "accelerate")
    out = subprocess.run(
        [
            accelerate,
            "launch",
            "--config_file",
            str(ROOT / "accelerate_configs" / "cpu_ddp.yaml"),
            "--main_process_port",
            "0",
            str(script),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    # the two processes share one pipe, so their lines may interleave: match the fields, not whole lines
    assert sorted(re.findall(r"rank=(\d) world=(\d)", out.stdout)) == [("0", "2"), ("1", "2")], out.stdout
    assert re.findall(r"backend=(gloo|None)", out.stdout) == ["gloo", "gloo"], out.stdout
