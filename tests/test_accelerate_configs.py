"""Shipped accelerate configs load with accelerate's own loader; DeepSpeed sections pass DeepSpeed's checker."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import ROOT

CONFIGS = sorted((ROOT / "accelerate_configs").glob("*.yaml"))


def test_expected_configs_exist():
    names = {p.name for p in CONFIGS}
    assert {
        "cpu_ddp.yaml",
        "single_gpu.yaml",
        "multi_gpu.yaml",
        "deepspeed_zero2.yaml",
        "deepspeed_zero3.yaml",
    } <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_accelerate_loads_config(path: Path):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(path))
    assert config.num_processes >= 1
    if path.name == "cpu_ddp.yaml":
        # MULTI_CPU would silently run one process (stack_probe.md section 4)
        assert config.distributed_type.value == "MULTI_GPU" and config.num_processes == 2


@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_checker_accepts_zero_config(stage: int):
    from accelerate.commands.config.config_args import load_config_from_file
    from deepspeed.runtime.config import DeepSpeedConfig

    config = load_config_from_file(str(ROOT / "accelerate_configs" / f"deepspeed_zero{stage}.yaml"))
    ds = config.deepspeed_config
    assert ds["zero_stage"] == stage and ds["zero3_save_16bit_model"] is True
    if stage == 3:
        assert ds["zero3_init_flag"] is True
    checked = DeepSpeedConfig(
        {
            "train_micro_batch_size_per_gpu": 1,
            "gradient_accumulation_steps": ds["gradient_accumulation_steps"],
            "gradient_clipping": ds["gradient_clipping"],
            "zero_optimization": {
                "stage": ds["zero_stage"],
                "offload_optimizer": {"device": ds["offload_optimizer_device"]},
                "offload_param": {"device": ds["offload_param_device"]},
                "stage3_gather_16bit_weights_on_model_save": ds["zero3_save_16bit_model"],
            },
        }
    )
    assert checked.zero_optimization_stage == stage


def test_deepspeed_checker_rejects_bad_stage():
    from deepspeed.runtime.config import DeepSpeedConfig
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        DeepSpeedConfig({"train_micro_batch_size_per_gpu": 1, "zero_optimization": {"stage": 7}})
