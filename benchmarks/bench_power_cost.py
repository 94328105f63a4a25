"""(4) Power-sampling cost per MH step: fem's power_mh (KV reuse, lockstep batching over chains, exact early
rejection) against a faithful re-implementation of the published reference loop (``_decoding.ReferenceMH``:
one ``model.generate`` per extension and per MH step, no cache reuse, batch 1, uniform cut; run on the first half
of the chains, which it draws exactly as in a full run), at the same alpha, B, T, N and seeds, on SmolLM2-135M
(fp32, one thread; the tiny model with --quick). Reported per MH step: wall time, tokens decoded, prefix tokens
re-encoded; and the cost of one power sample relative to one ancestral sample
(tokens and wall), next to the paper's formula N*T/(4B) and the published 9-14x. Goal: >= 3x faster per MH step.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
import _decoding as D  # noqa: E402

NAME = "power_cost"


def measure(args: argparse.Namespace) -> C.Measured:
    import tempfile

    from fem.generation.hf import HFBackend
    from fem.models import SMOLLM2_ALIAS, load_model_and_tokenizer
    from fem.testing.tiny import save_tiny_model

    with tempfile.TemporaryDirectory() as tmp:
        path, label = (str(save_tiny_model(tmp)), "tiny") if args.quick else (SMOLLM2_ALIAS, "smollm2-135m")
        model, tok = load_model_and_tokenizer(path)
        backend = HFBackend(model, tok)
        alpha, block, horizon, steps, prompts_n, samples = (
            (4.0, 8, 32, 2, 2, 2) if args.quick else (4.0, 16, 64, 2, 4, 2)
        )
        load0 = C.load()
        res = D.bench_power(
            model,
            tok,
            backend,
            D.chat_prompts(tok, prompts_n),
            samples,
            alpha,
            block,
            horizon,
            steps,
            args.seed,
            reference_prompts=max(1, prompts_n // 2),  # per-step figures; the batch-1 loop is the slow part
        )
    res["model"] = label
    res["load_start"], res["load_end"] = load0, C.load()
    r = res["ratios"]
    ref, ours = res["reference"], res["ours"]["early_rejection"]
    rows = [
        {
            "sampler": "reference loop (batch 1, generate per step)",
            "s_per_mh_step": ref["wall_s"] / ref["mh_steps"],
            "decoded_per_step": r["decoded_per_step_reference"],
            "reencoded_per_step": r["reencoded_per_step_reference"],
            "acceptance": ref["acceptance"],
        },
        {
            "sampler": "fem power_mh (KV reuse, lockstep, early rejection)",
            "s_per_mh_step": ours["wall_s"] / ours["mh_steps"],
            "decoded_per_step": r["decoded_per_step_ours"],
            "reencoded_per_step": r["reencoded_per_step_ours"],
            "acceptance": ours["acceptance"],
        },
        {
            "sampler": "fem power_mh without early rejection",
            "s_per_mh_step": res["ours"]["no_early_rejection"]["wall_s"]
            / res["ours"]["no_early_rejection"]["mh_steps"],
            "decoded_per_step": res["ours"]["no_early_rejection"]["tokens_decoded"]
            / res["ours"]["no_early_rejection"]["mh_steps"],
            "reencoded_per_step": res["ours"]["no_early_rejection"]["tokens_reencoded"]
            / res["ours"]["no_early_rejection"]["mh_steps"],
            "acceptance": res["ours"]["no_early_rejection"]["acceptance"],
        },
    ]
    C.table(rows, C.COLUMNS[NAME])
    stages = math.ceil(horizon / block)
    formula = steps * horizon / (4 * block)
    exact_sum = (steps * sum(k * block / 2 for k in range(1, stages + 1)) + horizon) / horizon
    res["paper_formula"] = {
        "N*T/(4B)": formula,
        "exact_block_sum_ratio": exact_sum,
        "published": "9-14x (N=10, T=679, B=192)",
    }
    print(
        f"power / ancestral: tokens x{r['power_over_ancestral_tokens']:.2f}, wall x{r['power_over_ancestral_wall']:.2f} "
        f"(paper formula at these settings: x{formula:.2f}, exact block sum x{exact_sum:.2f})"
    )
    speed = r["wall_per_mh_step_reference_over_ours"]
    goals = {
        "per_step_speedup": C.goal(">= 3x faster per MH step than the reference loop", round(speed, 2), speed >= 3),
        "per_step_speedup_no_er": C.goal(
            "(same, early rejection off)", round(r["wall_per_mh_step_reference_over_ours_no_er"], 2), None
        ),
        "power_over_ancestral": C.goal(
            "cost of one power sample / one ancestral sample (tokens, wall)",
            {"tokens": round(r["power_over_ancestral_tokens"], 2), "wall": round(r["power_over_ancestral_wall"], 2)},
            None,
        ),
    }
    return C.Measured(
        settings={**res["settings"], "model": label, "dtype": "float32", "cut": "uniform"},
        results={"rows": rows, "raw": res},
        goals=goals,
    )


if __name__ == "__main__":
    C.main(NAME, __doc__, measure)
