"""(12) The demo's E-step end to end, hf backend against vllm backend, same process.

The E-step of ``recipes/demo/smollm2_judge_pps_cpu.yaml`` (SmolLM2-135M-Instruct judging LLMBar natural pairs: PPS,
hinted rationales, forced read-out of the verdict through the cue, the recipe's confidence target, pairs in
both orders and balanced, as the recipe says) on the first ``--examples`` training pairs, run exactly as ``fem train``
runs it (``EMRunner.estep``), with

- the ``hf`` backend in the demo's dtype (float32) at the demo's ``generation_batch_size`` (its memory-bounded
  setting), and in bfloat16 where the CPU has bf16 instructions;
- the ``vllm`` backend (in-process engine, the recipe's defaults) in float32 and bfloat16, at the demo's batch and at
  ``--vllm-batch`` (a vLLM engine bounds memory by its KV cache, not by the batch): one engine per dtype, its prefix
  cache emptied before each timed run.

Every run draws the same examples with the same seeds. Reported per run: wall seconds, prompts per second (a pair
asked both ways is two prompts), rationale tokens decoded, prefix tokens the backend encoded (the read-out's
included), and the speed-up over hf in float32.
Judge prompts are 250-1,000 tokens, so prefill and the read-out dominate: vLLM's prefix cache serves the second
rationale of a pair and the read-out's prompt blocks. One thread; timings on a shared machine are indicative only.

Goal: the best vLLM run >= 4x the hf backend's demo setting, end to end.
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

NAME = "vllm_estep"
RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "demo" / "smollm2_judge_pps_cpu.yaml"


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--examples", type=int, default=None, help="training pairs (default 32; quick 4)")
    p.add_argument("--vllm-batch", type=int, default=32, help="the vLLM runs' larger generation_batch_size")
    p.add_argument("--dtypes", nargs="+", default=None, choices=["float32", "bfloat16"], help="default: both")
    p.add_argument("--block-size", type=int, default=None, help="vllm_block_size (default: the recipe's)")


def run_estep_once(configs, runtime, examples, out: Path) -> dict:
    """One E-step exactly as ``fem train`` runs it (``EMRunner.estep``: drawing, read-outs, confidence targets,
    reward, filter, balancing, samples file) on ``examples`` with the given runtime's backend."""
    from fem.loop import EMRunner

    runner = EMRunner(configs)
    runner.runtime, runner.train_examples = runtime, examples
    backend = runtime.backend
    encoded0 = backend.readout_tokens_encoded
    t0 = time.perf_counter()
    metrics = runner.estep(0, out)
    wall = time.perf_counter() - t0
    return {
        "wall_s": round(wall, 2),
        "prompts_per_s": round(len(examples) / wall, 3),
        "tokens_decoded": int(metrics["estep/tokens_decoded"]),
        "readout_tokens_encoded": int(backend.readout_tokens_encoded - encoded0),
        "kept": int(metrics["estep/kept_samples"]),
    }


def measure(args: argparse.Namespace) -> C.Measured:
    import dataclasses

    from fem.generation.hf import HFBackend
    from fem.generation.vllm import VLLMBackend
    from fem.generation.vllm_env import has_bf16_instructions, vllm_problem
    from fem.models import hf_model_dir, load_model_and_tokenizer
    from fem.recipe import parse_configs
    from fem.runtime import Runtime
    from fem.tasks import build_task
    from fem.testing.tiny import save_tiny_model
    from fem.utils.distributed import World

    problem = vllm_problem()
    if problem is not None:
        raise SystemExit(f"fem bench {NAME}: {problem[0]}: {problem[1]}")
    dtypes = args.dtypes or (["float32"] if args.quick else ["float32", "bfloat16"])
    skipped = [d for d in dtypes if d == "bfloat16" and not has_bf16_instructions()]
    dtypes = [d for d in dtypes if d not in skipped]
    n = args.examples or (4 if args.quick else 32)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        tiny = Path(tmp) / "tiny"  # --quick: a tiny model whose context holds a judge prompt in byte-level tokens
        extra = (
            ["--model_name_or_path", str(save_tiny_model(tiny, hidden_size=128, context=8192))] if args.quick else []
        )
        extra += ["--train_limit", str(n + 1)]  # n timed pairs and one warm-up pair
        if args.block_size:
            extra += ["--vllm_block_size", str(args.block_size)]
        base = parse_configs(["--config", str(RECIPE), "--output_dir", str(Path(tmp) / "out"), *extra])
        task = build_task(base.task)
        train = task.load("train")
        examples, warmup = train[:n], train[-1:]  # the warm-up pair is not one of the timed ones
        if base.estep.estep_position_swap:  # as fem train: each pair also drawn with its candidates swapped
            examples, warmup = task.with_swaps(examples), task.with_swaps(warmup)
        demo_batch = base.proposal.generation_batch_size
        hf_dtypes = ["float32", *(d for d in dtypes if d != "float32")]  # hf float32 (the demo's) is the reference
        runs = [("hf", d, demo_batch) for d in hf_dtypes] + [
            ("vllm", d, b) for d in dtypes for b in sorted({demo_batch, args.vllm_batch})
        ]
        for dtype in hf_dtypes:
            model, tok = load_model_and_tokenizer(
                base.model.model_name_or_path, gguf_file=base.em.gguf_file, dtype=dtype
            )
            engine = None  # one vLLM engine per dtype, shared by its batch sizes (a batch is per call)
            for backend_name, run_dtype, batch in [r for r in runs if r[1] == dtype]:
                configs = dataclasses.replace(
                    base,
                    proposal=dataclasses.replace(base.proposal, generation_batch_size=batch),
                    engine=dataclasses.replace(base.engine, vllm_dtype=dtype),
                )
                if backend_name == "hf":
                    backend = HFBackend(model, tok)
                else:
                    if engine is None:
                        folder = hf_model_dir(base.model.model_name_or_path, base.em.gguf_file, model, tok)
                        engine = VLLMBackend.from_configs(configs, model, tok, folder)
                    backend = engine
                out = Path(tmp) / f"{backend_name}-{dtype}-{batch}"
                runtime = Runtime(configs, task, model, tok, backend, World())
                run_estep_once(configs, runtime, warmup, out.with_name(out.name + "-warmup"))
                if backend_name == "vllm":
                    backend.reset_prefix_cache()  # every timed run starts cold
                row = {"backend": backend_name, "dtype": run_dtype, "batch": batch, "examples": len(examples)}
                row.update(run_estep_once(configs, runtime, examples, out))
                row["load"] = C.load()
                rows.append(row)
                print(row, flush=True)
                del backend, runtime
                gc.collect()
            if engine is not None:
                engine.close()
            del model, engine
            gc.collect()
    reference = next(r for r in rows if r["backend"] == "hf" and r["dtype"] == "float32")
    for r in rows:
        r["speedup_vs_hf_float32"] = round(reference["wall_s"] / r["wall_s"], 2)
    C.table(rows, C.COLUMNS[NAME])
    best = max((r for r in rows if r["backend"] == "vllm"), key=lambda r: r["speedup_vs_hf_float32"])
    goals = {
        "estep_speedup": C.goal(
            f"judge E-step end to end: best vLLM run ({best['dtype']}, batch {best['batch']}) over hf float32 at "
            f"the demo's batch (target >= 4)",
            best["speedup_vs_hf_float32"],
            best["speedup_vs_hf_float32"] >= 4 if not args.quick else None,
        )
    }
    return C.Measured(
        settings={
            "recipe": str(RECIPE.relative_to(RECIPE.parents[2])),
            "examples": n,
            "demo_batch": demo_batch,
            "vllm_batch": args.vllm_batch,
            "threads": 1,
            "bf16_skipped_no_cpu_support": skipped,
        },
        results=rows,
        goals=goals,
    )


if __name__ == "__main__":
    C.main(NAME, __doc__, measure, arguments)
