"""vLLM backend decoding throughput against the hf backend and a per-prompt ``model.generate`` loop, same process.

For each model (a tiny random Llama vLLM's CPU attention accepts; SmolLM2-135M-Instruct from its GGUF) and dtype
(float32; bfloat16 where the CPU has bf16 instructions, or on a GPU): tokens/s of

- a per-prompt ``model.generate`` loop (batch 1, do_sample, temperature 1, top_k 0),
- fem's ``hf`` backend at batch 1/8/32,
- the ``vllm`` backend at batch 1/8/32 with every statistic of the contract (logp, logq, entropy), and with none
  (``stats=()``: what the statistics tracker costs),

all sampling at temperature 1 from the same chat prompts, ``max_new`` new tokens (rows may end earlier at EOS: each
count is of tokens actually decoded). Ratios vLLM / hf and vLLM / loop per batch; roofline: the measured dense
matmul throughput in the same dtype over 2 x parameters FLOPs per token. The vLLM engine is in-process with the
backend's defaults (eager, prefix caching on; prompts differ so caching does not flatter it). One thread
(``OMP_NUM_THREADS=1``); the load average is recorded per row: timings on a shared machine are indicative only.

Usage: OMP_NUM_THREADS=1 python benchmarks/bench_vllm.py [--quick] [--models tiny smollm2] [--dtypes float32 bfloat16]
"""

from __future__ import annotations

import gc
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
import bench_proposals as BP  # noqa: E402

NAME = "vllm"


def bf16_supported() -> bool:
    import torch

    return torch.cuda.is_available() or bool(torch.cpu._is_avx512_bf16_supported())


def run_model(label: str, source: str, dtype: str, batches: list[int], max_new: int, loop_prompts: int, seed: int):
    import torch

    from fem.generation.base import SamplingParams
    from fem.generation.hf import HFBackend
    from fem.generation.vllm import VLLMBackend
    from fem.generation.vllm_engine import EngineOptions
    from fem.models import hf_model_dir, load_model_and_tokenizer

    model, tok = load_model_and_tokenizer(source, dtype=dtype)
    folder = hf_model_dir(source, None, model, tok)
    params = sum(p.numel() for p in model.parameters())
    prompts = BP.chat_prompts(tok, max(batches + [loop_prompts]))
    roof_tps = C.matmul_gflops(dtype)["gflops_best"] * 1e9 / (2 * params)
    hf = HFBackend(model, tok)
    started = time.perf_counter()
    engine = VLLMBackend(model, tok, model_dir=folder, options=EngineOptions(dtype=dtype, kv_cache_gib=0.5))
    engine_start_s = time.perf_counter() - started

    def vllm_tps(rows, batch, stats):
        gen, tokens, t0 = torch.Generator().manual_seed(seed), 0, time.perf_counter()
        for start in range(0, len(rows), batch):
            _, s = engine.generate(rows[start : start + batch], SamplingParams(), max_new, generator=gen, stats=stats)
            tokens += s.tokens_decoded
        return tokens / (time.perf_counter() - t0)

    BP.backend_tps(hf, prompts[:2], 2, 4, seed)  # warm-ups (vLLM compiles its log-prob ranking op on first use)
    vllm_tps(prompts[:2], 2, None)
    loop = BP.generate_loop_tps(model, tok, prompts[:loop_prompts], max_new, seed)["tokens_per_s"]
    out = []
    for b in batches:
        rows = prompts[: max(b, loop_prompts) if b == 1 else b]
        hf_tps = BP.backend_tps(hf, rows, b, max_new, seed)["tokens_per_s"]
        v_tps = vllm_tps(rows, b, None)
        bare_tps = vllm_tps(rows, b, ())
        out.append(
            {
                "model": label,
                "dtype": dtype,
                "params_M": round(params / 1e6, 2),
                "batch": b,
                "generate_loop_tokens_per_s": round(loop, 1),
                "hf_tokens_per_s": round(hf_tps, 1),
                "vllm_tokens_per_s": round(v_tps, 1),
                "vllm_no_stats_tokens_per_s": round(bare_tps, 1),
                "vllm_vs_hf": round(v_tps / hf_tps, 2),
                "vllm_vs_generate_loop": round(v_tps / loop, 2),
                "hf_vs_generate_loop": round(hf_tps / loop, 2),
                "roofline_tokens_per_s": round(roof_tps, 1),
                "vllm_fraction_of_roofline": round(v_tps / roof_tps, 4),
                "vllm_engine_start_s": round(engine_start_s, 1),
                "new_tokens": max_new,
                "load": C.load(),
            }
        )
        print(f"{label} {dtype} batch {b}: loop {loop:.1f} hf {hf_tps:.1f} vllm {v_tps:.1f} tok/s, load {C.load()}")
    engine.close()
    gc.collect()
    return out


def main() -> int:
    p = C.parser(NAME, __doc__)
    p.add_argument(
        "--models", nargs="+", default=None, choices=["tiny", "smollm2"], help="default: both (--quick: tiny)"
    )
    p.add_argument("--dtypes", nargs="+", default=None, choices=["float32", "bfloat16"], help="default: both")
    args = p.parse_args()
    C.setup_threads()
    from fem.generation.vllm_engine import vllm_problem

    problem = vllm_problem()
    if problem is not None:
        print(f"fem bench vllm: {problem[0]}: {problem[1]}")
        return 2
    started = time.perf_counter()
    from fem.models import SMOLLM2_ALIAS
    from fem.testing.tiny import save_tiny_model

    models = args.models or (["tiny"] if args.quick else ["tiny", "smollm2"])
    dtypes = args.dtypes or (["float32"] if args.quick else ["float32", "bfloat16"])
    skipped = [d for d in dtypes if d == "bfloat16" and not bf16_supported()]
    dtypes = [d for d in dtypes if d not in skipped]
    batches = [1, 8] if args.quick else [1, 8, 32]
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        sources = {"tiny": str(save_tiny_model(tmp, hidden_size=128)), "smollm2": SMOLLM2_ALIAS}
        for label in models:
            for dtype in dtypes:
                max_new = 16 if args.quick else 64
                rows += run_model(label, sources[label], dtype, batches, max_new, 4, args.seed)
    C.table(rows, C.COLUMNS[NAME])
    goals = {
        f"{r['model']}_{r['dtype']}_batch{r['batch']}": C.goal(
            f"{r['model']} {r['dtype']} batch {r['batch']}: vLLM tokens/s over hf (target >= 2 fp32, >= 3 bf16)",
            r["vllm_vs_hf"],
            r["vllm_vs_hf"] >= (2.0 if r["dtype"] == "float32" else 3.0),
        )
        for r in rows
        if r["batch"] == max(batches)
    }
    C.write(
        NAME,
        args.out,
        quick=args.quick,
        settings={
            "sampling": "temperature 1, top_k 0, top_p 1",
            "threads": 1,
            "vllm": "in-process engine, enforce_eager, prefix caching, kv 0.5 GiB",
            "bf16_skipped_no_cpu_support": skipped,
        },
        results=rows,
        goals=goals,
        started=started,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
