"""(2) Mixing versus decisions (seed claim) on the stylized decision model (method.md §5).

``StylizedDecisionLM(m=3, k, T)``: k flat decisions among T tokens, option 0 leads to sharp filler. Chains start
at the all-wrong trace (every decision = option 1) and run power MH at the full horizon (alpha = 4, exact kernel,
early rejection on). We record, per step, TV(empirical decision-tuple law over the chains, exact p^alpha law) and
the all-correct fraction; the figure is the first step with TV <= 0.1 (and the first step where the all-correct
fraction reaches 90 % of its p^alpha value). Sweeps: T in {16, 32, 64, 128} at k = 2, and k in {1, 2, 4} at T = 64.
Censored at ``max_steps`` (reported as ``> max_steps``). Goal: entropy-cut steps grow with k and stay nearly flat
in T; uniform-cut steps grow with T; report the uniform/entropy ratio at T = 128.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

from fem.configs import ProposalConfig  # noqa: E402
from fem.proposals import build_proposal  # noqa: E402
from fem.testing.table_lm import StylizedDecisionLM, empirical, total_variation  # noqa: E402

NAME = "mixing"


def steps_to_mix(T: int, k: int, cut: str, chains: int, max_steps: int, seed: int, chunk: int = 10) -> dict:
    lm = StylizedDecisionLM(m=3, k=k, T=T)
    cfg = ProposalConfig(
        proposal="power_mh",
        max_new_tokens=T,
        power_block_size=T,
        power_cut=cut,
        power_alpha=4.0,
        generation_batch_size=chains,
    )
    prop = build_proposal(cfg, lm)
    chains_ = prop.start_chains([lm.prompt] * chains, [lm.start(1)] * chains)
    target = lm.decision_distribution(4.0)
    acc_target = lm.accuracy(4.0)
    best = (0,) * k
    curve: list[tuple[int, float, float]] = []
    hit_tv = hit_acc = None
    t0 = time.perf_counter()
    done = 0
    while done < max_steps and hit_tv is None:

        def record(step: int, cs, offset=done) -> None:
            nonlocal hit_tv, hit_acc
            dec = [lm.decisions(c.tokens) for c in cs]
            tv = total_variation(empirical(dec), target)
            acc = sum(d == best for d in dec) / len(dec)
            curve.append((offset + step, round(tv, 4), round(acc, 4)))
            if hit_tv is None and tv <= 0.1:
                hit_tv = offset + step
            if hit_acc is None and acc >= 0.9 * acc_target:
                hit_acc = offset + step

        n = min(chunk, max_steps - done)
        prop.run_mh(chains_, T, n, seed=seed * 100003 + done, on_step=record)
        done += n
    decoded = sum(c.cost.tokens_decoded for c in chains_)
    return {
        "T": T,
        "k": k,
        "cut": cut,
        "chains": chains,
        "max_steps": max_steps,
        "steps_to_tv_0.1": hit_tv,
        "steps_to_90pct_accuracy": hit_acc,
        "censored": hit_tv is None,
        "accuracy_p_alpha": acc_target,
        "accuracy_p": lm.accuracy(1.0),
        "decoded_tokens_per_chain_step": decoded / max(chains * done, 1),
        "wall_s": round(time.perf_counter() - t0, 2),
        "load": C.load(),
        "curve": curve,
    }


def fmt_steps(r: dict) -> str:
    return f">{r['max_steps']}" if r["censored"] else str(r["steps_to_tv_0.1"])


def plot(rows: list[dict], out: Path, fixed_k: int, fixed_T: int) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for cut, marker in (("uniform", "o"), ("entropy", "s")):
        sel = sorted([r for r in rows if r["sweep"] == "T" and r["cut"] == cut], key=lambda r: r["T"])
        axes[0].plot(
            [r["T"] for r in sel], [r["steps_to_tv_0.1"] or r["max_steps"] for r in sel], marker=marker, label=cut
        )
        for r in sel:
            if r["censored"]:
                axes[0].annotate(">", (r["T"], r["max_steps"]))
        sel = sorted([r for r in rows if r["sweep"] == "k" and r["cut"] == cut], key=lambda r: r["k"])
        axes[1].plot(
            [r["k"] for r in sel], [r["steps_to_tv_0.1"] or r["max_steps"] for r in sel], marker=marker, label=cut
        )
    axes[0].set(
        xscale="log",
        yscale="log",
        xlabel="T (tokens)",
        ylabel="MH steps to TV <= 0.1",
        title=f"k = {fixed_k} decisions",
    )
    axes[1].set(yscale="log", xlabel="k (decisions)", ylabel="MH steps to TV <= 0.1", title=f"T = {fixed_T} tokens")
    for ax in axes:
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path = out / "mixing.png"
    fig.savefig(path, dpi=110)
    return path.name


def measure(args: argparse.Namespace) -> C.Measured:
    if args.quick:
        Ts, ks, fixed_k, fixed_T, chains, max_steps = [16, 32], [1, 2], 2, 16, 64, 150
    else:
        Ts, ks, fixed_k, fixed_T, chains, max_steps = [16, 32, 64, 128], [1, 2, 4], 2, 64, 128, 1500
    rows = []
    for sweep, pairs in (("T", [(T, fixed_k) for T in Ts]), ("k", [(fixed_T, k) for k in ks])):
        for T, k in pairs:
            for cut in ("entropy", "uniform"):
                r = steps_to_mix(T, k, cut, chains, max_steps, args.seed)
                r["sweep"] = sweep
                rows.append(r)
                print(
                    f"sweep {sweep}: T={T} k={k} {cut:<8} steps to TV<=0.1: {fmt_steps(r):>6}  ({r['wall_s']} s, load {r['load']})",
                    flush=True,
                )
    for r in rows:
        r["steps"] = fmt_steps(r)
    C.table(rows, C.COLUMNS[NAME])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    png = plot(rows, out, fixed_k, fixed_T)

    def steps(sweep, cut, key, val):
        r = next(r for r in rows if r["sweep"] == sweep and r["cut"] == cut and r[key] == val)
        return r["steps_to_tv_0.1"] if not r["censored"] else None, r

    Tmax = max(Ts)
    u, ur = steps("T", "uniform", "T", Tmax)
    e, _ = steps("T", "entropy", "T", Tmax)
    ratio = (u / e) if (u and e) else (f">{ur['max_steps'] / e:.1f}" if e else None)
    ent_T = [steps("T", "entropy", "T", T)[0] for T in Ts]
    uni_T = [steps("T", "uniform", "T", T)[0] or max_steps for T in Ts]
    ent_k = [steps("k", "entropy", "k", k)[0] or max_steps for k in ks]
    flat = all(x is not None for x in ent_T) and max(ent_T) <= 2.0 * min(ent_T)
    goals = {
        "entropy_flat_in_T": C.goal(
            f"entropy-cut steps nearly flat in T (max/min <= 2) at k = {fixed_k}", ent_T, flat
        ),
        "uniform_grows_in_T": C.goal(
            "uniform-cut steps grow with T (censored values are lower bounds)", uni_T, uni_T[-1] > 1.25 * uni_T[0]
        ),
        "entropy_grows_in_k": C.goal(f"entropy-cut steps grow with k at T = {fixed_T}", ent_k, ent_k[-1] > ent_k[0]),
        "ratio_at_Tmax": C.goal(f"uniform / entropy steps at T = {Tmax}", ratio, None),
    }
    return C.Measured(
        settings={
            "m": 3,
            "alpha": 4.0,
            "chains": chains,
            "max_steps": max_steps,
            "fixed_k": fixed_k,
            "fixed_T": fixed_T,
            "start": "all decisions wrong (option 1)",
            "beta": 4.0,
            "epsilon": 0.1,
            "early_rejection": True,
        },
        results=rows,
        goals=goals,
        extra={"plot": png},
    )


if __name__ == "__main__":
    C.main(NAME, __doc__, measure)
