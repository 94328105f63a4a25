"""Adapters between rounds: the vLLM backend decodes with exactly the adapter last loaded, including a second version
written to the same path (a reused LoRA name could be served from stale prefix-cache blocks), and unloading restores
the base model, in both adapter modes (merged into the served weights, or vLLM LoRA). The reference is the hf backend
with the same adapter."""

from __future__ import annotations

import pytest
import torch

from fem.generation.base import SamplingParams
from fem.proposals.power import rescore

pytestmark = pytest.mark.vllm

TOL = 1e-3
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]  # fem's M-step targets


def _write_adapter(model_dir, path, seed):
    """A random (non-zero) LoRA adapter of rank 8 on every linear layer, as PEFT saves it."""
    from peft import LoraConfig, get_peft_model

    from fem.models import load_model

    torch.manual_seed(seed)
    peft_model = get_peft_model(
        load_model(str(model_dir)),
        LoraConfig(r=8, lora_alpha=16, target_modules=TARGETS, init_lora_weights=False),
    )
    peft_model.save_pretrained(path)
    return str(path)


@pytest.fixture()
def hf_fresh(vllm_model_dir):
    from fem.generation.hf import HFBackend
    from fem.models import load_model_and_tokenizer

    return HFBackend(*load_model_and_tokenizer(str(vllm_model_dir)))


@pytest.fixture(scope="module")
def lora_backend(vllm_model_dir, hf_ref):
    """An engine serving adapters as vLLM LoRA (``adapter_mode="lora"``), in its own process (the session's
    in-process engine merges them)."""
    from fem.generation.vllm import VLLMBackend
    from fem.generation.vllm_engine import EngineOptions

    options = EngineOptions(
        max_model_len=512, kv_cache_gib=0.0625, adapter_mode="lora", max_lora_rank=8, block_size=32, in_process=False
    )
    backend = VLLMBackend(hf_ref.model, hf_ref.tokenizer, model_dir=str(vllm_model_dir), options=options)
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def compiled_backend(vllm_model_dir, hf_ref):
    """An engine in compiled mode (``vllm_enforce_eager: false``: torch.compile), adapters merged: reloading the
    weights in place must reach the compiled model. In its own process, as ``lora_backend``."""
    from fem.generation.vllm import VLLMBackend
    from fem.generation.vllm_engine import EngineOptions

    options = EngineOptions(
        max_model_len=512, kv_cache_gib=0.0625, enforce_eager=False, block_size=32, in_process=False
    )
    backend = VLLMBackend(hf_ref.model, hf_ref.tokenizer, model_dir=str(vllm_model_dir), options=options)
    yield backend
    backend.close()


@pytest.fixture(params=["merge", "lora", pytest.param("compiled", marks=pytest.mark.slow)])
def served(request, vllm_backend):
    """The backend under test in each adapter mode (and merged into a compiled engine: slow, it compiles)."""
    return vllm_backend if request.param == "merge" else request.getfixturevalue(f"{request.param}_backend")


def test_each_round_decodes_with_the_last_loaded_adapter(served, hf_fresh, vllm_model_dir, tmp_path):
    vllm_backend = served
    block = vllm_backend.engine.vllm_config.cache_config.block_size
    long = hf_fresh.encode("Response A Response B Instruction: which response is better? " * 40)[: block + 9]
    prefixes = [long, long[: block + 3], hf_fresh.encode("Verdict: A")]
    greedy = SamplingParams(temperature=0.0)
    try:
        base = vllm_backend.next_token_logprobs(prefixes)
        vllm_backend.generate(prefixes, greedy, 8)  # fill the prefix cache with base-model blocks
        rows = {}
        round_dir = tmp_path / "round_000" / "adapter"
        for version, seed in (("v1", 1), ("v2", 2)):  # v2 overwrites v1 at the same path
            path = _write_adapter(vllm_model_dir, round_dir, seed)
            vllm_backend.load_adapter(path)
            hf_fresh.load_adapter(path)
            assert vllm_backend.adapter_path == path
            rows[version] = vllm_backend.next_token_logprobs(prefixes)
            assert (rows[version] - hf_fresh.next_token_logprobs(prefixes)).abs().max() < TOL
            conts, _ = vllm_backend.generate(
                prefixes, SamplingParams(temperature=0.5, top_k=20), 12, generator=torch.Generator().manual_seed(seed)
            )
            for prefix, cont in zip(prefixes, conts):
                ref = rescore(hf_fresh, prefix, cont.token_ids, SamplingParams(temperature=0.5, top_k=20))
                for name in ("logp", "logq", "entropy"):
                    assert getattr(cont, name) == pytest.approx(getattr(ref, name), abs=TOL), name
        assert (rows["v1"] - base).abs().max() > 1e-2
        assert (rows["v2"] - rows["v1"]).abs().max() > 1e-2
        third = _write_adapter(vllm_model_dir, tmp_path / "round_001" / "adapter", 3)
        vllm_backend.load_adapter(third)
        hf_fresh.load_adapter(third)
        assert (vllm_backend.next_token_logprobs(prefixes) - hf_fresh.next_token_logprobs(prefixes)).abs().max() < TOL
    finally:
        vllm_backend.unload_adapter()
    assert vllm_backend.adapter_path is None
    assert (vllm_backend.next_token_logprobs(prefixes) - base).abs().max() < 1e-5


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_weights_cross_the_engine_process_boundary_bit_for_bit(dtype):
    """An engine in its own process receives merged weights as raw bytes (vLLM's serialisation would turn a tensor
    into a nested list); in process the tensors themselves are passed."""
    from fem.generation.vllm_worker import pack_weights, unpack_weights

    weights = [
        ("w", torch.randn(3, 5).to(dtype)),
        ("b", torch.randn(7).to(dtype)),
        ("t", torch.randn(4, 6).to(dtype).T),
    ]
    packed = pack_weights(weights, portable=True)
    assert all(isinstance(item[3], bytes) for item in packed)
    for (name, ref), (got_name, got) in zip(weights, unpack_weights(packed), strict=True):
        assert got_name == name and got.dtype == dtype and torch.equal(got, ref)
    assert all(t is ref for (_, t), (_, ref) in zip(pack_weights(weights, portable=False), weights, strict=True))


def test_merging_leaves_the_base_weights_untouched_and_refuses_dora(vllm_backend, vllm_model_dir, tmp_path):
    """The merged weights are computed out of place: the transformers model the M-step trains next keeps its exact
    weights and comes back without adapter layers; a DoRA adapter (not an additive delta) is refused."""
    from peft import LoraConfig, get_peft_model
    from peft.tuners.tuners_utils import BaseTunerLayer

    from fem.generation.adapter_weights import merged_weights
    from fem.models import load_model

    model = vllm_backend._model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    merged = merged_weights(model, _write_adapter(vllm_model_dir, tmp_path / "a", seed=5))
    assert sorted(merged) == sorted(n for n in before if n.rpartition(".")[0].rpartition(".")[2] in TARGETS)
    assert all((merged[n] - before[n]).abs().max() > 0 for n in merged)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert not any(isinstance(m, BaseTunerLayer) for m in model.modules())
    dora = get_peft_model(load_model(str(vllm_model_dir)), LoraConfig(r=8, target_modules=["q_proj"], use_dora=True))
    dora.save_pretrained(tmp_path / "dora")
    with pytest.raises(ValueError, match="DoRA"):
        merged_weights(model, tmp_path / "dora")


def test_load_adapter_rejects_what_the_engine_cannot_serve(lora_backend, vllm_model_dir, tmp_path):
    vllm_backend = lora_backend
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        vllm_backend.load_adapter(str(tmp_path))
    from peft import LoraConfig, get_peft_model

    from fem.models import load_model

    big = get_peft_model(load_model(str(vllm_model_dir)), LoraConfig(r=32, target_modules=["q_proj"]))
    big.save_pretrained(tmp_path / "big")
    with pytest.raises(ValueError, match="max_lora_rank"):
        vllm_backend.load_adapter(str(tmp_path / "big"))
    assert vllm_backend.adapter_path is None


def test_an_adapter_saved_with_full_module_paths_is_served(
    lora_backend, vllm_model_dir, hf_fresh, tmp_path, monkeypatch
):
    """PEFT may save target_modules as full paths ("model.layers.0.self_attn.q_proj", seen from a 2-process
    M-step); an engine that wraps layers by their last name (as a recipe's engine does) serves such an adapter like
    hf does, and still refuses one that targets a layer it does not wrap."""
    import json

    from peft import LoraConfig, get_peft_model

    vllm_backend = lora_backend
    monkeypatch.setattr(vllm_backend.options, "lora_target_modules", tuple(TARGETS))
    from fem.models import load_model as load

    head = get_peft_model(load(str(vllm_model_dir)), LoraConfig(r=8, target_modules=["lm_head"]))
    head.save_pretrained(tmp_path / "head")
    with pytest.raises(ValueError, match="serves without LoRA"):
        vllm_backend.load_adapter(str(tmp_path / "head"))

    path = _write_adapter(vllm_model_dir, tmp_path / "full", seed=4)
    config_file = tmp_path / "full" / "adapter_config.json"
    config = json.loads(config_file.read_text())
    from fem.models import load_model

    names = [n for n, _ in load_model(str(vllm_model_dir)).named_modules() if n.rpartition(".")[2] in TARGETS]
    config["target_modules"] = sorted(names)
    config_file.write_text(json.dumps(config))
    try:
        vllm_backend.load_adapter(path)
        served = vllm_backend.next_token_logprobs([[1, 2, 3]])  # the engine loads the adapter for this request
        hf_fresh.load_adapter(path)
        assert (served - hf_fresh.next_token_logprobs([[1, 2, 3]])).abs().max() < TOL
    finally:
        vllm_backend.unload_adapter()


def test_an_mstep_next_to_the_engine_trains_the_adapter_the_next_round_decodes_with(
    vllm_backend, hf_fresh, vllm_model_dir, tmp_path
):
    """One EM round in one process: the in-process engine (which initialises torch.distributed) does not keep TRL
    from training LoRA on the HF model, and the engine then serves exactly the trained adapter."""
    from peft import LoraConfig

    from fem.models import load_model
    from fem.mstep.sft import train_adapter
    from fem.trl_configs import MStepConfig

    rows = [
        {"prompt": [{"role": "user", "content": f"what is {a} + {b}?"}], "completion": f"The answer is {a + b}"}
        for a in range(4)
        for b in range(3)
    ]
    args = MStepConfig(
        output_dir=str(tmp_path / "run"),
        num_train_epochs=2,
        per_device_train_batch_size=4,
        learning_rate=5e-3,
        report_to="none",
        seed=0,
    )
    metrics = train_adapter(
        base_model=load_model(str(vllm_model_dir)),
        tokenizer=hf_fresh.tokenizer,
        rows=rows,
        args=args,
        peft_config=LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM"),
        adapter_dir=tmp_path / "adapter",
        init_adapter=None,
        weighted=False,
        seed=0,
    )
    assert metrics["mstep/steps"] > 0
    prefixes = [hf_fresh.encode("what is 2 + 1?"), hf_fresh.encode("Verdict: A")]
    base = vllm_backend.next_token_logprobs(prefixes)
    try:
        vllm_backend.load_adapter(str(tmp_path / "adapter"))
        hf_fresh.load_adapter(str(tmp_path / "adapter"))
        tuned = vllm_backend.next_token_logprobs(prefixes)
        assert (tuned - hf_fresh.next_token_logprobs(prefixes)).abs().max() < TOL
        assert (tuned - base).abs().max() > 1e-2
    finally:
        vllm_backend.unload_adapter()
