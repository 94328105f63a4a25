"""``fem bench``: run the benchmark scripts in ``benchmarks/`` (one subprocess each) and regenerate BENCHMARKS.md.

    fem bench list                       the benchmarks and what each measures
    fem bench NAME [--quick] [--out DIR] one benchmark (JSON into DIR, default benchmarks/results)
    fem bench all [--quick] [--out DIR]  every benchmark, then BENCHMARKS.md (what `make bench` runs; ~50 min on 2 cores
                                         plus ~1.5 h for the calibration study on vLLM)
    fem bench core [--out DIR]           every section at a reduced size (~20 min on 2 cores, `make bench-core`):
                                         throughput fp32 only, quality and em on the stylized task only,
                                         calibration on LLMBar only (10 training / 12 eval pairs, balanced)
    fem bench report [--out DIR]         rebuild BENCHMARKS.md from the JSON in DIR

The scripts live in the source checkout, not in the wheel: ``fem bench`` runs the ``benchmarks/`` folder of the
current directory (the checkout's root: an editable or a regular install alike), else ``$FEM_BENCHMARKS``, else the
one next to an editable install's package. Each script runs in its own process, BENCHMARKS.md is written by
``benchmarks/report.py``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from fem.errors import FemError

# name -> (script, one-line description); the order is the order of `all` and of BENCHMARKS.md
BENCHMARKS: dict[str, tuple[str, str]] = {
    "exactness": ("bench_exactness.py", "TV(sampler output, exact p^alpha) on table LMs, ours vs reference kernels"),
    "mixing": ("bench_mixing.py", "MH steps to TV <= 0.1 on the stylized decision model, uniform vs entropy cut"),
    "throughput": (
        "bench_throughput.py",
        "E-step tokens/s of the hf backend vs a generate loop, fraction of roofline",
    ),
    "power_cost": (
        "bench_power_cost.py",
        "per-MH-step wall/decoded/re-encoded tokens, power_mh vs the reference loop",
    ),
    "quality": ("bench_quality.py", "accuracy at equal compute: ancestral, low-temp, best-of-n, power MH"),
    "memory": ("bench_memory.py", "peak RSS of the E-step, power_mh (64 chains) and one M-step"),
    "mstep": ("bench_mstep.py", "fem M-step vs a plain TRL SFTTrainer + LoRA script, tokens/s"),
    "em": ("bench_em.py", "EM schemes (rejection, STaR, PPS): acceptance, kept samples, eval accuracy"),
    "calibration": (
        "bench_calibration.py",
        "judge calibration: confidence targets, balance/swap, vs temperature scaling (SmolLM2, 3 datasets)",
    ),
    "power": (
        "bench_power.py",
        "equal-token accuracy, log p^alpha, wall: ancestral, low-temp, best-of-n, power_mh, power_smc (stylized, SmolLM2)",
    ),
    "vllm": ("bench_vllm.py", "decoding tokens/s of the vllm backend vs hf vs a generate loop, fp32/bf16, roofline"),
    "vllm_estep": ("bench_vllm_estep.py", "the demo's judge E-step end to end, hf vs vllm backend"),
}
# group -> {benchmark: its extra arguments}; the order is the order of the run and of BENCHMARKS.md
ALL: dict[str, list[str]] = {n: [] for n in BENCHMARKS}
# calibration: its three datasets in two processes, generation on the vLLM engine (fp32, as the M-step)
ALL["calibration"] = ["--workers", "2", "--backend", "vllm", "--vllm-dtype", "float32"]
ALL["power"] = ["--backend", "hf,vllm"]  # the SmolLM2 slice on both backends
# every section at a size that fits ~20 min on a 2-core CPU (`make bench-core`): throughput in fp32 only (bf16 has
# no hardware support on such CPUs), quality on the stylized task only, EM schemes on the stylized task only, power
# on the even stylized model at one budget and a 16-question SmolLM2 slice (T=16)
CORE: dict[str, list[str]] = {
    **ALL,
    "throughput": ["--dtypes", "float32"],
    "quality": ["--gsm8k", "0"],
    "em": ["--no-smollm2"],
    # LLMBar only, 10 training / 12 eval pairs (both ways), the balanced variant: ~10 min on 2 cores
    "calibration": [
        "--datasets",
        "judge_llmbar",
        "--train-pairs",
        "10",
        "--eval-pairs",
        "12",
        "--variants",
        "balanced",
        "--backend",
        "vllm",
        "--vllm-dtype",
        "float32",
    ],
    "power": "--models even --multiples 8 --samples 256 --slice-n 16 --slice-t 16 --latency-n 4 --backend hf,vllm".split(),
    "vllm": ["--batches", "1", "32"],
    "vllm_estep": ["--examples", "16"],
}
GROUPS = {"all": ALL, "core": CORE}


def benchmarks_dir() -> Path:
    """``benchmarks/`` of the source checkout: in the current directory, at ``$FEM_BENCHMARKS``, or next to the
    package of an editable install."""
    candidates = [Path.cwd() / "benchmarks"]
    if os.environ.get("FEM_BENCHMARKS"):
        candidates.append(Path(os.environ["FEM_BENCHMARKS"]))
    candidates.append(Path(__file__).resolve().parents[2] / "benchmarks")
    for path in candidates:
        if (path / "_common.py").is_file():
            return path.resolve()
    raise FemError(
        "no benchmarks folder (benchmarks/_common.py) in the current directory",
        fix="run fem bench from the root of the fem source checkout, or set FEM_BENCHMARKS to its benchmarks/ folder",
    )


def _run(root: Path, name: str, quick: bool, out: Path, extra: list[str]) -> int:
    script = root / BENCHMARKS[name][0]
    cmd = [sys.executable, str(script), "--out", str(out), *(["--quick"] if quick else []), *extra]
    env = {**os.environ}
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("HF_HUB_OFFLINE", "1")
    shown = " ".join([name, *(["--quick"] if quick else []), *extra])
    print(f"== fem bench {shown}  (load {os.getloadavg()[0]:.2f})", flush=True)
    t0 = time.perf_counter()
    code = subprocess.call(cmd, env=env, cwd=str(script.parents[1]))
    print(f"== {name}: exit {code} after {time.perf_counter() - t0:.0f} s", flush=True)
    return code


def _write_report(root: Path, out: Path, quick: bool) -> int:
    """BENCHMARKS.md from the JSON in ``out``, rendered by ``benchmarks/report.py`` (it prints the path)."""
    target = _report_target(root, out, quick)
    return subprocess.call([sys.executable, str(root / "report.py"), str(out), str(target)], cwd=str(root.parent))


def _report_target(root: Path, out: Path, quick: bool) -> Path:
    """The top-level BENCHMARKS.md for the default results folder; ``OUT/BENCHMARKS.md`` otherwise (or with --quick)."""
    default = not quick and out.resolve() == (root / "results").resolve()
    return root.parent / "BENCHMARKS.md" if default else out / "BENCHMARKS.md"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="fem bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("name", help="list | all | core | report | " + " | ".join(BENCHMARKS))
    parser.add_argument("--quick", action="store_true", help="seconds-long versions (smoke test of the scripts)")
    parser.add_argument("--out", default=None, help="folder for the JSON/PNG results (default benchmarks/results)")
    args, extra = parser.parse_known_args(argv)
    if args.name == "list":
        for name, (script, text) in BENCHMARKS.items():
            print(f"{name:<12} {text}  [benchmarks/{script}]")
        return 0
    root = benchmarks_dir()
    out = Path(args.out) if args.out else root / "results"
    out.mkdir(parents=True, exist_ok=True)
    if args.name == "report":
        return _write_report(root, out, args.quick)
    if args.name in GROUPS:
        group = GROUPS[args.name]
        failed = [n for n, own in group.items() if _run(root, n, args.quick, out, [*own, *extra]) != 0]
        if _write_report(root, out, args.quick) != 0:
            failed.append("report")
        if failed:
            print(f"fem bench: failed: {', '.join(failed)}", file=sys.stderr)
        return 1 if failed else 0
    if args.name not in BENCHMARKS:
        raise FemError(
            f"unknown benchmark '{args.name}'", fix=f"use one of list, all, core, report, {', '.join(BENCHMARKS)}"
        )
    return _run(root, args.name, args.quick, out, extra)
