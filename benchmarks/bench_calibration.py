"""(9) Calibration study: does a judge trained by PPS state calibrated confidence, and does it beat temperature scaling?

SmolLM2-135M-Instruct on MT-Bench human judgments (``judge``), LLMBar natural + adversarial (``judge_llmbar``: the
natural set alone has only 50 eval pairs) and TL;DR (``summarize``, target: the human confidence). Per dataset, on
``--train-pairs`` training pairs and ``--eval-pairs`` eval pairs (every pair asked both ways, see
``_calibration_study.py``): the base model's read-out; the base read-out with one temperature fitted on the
training pairs (the baseline every calibration method is compared with); and one PPS round per confidence target
(``readout``, ``plain_readout``, ``plain_readout_debiased``, ``empirical``) and variant (``plain``: pairs as given; ``balanced``: both orders,
kept samples balanced across gold verdicts), evaluated on what the trained judge states after a forced verdict and
on its read-out. Accuracy, position consistency, ECE (15 equal-width / equal-mass bins), Brier and NLL, each with a
95 % bootstrap interval over pairs.

``--selection`` evaluates on held-out train pairs instead of the eval split (how fem's default target is chosen:
never on the eval split). ``--workers N`` runs datasets in N processes (one thread each). Every run records the CPU
seconds of each phase and extrapolates them to the full size (the defaults): ``estimate`` in the JSON.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

NAME = "calibration"
DATASETS = ("judge", "judge_llmbar", "summarize")
FULL = {"train_pairs": 32, "eval_pairs": 100, "targets": 4, "variants": 2}
QUICK = ["--model", "tiny-random-llama", "--datasets", "judge_llmbar_natural", "--train-pairs", "3",
         "--eval-pairs", "2", "--rationale-tokens", "2", "--confidence-samples", "2", "--boot", "50"]  # fmt: skip


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--datasets", default=",".join(DATASETS), help="comma-separated pairwise tasks")
    p.add_argument("--train-pairs", type=int, default=FULL["train_pairs"])
    p.add_argument("--eval-pairs", type=int, default=FULL["eval_pairs"])
    p.add_argument("--targets", default="readout,plain_readout,plain_readout_debiased,empirical")
    p.add_argument("--variants", default="plain,balanced")
    p.add_argument("--draws", type=int, default=2, help="hinted draws per training example (PPS)")
    p.add_argument("--confidence-samples", type=int, default=4, help="plain draws behind the empirical target")
    p.add_argument("--rationale-tokens", type=int, default=16)
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--boot", type=int, default=1000, help="bootstrap resamples per interval")
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--backend", default="hf", help="generation backend of E-steps and evals: hf or vllm")
    p.add_argument("--vllm-dtype", default="fastest", help="backend vllm: the engine's dtype (vllm_dtype)")
    p.add_argument("--selection", action="store_true", help="evaluate on held-out train pairs, not the eval split")
    p.add_argument("--workers", type=int, default=1, help="datasets run in this many processes")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: run one dataset, write --part
    p.add_argument("--part", default=None, help=argparse.SUPPRESS)


def parse_lists(args: argparse.Namespace) -> argparse.Namespace:
    for name in ("datasets", "targets", "variants"):
        setattr(args, name, [x.strip() for x in getattr(args, name).split(",") if x.strip()])
    return args


def worker_argv(args: argparse.Namespace, dataset: str, part: Path) -> list[str]:
    argv = [sys.executable, str(Path(__file__).resolve()), "--one", dataset, "--part", str(part), "--out", args.out]
    for name in ("train_pairs", "eval_pairs", "draws", "confidence_samples", "rationale_tokens", "epochs", "boot",
                 "model", "seed", "backend", "vllm_dtype"):  # fmt: skip
        argv += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    argv += ["--targets", ",".join(args.targets), "--variants", ",".join(args.variants)]
    return argv + (["--selection"] if args.selection else []) + (["--quick"] if args.quick else [])


def run_all(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Each dataset in a subprocess, at most ``--workers`` at once (the next starts as soon as any one ends); their
    records by dataset."""
    with tempfile.TemporaryDirectory() as tmp:
        pending = list(args.datasets)
        running: list[tuple[str, Path, subprocess.Popen]] = []
        parts: dict[str, dict[str, Any]] = {}
        while pending or running:
            while pending and len(running) < max(args.workers, 1):
                name = pending.pop(0)
                part = Path(tmp) / f"{name}.json"
                running.append((name, part, subprocess.Popen(worker_argv(args, name, part))))
            done = [job for job in running if job[2].poll() is not None]
            if not done:
                time.sleep(1.0)
                continue
            for name, part, proc in done:
                running.remove((name, part, proc))
                if proc.returncode != 0 or not part.is_file():
                    raise SystemExit(f"fem bench {NAME}: dataset {name} failed (exit {proc.returncode})")
                parts[name] = json.loads(part.read_text())
        return {name: parts[name] for name in args.datasets}


def estimate(parts: dict[str, dict[str, Any]], args: argparse.Namespace, workers: int = 2) -> dict[str, Any]:
    """CPU seconds a full-size run (the defaults) would take, from this run's measured cost per unit: per eval
    prompt, per E-step example (hinted draws, plain draws and read-outs), per M-step sample-epoch, per model load."""
    per_dataset = {}
    for name, part in parts.items():
        phases, units = part["cost"]["phases"], part["cost"]["units"]
        cpu = {k: v["cpu_s"] for k, v in phases.items()}
        estep_cpu = sum(v for k, v in cpu.items() if k.startswith(("estep", "target_")))
        n, e = 2 * FULL["train_pairs"], 2 * FULL["eval_pairs"]  # every pair asked / drawn both ways
        judges = FULL["targets"] * FULL["variants"]
        measured_judges = max(len(args.targets) * len(args.variants), 1)
        per_dataset[name] = round(
            cpu.get("load", 0.0)
            + cpu.get("eval", 0.0) / max(units["eval_prompts"], 1) * (e * (1 + judges) + n)
            + estep_cpu / max(units["estep_examples"], 1) * n
            + cpu.get("mstep", 0.0) * n / max(units["estep_examples"], 1) * judges / measured_judges
        )
    loads = [0.0] * workers  # longest first onto the least loaded worker
    for cost in sorted(per_dataset.values(), reverse=True):
        loads[loads.index(min(loads))] += cost
    return {
        "full_size": dict(FULL, datasets=list(parts)),
        "cpu_s_per_dataset": per_dataset,
        "cpu_min_total": round(sum(per_dataset.values()) / 60, 1),
        f"wall_min_on_{workers}_quiet_cores": round(max(loads) / 60, 1),
    }


def fmt_interval(metric: Any) -> str:
    if not isinstance(metric, dict):
        return "-"
    lo, hi = metric["interval"]
    return f"{metric['value']:.3f} [{lo:.3f}, {hi:.3f}]"


def flat(row: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in row.items() if not isinstance(v, dict)}
    for key in ("accuracy", "position_consistency", "ece", "ece_mass", "brier", "nll"):
        out[key] = fmt_interval(row.get(key))
    return out


def goals(rows: list[dict[str, Any]], cost: dict[str, Any], model: str) -> dict[str, Any]:
    """Which target wins on the NLL of what the judge states (mean over datasets), whether any trained judge
    beats temperature scaling (its NLL interval entirely below the scaled base's point estimate), and whether a
    full-size run fits 45 minutes on 2 quiet cores (extrapolated from this run's CPU seconds)."""
    wall = cost[next(k for k in cost if k.startswith("wall_min"))]
    covered = set(cost["full_size"]["datasets"]) >= set(DATASETS)  # a claim about the full run needs all three
    out: dict[str, Any] = {
        "full_size_time": C.goal(
            f"full size ({FULL['train_pairs']} train / {FULL['eval_pairs']} eval pairs, {FULL['targets']} targets x "
            f"{FULL['variants']} variants, {model}) within 45 min on 2 quiet cores, extrapolated from this run"
            + ("" if covered else f" (only {', '.join(cost['full_size']['datasets'])} measured: not judged)"),
            {"cpu_min_total": cost["cpu_min_total"], "wall_min_2_cores": wall},
            wall <= 45 if covered else None,
        )
    }
    trained = [r for r in rows if r["judge"].startswith("pps") and r["confidence"] == "stated" and r.get("nll")]
    by_target: dict[str, list[float]] = {}
    for r in trained:
        by_target.setdefault(r["judge"].split()[1], []).append(r["nll"]["value"])
    if by_target:
        means = {t: round(sum(v) / len(v), 4) for t, v in by_target.items()}
        out["best_target"] = C.goal("confidence target with the lowest NLL of the stated confidence (mean over "
                                    "datasets and variants)", {"winner": min(means, key=means.get), **means}, None)  # fmt: skip
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        ts = next((r for r in rows if r["dataset"] == dataset and r["judge"].startswith("base +")), None)
        mine = [r for r in trained if r["dataset"] == dataset]
        if ts and ts.get("nll") and mine:
            best = min(mine, key=lambda r: r["nll"]["value"])
            beats = best["nll"]["interval"][1] < ts["nll"]["value"]
            out[f"{dataset}_vs_temperature_scaling"] = C.goal(
                f"{dataset}: best trained judge's stated-confidence NLL below base + temperature scaling",
                {
                    "best": best["judge"],
                    "nll": fmt_interval(best["nll"]),
                    "temperature_scaling": fmt_interval(ts["nll"]),
                },
                beats,
            )
    return out


def measure(args: argparse.Namespace) -> C.Measured:
    if args.quick:  # seconds: the tiny random model on a couple of pairs, every phase and target once
        parser = C.parser(NAME, __doc__)
        arguments(parser)
        args = parser.parse_args([*QUICK, "--quick", "--out", args.out, "--seed", str(args.seed)])
    args = parse_lists(args)
    parts = run_all(args)
    rows = [row for part in parts.values() for row in part["rows"]]
    C.table([flat(r) for r in rows], C.COLUMNS[NAME])
    settings = {k: getattr(args, k) for k in ("datasets", "train_pairs", "eval_pairs", "targets", "variants", "draws",
                                             "confidence_samples", "rationale_tokens", "epochs", "boot", "model",
                                             "selection", "backend", "vllm_dtype")}  # fmt: skip
    cost = {name: part["cost"] for name, part in parts.items()}
    full = estimate(parts, args)
    return C.Measured(
        settings=settings, results=rows, goals=goals(rows, full, args.model), extra={"cost": cost, "estimate": full}
    )


def one(args: argparse.Namespace) -> None:
    """Internal: one dataset in this process (``--one NAME --part FILE``)."""
    from _calibration_study import run_dataset

    args = parse_lists(args)
    with tempfile.TemporaryDirectory() as tmp:
        record = run_dataset(args.one, args, Path(tmp) / args.one)
    Path(args.part).write_text(json.dumps(record, default=float))


if __name__ == "__main__":
    if "--one" in sys.argv:
        parser = C.parser(NAME, __doc__)
        arguments(parser)
        C.setup_threads()
        one(parser.parse_args())
    else:
        C.main(NAME, __doc__, measure, arguments)
