"""(5) Quality at equal compute: accuracy of ancestral (tau = 1), low-temperature (tau = 1/alpha), best-of-n
(n chosen so its decoded tokens match power sampling; the winner is the highest mean base log p), uniform-cut and
entropy-cut power MH (alpha = 4), with decoded tokens per sample.

- Stylized task: ``StylizedDecisionLM(m=3, k=3, T=32)``; a sample is correct iff every decision is option 0
  (exact accuracies under p and p^alpha reported alongside).
- GSM8K slice: SmolLM2-135M-Instruct on the first ``n`` eval questions, fp32, CPU, short rationales
  (``max_new_tokens``), forced answer mode (the cue is appended and the answer decoded greedily), through fem's
  own eval path (``fem.eval.evaluate``). A 135M model is near 0 on GSM8K: the point is the protocol and the cost.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

from fem.configs import ProposalConfig  # noqa: E402
from fem.proposals import build_proposal  # noqa: E402
from fem.testing.table_lm import StylizedDecisionLM  # noqa: E402

NAME = "quality"
ALPHA = 4.0


def power_cfg(cut: str, T: int, B: int, N: int, batch: int) -> ProposalConfig:
    return ProposalConfig(
        proposal="power_mh",
        power_alpha=ALPHA,
        max_new_tokens=T,
        power_block_size=B,
        power_mh_steps=N,
        power_cut=cut,
        generation_batch_size=batch,
    )


def stylized(samples: int, N: int, seed: int) -> list[dict]:
    lm = StylizedDecisionLM(m=3, k=3, T=32)
    T, B = lm.T, 8
    best = (0,) * lm.k
    rows = []

    def score(label: str, cfg: ProposalConfig) -> dict:
        t0 = time.perf_counter()
        traces = build_proposal(cfg, lm).propose([lm.prompt], samples, seed=seed)[0]
        acc = sum(lm.decisions(t.token_ids) == best for t in traces) / len(traces)
        tok = sum(t.cost.tokens_decoded for t in traces) / len(traces)
        row = {
            "task": "stylized m=3 k=3 T=32",
            "sampler": label,
            "accuracy": round(acc, 4),
            "tokens_per_sample": round(tok, 1),
            "wall_s": round(time.perf_counter() - t0, 2),
            "load": C.load(),
        }
        rows.append(row)
        print(row, flush=True)
        return row

    power = {
        cut: score(f"power_mh {cut} (N={N}, B={B})", power_cfg(cut, T, B, N, samples))
        for cut in ("uniform", "entropy")
    }
    score("ancestral (tau 1)", ProposalConfig(proposal="ancestral", max_new_tokens=T, generation_batch_size=samples))
    score(
        "low temperature (tau 1/alpha)",
        ProposalConfig(proposal="ancestral", temperature=1 / ALPHA, max_new_tokens=T, generation_batch_size=samples),
    )
    n = max(1, round(max(p["tokens_per_sample"] for p in power.values()) / T))
    score(
        f"best-of-{n} (compute-matched)",
        ProposalConfig(proposal="best_of_n", best_of_n=n, max_new_tokens=T, generation_batch_size=samples * n),
    )
    for r in rows:
        r["exact_accuracy_p"], r["exact_accuracy_p_alpha"] = round(lm.accuracy(1.0), 4), round(lm.accuracy(ALPHA), 4)
    return rows


RECIPE = """model_name_or_path: smollm2-135m-instruct
task: gsm8k
answer_mode: forced
eval_limit: {n}
train_limit: 4
max_new_tokens: {T}
generation_batch_size: {n}
output_dir: {out}
seed: 0
report_to: none
"""


def gsm8k(n: int, T: int, B: int, N: int, seed: int) -> list[dict]:
    from fem.eval.evaluate import evaluate
    from fem.recipe import parse_configs
    from fem.runtime import build_runtime
    from fem.utils.distributed import current_world

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        recipe = Path(tmp) / "q.yaml"
        recipe.write_text(RECIPE.format(n=n, T=T, out=Path(tmp) / "run"))
        configs = parse_configs(["--config", str(recipe)])
        world = current_world()
        runtime = build_runtime(configs, world)
        examples = runtime.task.load("eval")[:n]

        def score(label: str, cfg: ProposalConfig) -> dict:
            t0 = time.perf_counter()
            prop = build_proposal(cfg, runtime.backend)
            m = evaluate(
                task=runtime.task,
                examples=examples,
                drawer=runtime.drawer(prop),
                proposal_name=label,
                num_samples=1,
                seed=seed,
                chunk_size=cfg.generation_batch_size,
                world=world,
                out_dir=Path(tmp) / label.split()[0],
            )
            row = {
                "task": f"gsm8k[:{n}] SmolLM2-135M forced, T={T}",
                "sampler": label,
                "accuracy": m.get("eval/accuracy"),
                "tokens_per_sample": round(m["eval/tokens_decoded"] / max(m["eval/predictions"], 1), 1),
                "wall_s": round(time.perf_counter() - t0, 1),
                "load": C.load(),
            }
            rows.append(row)
            print(row, flush=True)
            return row

        base = dict(max_new_tokens=T, generation_batch_size=n)
        power = {
            cut: score(
                f"power_mh_{cut} (N={N}, B={B})",
                ProposalConfig(
                    proposal="power_mh", power_alpha=ALPHA, power_block_size=B, power_mh_steps=N, power_cut=cut, **base
                ),
            )
            for cut in ("uniform", "entropy")
        }
        score("ancestral (tau 1)", ProposalConfig(proposal="ancestral", **base))
        score("low_temperature (tau 1/alpha)", ProposalConfig(proposal="ancestral", temperature=1 / ALPHA, **base))
        k = max(1, round(max(p["tokens_per_sample"] for p in power.values()) / max(rows[2]["tokens_per_sample"], 1)))
        score(
            f"best_of_{k} (compute-matched)",
            ProposalConfig(proposal="best_of_n", best_of_n=k, max_new_tokens=T, generation_batch_size=n * k),
        )
    return rows


def measure(args: argparse.Namespace) -> C.Measured:
    rows = stylized(64 if args.quick else 512, 4, args.seed)
    n_gsm = 0 if args.quick else (6 if args.gsm8k is None else args.gsm8k)
    T, B, N = 48, 16, 2
    if n_gsm:
        rows += gsm8k(n_gsm, T, B, N, args.seed)
    C.table(rows, C.COLUMNS[NAME])
    ent = next(r for r in rows if r["task"].startswith("stylized") and "entropy" in r["sampler"])
    others = [r for r in rows if r["task"].startswith("stylized") and r is not ent]
    goals = {
        "stylized_entropy_best": C.goal(
            "stylized: entropy-cut power MH accuracy vs the best other sampler at its token cost",
            {"entropy": ent["accuracy"], "best_other": max(r["accuracy"] for r in others)},
            ent["accuracy"] >= max(r["accuracy"] for r in others),
        ),
    }
    gsm = [r for r in rows if r["task"].startswith("gsm8k")]
    if gsm:
        goals["gsm8k"] = C.goal(
            "GSM8K slice accuracies (SmolLM2-135M; no gain expected)", {r["sampler"]: r["accuracy"] for r in gsm}, None
        )
    return C.Measured(
        settings={
            "alpha": ALPHA,
            "stylized": "m=3 k=3 T=32 B=8 N=4",
            "gsm8k": {
                "questions": n_gsm,
                "T": T,
                "B": B,
                "N": N,
                "answer_mode": "forced",
                "model": "smollm2-135m-instruct fp32",
            },
        },
        results=rows,
        goals=goals,
    )


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--gsm8k", type=int, default=None, help="GSM8K questions (default 6; 0 = skip; --quick skips)")


if __name__ == "__main__":
    C.main(NAME, __doc__, measure, arguments)
