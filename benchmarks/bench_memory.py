"""(6) Memory: peak resident memory (ru_maxrss) of separate processes that each load the model and run one phase:
``load`` (model only), ``estep`` (hf backend, batch 32, 64 new tokens), ``power`` (power_mh, 64 chains in lockstep,
alpha 4, T = 32, B = 16, N = 1, KV caches of the kept prefixes held), ``mstep`` (one LoRA M-step, batch 4), on
SmolLM2-135M fp32 (tiny with --quick). Reported next to the model's own size (parameter bytes) and the KV bytes
the 64 chains hold. Goals: power_mh's increase over ``load`` <= KV held + one decoding batch (the E-step's
increase); every phase under 8 GB.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

NAME = "memory"


def part(name: str, path: str) -> dict:
    import bench_proposals as BP
    import torch

    from fem.configs import ProposalConfig
    from fem.generation.base import SamplingParams
    from fem.generation.hf import HFBackend
    from fem.models import load_model_and_tokenizer
    from fem.proposals import build_proposal

    model, tok = load_model_and_tokenizer(path)
    backend = HFBackend(model, tok)
    out: dict = {"part": name, "rss_after_load_mb": C.rss_mb(), "peak_after_load_mb": C.peak_rss_mb()}
    cfg = model.config
    kv_heads = getattr(cfg, "num_key_value_heads", cfg.num_attention_heads)
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    kv_per_token = 2 * cfg.num_hidden_layers * kv_heads * head_dim * 4
    out["param_mb"] = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
    out["kv_bytes_per_token"] = kv_per_token
    t0 = time.perf_counter()
    if name == "estep":
        prompts = BP.chat_prompts(tok, 32)
        backend.generate(prompts, SamplingParams(), 64, generator=torch.Generator().manual_seed(0))
        out["tokens_held"] = sum(len(p) for p in prompts) + 32 * 64
    elif name == "power":
        prompts = BP.chat_prompts(tok, 64)
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
    out["peak_rss_mb"] = C.peak_rss_mb()
    return out


def main() -> int:
    p = C.parser(NAME, __doc__)
    p.add_argument("--part", default=None, help="internal: run one phase and print its JSON")
    p.add_argument("--model-path", default=None)
    args = p.parse_args()
    C.setup_threads()
    if args.part:
        import warnings

        warnings.filterwarnings("ignore")
        print("RESULT " + json.dumps(part(args.part, args.model_path)))
        return 0
    started = time.perf_counter()
    import tempfile

    from fem.models import SMOLLM2_ALIAS
    from fem.testing.tiny import save_tiny_model

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path, label = (str(save_tiny_model(tmp)), "tiny") if args.quick else (SMOLLM2_ALIAS, "smollm2-135m")
        for name in ("load", "estep", "power", "mstep"):
            proc = subprocess.run(
                [sys.executable, __file__, "--part", name, "--model-path", path], capture_output=True, text=True
            )
            line = next((s for s in proc.stdout.splitlines() if s.startswith("RESULT ")), None)
            if line is None:
                print(proc.stderr[-2000:], file=sys.stderr)
                return 1
            r = json.loads(line[7:])
            r["load"] = C.load()
            rows.append(r)
            print(
                f"{name}: peak {r['peak_rss_mb']:.0f} MB (after load {r['peak_after_load_mb']:.0f} MB), load {r['load']}",
                flush=True,
            )
    base = next(r for r in rows if r["part"] == "load")["peak_rss_mb"]
    for r in rows:
        r["increase_over_load_mb"] = r["peak_rss_mb"] - base
        r["model"] = label
    C.table(
        rows,
        [
            "model",
            "part",
            "param_mb",
            "peak_rss_mb",
            "increase_over_load_mb",
            "tokens_held",
            "kv_held_mb",
            "phase_s",
            "load",
        ],
    )
    est = next(r for r in rows if r["part"] == "estep")
    pw = next(r for r in rows if r["part"] == "power")
    budget = (
        pw["kv_held_mb"] + est["increase_over_load_mb"] * 2
    )  # one decoding batch of 64 rows ~ twice the batch-32 E-step
    peak = max(r["peak_rss_mb"] for r in rows)
    goals = {
        "power_within_kv_plus_batch": C.goal(
            "power_mh (64 chains) increase <= KV held + one 64-row decoding batch (2 x E-step batch-32 increase), MB",
            {"increase": round(pw["increase_over_load_mb"], 1), "budget": round(budget, 1)},
            pw["increase_over_load_mb"] <= budget,
        ),
        "under_8gb": C.goal("every phase's peak RSS < 8 GB (MB)", round(peak, 1), peak < 8192),
    }
    for g in goals.values():
        print(f"{g['met']} {g['goal']}: {g['value']}")
    C.write(
        NAME,
        args.out,
        quick=args.quick,
        settings={
            "model": label,
            "dtype": "float32",
            "estep": "batch 32, 64 new tokens",
            "power": "64 chains, alpha 4, T 32, B 16, N 1, entropy cut",
            "mstep": "LoRA r=8, batch 4, 1 step",
            "measure": "ru_maxrss of a fresh process per phase",
        },
        results=rows,
        goals=goals,
        started=started,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
