"""One vLLM engine per test session, over a tiny random Llama vLLM's CPU attention accepts (head size 32), and the
``hf`` reference backend over the same folder. The test modules here are marked ``vllm``; the engine fixture skips
them when vLLM is not installed. Tests that need another engine build it with ``in_process=False``: one in-process
engine per process (``vllm_engine.create_engine``)."""

from __future__ import annotations

import pytest

PROMPTS = [
    "Question: what is 2 + 3? Let's think step by step.",
    "Verdict: A Confidence: 80%",
    "Response A Response B Instruction: which response is better?",
    "The answer is (",
]


@pytest.fixture(scope="session")
def vllm_model_dir(tmp_path_factory):
    from fem.testing.tiny import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("tiny_vllm_model"), hidden_size=128)


@pytest.fixture(scope="session")
def hf_ref(vllm_model_dir):
    from fem.generation.hf import HFBackend
    from fem.models import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(str(vllm_model_dir))
    return HFBackend(model, tokenizer)


@pytest.fixture(scope="session")
def vllm_backend(vllm_model_dir, hf_ref):
    pytest.importorskip("vllm")
    from fem.generation.vllm import VLLMBackend
    from fem.generation.vllm_engine import EngineOptions

    # a KV cache of 39 blocks of 32 tokens (1,248 tokens): big batches queue and get preempted, so every test also
    # checks that the statistics survive vLLM's scheduling under memory pressure; 32-token blocks (the CPU minimum, as
    # for power_mh recipes) let short prefixes hit the prefix cache
    options = EngineOptions(max_model_len=512, kv_cache_gib=0.0012, max_lora_rank=8, max_num_seqs=256, block_size=32)
    backend = VLLMBackend(hf_ref.model, hf_ref.tokenizer, model_dir=str(vllm_model_dir), options=options)
    yield backend
    backend.close()


@pytest.fixture()
def prompts(hf_ref):
    return [hf_ref.encode(p) for p in PROMPTS]
