"""(6) Memory: peak resident memory of separate processes that each load the model and run one phase:
``load`` (model only), ``estep`` (hf backend, batch 32, 64 new tokens), ``decode64`` (one ancestral decoding batch
of the power phase's shape: the same 64 prompts, 32 new tokens), ``power`` (power_mh, 64 chains in lockstep,
alpha 4, T = 32, B = 16, N = 1, KV caches of the kept prefixes held), ``mstep`` (one LoRA M-step, batch 4), on
SmolLM2-135M fp32 (tiny with --quick). Each phase's own peak is measured after the load (the peak counter is reset
with /proc/self/clear_refs, so the GGUF de-quantisation transient of the load does not hide it) and reported as an
increase over the RSS after the load, next to the model's size and the KV bytes the 64 chains hold.
Goals: power_mh's increase <= KV held + one decoding batch of the same shape (``decode64``'s increase); every
phase's peak (load included) under 8 GB.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import NoReturn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

NAME = "memory"


def part(name: str, path: str) -> dict:
    import gc

    import _decoding as D
    import torch

    from fem.configs import ProposalConfig
    from fem.generation.base import SamplingParams
    from fem.generation.hf import HFBackend
    from fem.models import load_model_and_tokenizer
    from fem.proposals import build_proposal

    model, tok = load_model_and_tokenizer(path)
    backend = HFBackend(model, tok)
    gc.collect()
    out: dict = {"part": name, "rss_after_load_mb": C.rss_mb(), "peak_after_load_mb": C.peak_rss_mb()}
    out["peak_reset"] = C.reset_peak_rss()
    cfg = model.config
    kv_heads = getattr(cfg, "num_key_value_heads", cfg.num_attention_heads)
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    kv_per_token = 2 * cfg.num_hidden_layers * kv_heads * head_dim * 4
    out["param_mb"] = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
    out["kv_bytes_per_token"] = kv_per_token
    t0 = time.perf_counter()
    if name == "estep":
        prompts = D.chat_prompts(tok, 32)
        backend.generate(prompts, SamplingParams(), 64, generator=torch.Generator().manual_seed(0))
        out["tokens_held"] = sum(len(p) for p in prompts) + 32 * 64
    elif name == "decode64":
        prompts = D.chat_prompts(tok, 64)
        backend.generate(prompts, SamplingParams(), 32, generator=torch.Generator().manual_seed(0))
        out["tokens_held"] = sum(len(p) for p in prompts) + 64 * 32
    elif name == "power":
        prompts = D.chat_prompts(tok, 64)
        pc = ProposalConfig(
            proposal="power_mh",
            power_alpha=4.0,
            max_new_tokens=32,
            power_block_size=16,
            power_mh_steps=1,
            power_cut="entropy",
            generation_batch_size=64,
        )
        prop = build_proposal(pc, backend)
        traces = [t for g in prop.propose(prompts, 1, seed=0) for t in g]
        out["tokens_held"] = sum(len(p) for p in prompts) + sum(t.num_tokens for t in traces)
        out["kv_held_mb"] = out["tokens_held"] * kv_per_token / 2**20
    elif name == "mstep":
        import _mstep_common as M

        M.fem_mstep(model, tok, M.rows(4), 1, 4)
    out["phase_s"] = time.perf_counter() - t0
    out["phase_peak_rss_mb"] = C.phase_peak_rss_mb() if name != "load" else out["rss_after_load_mb"]
    out["increase_over_load_mb"] = out["phase_peak_rss_mb"] - out["rss_after_load_mb"]
    out["peak_rss_mb"] = C.peak_rss_mb()  # whole process, the load's transient included
    return out


def part_main() -> NoReturn:
    """``bench_memory.py --part NAME --model-path PATH``: one phase in this fresh process; prints ``RESULT {json}``."""
    p = argparse.ArgumentParser(prog="bench_memory.py --part")
    p.add_argument("--part", required=True)
    p.add_argument("--model-path", required=True)
    args = p.parse_args()
    C.setup_threads()
    warnings.filterwarnings("ignore")
    print("RESULT " + json.dumps(part(args.part, args.model_path)))
    sys.exit(0)


def measure(args: argparse.Namespace) -> C.Measured:
    import tempfile

    from fem.models import SMOLLM2_ALIAS
    from fem.testing.tiny import save_tiny_model

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path, label = (str(save_tiny_model(tmp)), "tiny") if args.quick else (SMOLLM2_ALIAS, "smollm2-135m")
        for name in ("load", "estep", "decode64", "power", "mstep"):
            proc = subprocess.run(
                [sys.executable, __file__, "--part", name, "--model-path", path], capture_output=True, text=True
            )
            line = next((s for s in proc.stdout.splitlines() if s.startswith("RESULT ")), None)
            if line is None:
                print(proc.stderr[-2000:], file=sys.stderr)
                raise SystemExit(1)
            r = json.loads(line[7:])
            r["load"] = C.load()
            rows.append(r)
            print(
                f"{name}: +{r['increase_over_load_mb']:.0f} MB over the loaded model (process peak {r['peak_rss_mb']:.0f}"
                f" MB), load {r['load']}",
                flush=True,
            )
    for r in rows:
        r["model"] = label
    C.table(rows, C.COLUMNS[NAME])
    batch = next(r for r in rows if r["part"] == "decode64")
    pw = next(r for r in rows if r["part"] == "power")
    budget = pw["kv_held_mb"] + batch["increase_over_load_mb"]
    peak = max(r["peak_rss_mb"] for r in rows)
    goals = {
        "power_within_kv_plus_batch": C.goal(
            "power_mh (64 chains) increase <= KV held + one decoding batch of the same shape (decode64 increase), MB",
            {"increase": round(pw["increase_over_load_mb"], 1), "budget": round(budget, 1)},
            pw["increase_over_load_mb"] <= budget,
        ),
        "under_8gb": C.goal("every phase's peak RSS < 8 GB (MB)", round(peak, 1), peak < 8192),
    }
    return C.Measured(
        settings={
            "model": label,
            "dtype": "float32",
            "estep": "batch 32, 64 new tokens",
            "power": "64 chains, alpha 4, T 32, B 16, N 1, entropy cut",
            "mstep": "LoRA r=8, batch 4, 1 step",
            "decode64": "64 rows (the power phase's prompts), 32 new tokens",
            "measure": "fresh process per phase; phase peak = VmHWM after a clear_refs reset post-load",
        },
        results=rows,
        goals=goals,
    )


if __name__ == "__main__":
    if "--part" in sys.argv:
        part_main()
    C.main(NAME, __doc__, measure)
