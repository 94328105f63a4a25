"""The M-step: LoRA SFT through TRL changes only adapter weights, saves a non-empty reloadable adapter, and the
reward-weighted loss equals TRL's own loss when every weight is 1."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from helpers import SMOKE_RECIPE

from fem.errors import ConfigError

ROWS = [
    {
        "prompt": [{"role": "user", "content": f"what is {a} + {b}?"}],
        "completion": f"{a} + {b} = {a + b}. The answer is {a + b}",
        "weight": 1.0,
    }
    for a in range(4)
    for b in range(3)
]


def make_args(tmp_path: Path, **overrides):
    from fem.trl_configs import MStepConfig

    values = dict(
        output_dir=str(tmp_path / "run"),
        num_train_epochs=2,
        per_device_train_batch_size=4,
        learning_rate=5e-3,
        report_to="none",
        seed=0,
    )
    values.update(overrides)
    return MStepConfig(**values)


def peft_config():
    from peft import LoraConfig

    return LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM")


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from fem.models import load_model_and_tokenizer

    return load_model_and_tokenizer(str(tiny_model_dir))


def test_lora_trains_adapter_only_and_reloads(tiny, tmp_path):
    from peft import PeftModel
    from safetensors.torch import load_file

    from fem.mstep.adapters import verify_adapter
    from fem.mstep.sft import train_adapter

    model, tokenizer = tiny
    before = {k: v.clone() for k, v in model.state_dict().items()}
    metrics = train_adapter(
        base_model=model,
        tokenizer=tokenizer,
        rows=ROWS,
        args=make_args(tmp_path),
        peft_config=peft_config(),
        adapter_dir=tmp_path / "adapter",
        init_adapter=None,
        weighted=False,
        seed=0,
    )
    assert metrics["mstep/steps"] > 0 and metrics["mstep/loss"] > 0 and metrics["mstep/loss_curve"]
    # the backend's base model is untouched
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    stats = verify_adapter(tmp_path / "adapter")
    assert stats["tensors"] > 0 and stats["values"] > 0
    lora = load_file(str(tmp_path / "adapter" / "adapter_model.safetensors"))
    # LoRA B matrices start at zero; after training they moved
    assert any(t.abs().sum() > 0 for k, t in lora.items() if "lora_B" in k)
    reloaded = PeftModel.from_pretrained(copy.deepcopy(model), str(tmp_path / "adapter"))
    ids = tokenizer("what is 1 + 2?", return_tensors="pt").input_ids
    with torch.no_grad():
        assert not torch.allclose(reloaded(ids).logits, model(ids).logits)


def test_weighted_loss_matches_stock_loss_with_unit_weights(tiny, tmp_path):
    from trl import SFTTrainer

    from fem.mstep.sft import WeightedCollator, WeightedSFTTrainer, build_dataset

    model, tokenizer = tiny
    losses = []
    for weighted in (False, True):
        args = make_args(tmp_path / str(weighted), max_steps=1, remove_unused_columns=not weighted)
        cls = WeightedSFTTrainer if weighted else SFTTrainer
        extra = {"data_collator": WeightedCollator(tokenizer.pad_token_id)} if weighted else {}
        trainer = cls(
            model=copy.deepcopy(model),
            args=args,
            train_dataset=build_dataset(ROWS, tokenizer, weighted),
            processing_class=tokenizer,
            peft_config=peft_config(),
            **extra,
        )
        batch = next(iter(trainer.get_train_dataloader()))
        with torch.no_grad():
            losses.append(float(trainer.compute_loss(trainer.model, dict(batch))))
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)


def test_zero_weight_removes_a_sample(tiny, tmp_path):
    from fem.mstep.sft import WeightedCollator, WeightedSFTTrainer, build_dataset

    model, tokenizer = tiny
    rows = [dict(ROWS[0], weight=1.0), dict(ROWS[5], weight=0.0)]
    args = make_args(tmp_path, max_steps=1, remove_unused_columns=False, per_device_train_batch_size=2)
    trainer = WeightedSFTTrainer(
        model=copy.deepcopy(model),
        args=args,
        train_dataset=build_dataset(rows, tokenizer, True),
        processing_class=tokenizer,
        peft_config=peft_config(),
        data_collator=WeightedCollator(tokenizer.pad_token_id),
    )
    batch = dict(next(iter(trainer.get_train_dataloader())))
    batch_only_first = {k: v[batch["weight"] > 0] for k, v in batch.items()}
    with torch.no_grad():
        both = float(
            trainer.compute_loss(
                trainer.model, dict(batch), num_items_in_batch=(batch["labels"][batch["weight"] > 0] != -100).sum()
            )
        )
        first = float(trainer.compute_loss(trainer.model, batch_only_first))
    assert both == pytest.approx(first, rel=1e-5)


def test_eos_check_accepts_chatml(tiny):
    from fem.mstep.sft import check_eos

    _, tokenizer = tiny
    check_eos(tokenizer, {tokenizer.eos_token_id})
    with pytest.raises(ConfigError):
        check_eos(tokenizer, {tokenizer.pad_token_id})


def test_mstep_leaves_the_run_config_as_the_recipe_said(tiny, tmp_path):
    """Each round trains with its own output dir and seeds on a copy: the run's MStepConfig is not rewritten."""
    from fem.mstep.sft import train_adapter

    model, tokenizer = tiny
    args = make_args(tmp_path, max_steps=1)
    before = {k: getattr(args, k) for k in ("output_dir", "seed", "data_seed", "remove_unused_columns")}
    train_adapter(
        base_model=model,
        tokenizer=tokenizer,
        rows=ROWS[:4],
        args=args,
        peft_config=peft_config(),
        adapter_dir=tmp_path / "round_003" / "adapter",
        init_adapter=None,
        weighted=True,
        seed=12345,
    )
    assert (tmp_path / "round_003" / "trainer").is_dir()  # the round's copy wrote there
    assert {k: getattr(args, k) for k in before} == before


def test_a_diverging_mstep_is_refused_with_one_line_and_saves_no_adapter(tiny, tmp_path):
    """``learning_rate 1e30`` made every adapter value NaN, and the adapter was "verified" and evaluated (issue 17,
    item 6). Now the M-step stops at the first non-finite loss and no adapter is written."""
    from fem.errors import FemError
    from fem.mstep.sft import train_adapter

    model, tokenizer = tiny
    with pytest.raises(FemError) as info:
        train_adapter(
            base_model=model,
            tokenizer=tokenizer,
            rows=ROWS,
            args=make_args(tmp_path, learning_rate=1e30, num_train_epochs=3),
            peft_config=peft_config(),
            adapter_dir=tmp_path / "adapter",
            init_adapter=None,
            weighted=False,
            seed=0,
        )
    line = info.value.one_line()
    assert "diverged" in line and "learning_rate" in line and "\n" not in line
    assert not (tmp_path / "adapter").exists()


def test_an_adapter_holding_nan_fails_verification(tmp_path):
    from safetensors.torch import save_file

    from fem.mstep.adapters import AdapterError, verify_adapter

    (tmp_path / "adapter_config.json").write_text("{}")
    save_file(
        {"lora_A": torch.ones(2, 2), "lora_B": torch.full((2, 2), float("nan"))},
        tmp_path / "adapter_model.safetensors",
    )
    with pytest.raises(AdapterError, match="NaN or infinite"):
        verify_adapter(tmp_path)
    (tmp_path / "adapter_model.safetensors").write_bytes(b"\x00" * 10)  # truncated: one line, not a traceback
    with pytest.raises(AdapterError, match="damaged"):
        verify_adapter(tmp_path)


class StopBeforeTraining(Exception):
    pass


@pytest.mark.parametrize("weighted", [False, True])
def test_the_production_mstep_puts_only_completion_tokens_in_the_loss(weighted, tiny, tmp_path, monkeypatch):
    """The trainer ``train_adapter`` builds from the recipe's own ``MStepConfig`` (what the loop passes) labels the
    completion only: no prompt token is in the loss (issue 17, item 13: switching completion-only loss off inside
    the production M-step survived every test that built its own trainer)."""
    from transformers import Trainer

    from fem.mstep.sft import train_adapter
    from fem.recipe import parse_configs

    model, tokenizer = tiny
    batches = []

    def first_batch_then_stop(self, *args, **kwargs):
        batches.append(dict(next(iter(self.get_train_dataloader()))))
        raise StopBeforeTraining

    monkeypatch.setattr(Trainer, "train", first_batch_then_stop)
    configs = parse_configs(["--config", SMOKE_RECIPE, "--output_dir", str(tmp_path / "run")])
    with pytest.raises(StopBeforeTraining):
        train_adapter(
            base_model=model,
            tokenizer=tokenizer,
            rows=ROWS,
            args=configs.mstep,
            peft_config=peft_config(),
            adapter_dir=tmp_path / "adapter",
            init_adapter=None,
            weighted=weighted,
            seed=0,
        )
    batch = batches[0]
    assert len(batch["input_ids"]) == min(len(ROWS), configs.mstep.per_device_train_batch_size)
    for ids, labels in zip(batch["input_ids"], batch["labels"]):
        trained = tokenizer.decode(ids[labels != -100])
        ignored = tokenizer.decode(ids[(labels == -100) & (ids != tokenizer.pad_token_id)])
        assert "what is" not in trained and "what is" in ignored, (trained, ignored)
        assert "The answer is" in trained
