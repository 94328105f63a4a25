"""(3) E-step throughput: tokens/s of fem's hf backend at batch 1/8/32 against a per-prompt ``model.generate``
loop (batch 1, same sampling: do_sample, temperature 1, top_k 0), on the tiny random model and SmolLM2-135M,
fp32 and bf16, one thread. Roofline: the machine's measured 1024^3 matmul throughput in the same dtype, divided
by 2 x (parameters) FLOPs per decoded token (attention over short contexts ignored), measured in the same
process. Reported: tokens/s, ratio to the generate loop, fraction of roofline, load average per row.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
import _decoding as D  # noqa: E402

NAME = "throughput"


def run_model(
    label: str, path: str, dtype: str, batches: list[int], max_new: int, loop_prompts: int, seed: int
) -> list[dict]:
    from fem.generation.hf import HFBackend
    from fem.models import load_model_and_tokenizer

    model, tok = load_model_and_tokenizer(path, dtype=dtype)
    params = sum(p.numel() for p in model.parameters())
    backend = HFBackend(model, tok)
    prompts = D.chat_prompts(tok, max(batches + [loop_prompts]))
    roof = C.matmul_gflops(dtype)
    roof_tps = roof["gflops_best"] * 1e9 / (2 * params)
    rows = []
    D.backend_tps(backend, prompts[:2], 2, 4, seed)  # warm-up
    loop = D.generate_loop_tps(model, tok, prompts[:loop_prompts], max_new, seed)
    loop_load = C.load()
    for b in batches:
        r = D.backend_tps(backend, prompts[: max(b, loop_prompts) if b == 1 else b], b, max_new, seed)
        rows.append(
            {
                "model": label,
                "dtype": dtype,
                "params_M": round(params / 1e6, 2),
                "batch": b,
                "tokens_per_s": round(r["tokens_per_s"], 1),
                "generate_loop_tokens_per_s": round(loop["tokens_per_s"], 1),
                "ratio_vs_generate_loop": round(r["tokens_per_s"] / loop["tokens_per_s"], 2),
                "matmul_gflops": roof["gflops_best"],
                "roofline_tokens_per_s": round(roof_tps, 1),
                "fraction_of_roofline": round(r["tokens_per_s"] / roof_tps, 4),
                "new_tokens": max_new,
                "load": C.load(),
                "load_generate_loop": loop_load,
            }
        )
        print(
            f"{label} {dtype} batch {b}: {r['tokens_per_s']:.1f} tok/s (loop {loop['tokens_per_s']:.1f}) load {C.load()}",
            flush=True,
        )
    del model, backend
    return rows


def measure(args: argparse.Namespace) -> C.Measured:
    import tempfile

    from fem.models import SMOLLM2_ALIAS
    from fem.testing.tiny import save_tiny_model

    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        tiny = str(save_tiny_model(tmp))
        models = [("tiny", tiny)] + ([] if args.quick else [("smollm2-135m", SMOLLM2_ALIAS)])
        for label, path in models:
            for dtype in args.dtypes or (["float32"] if args.quick else ["float32", "bfloat16"]):
                max_new = 16 if args.quick else (64 if label == "tiny" else 32)
                rows += run_model(label, path, dtype, [1, 8] if args.quick else [1, 8, 32], max_new, 4, args.seed)
    C.table(rows, C.COLUMNS[NAME])
    big = [r for r in rows if r["batch"] == max(r2["batch"] for r2 in rows)]
    goals = {
        f"{r['model']}_{r['dtype']}_batch{r['batch']}": C.goal(
            f"{r['model']} {r['dtype']} batch {r['batch']}: ratio vs generate loop / fraction of roofline",
            {"ratio": r["ratio_vs_generate_loop"], "roofline_fraction": r["fraction_of_roofline"]},
            r["ratio_vs_generate_loop"] > 1,
        )
        for r in big
    }
    return C.Measured(
        settings={"sampling": "do_sample, temperature 1, top_k 0", "threads": 1, "flops_per_token": "2 x parameters"},
        results=rows,
        goals=goals,
    )


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dtypes", nargs="+", default=None, choices=["float32", "bfloat16"], help="default: both (--quick: float32)"
    )


if __name__ == "__main__":
    C.main(NAME, __doc__, measure, arguments)
