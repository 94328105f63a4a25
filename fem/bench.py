"""``fem bench``: run the benchmark scripts in ``benchmarks/`` (one subprocess each) and regenerate BENCHMARKS.md.

    fem bench list                       the benchmarks and what each measures
    fem bench NAME [--quick] [--out DIR] one benchmark (JSON into DIR, default benchmarks/results)
    fem bench all [--quick] [--out DIR]  every benchmark, then BENCHMARKS.md (what `make bench` runs; ~50 min on 2 cores)
    fem bench core [--out DIR]           every section at a reduced size (< 20 min on 2 cores, `make bench-core`):
                                         throughput fp32 only, quality and em on the stylized task only
    fem bench report [--out DIR]         rebuild BENCHMARKS.md from the JSON in DIR

The scripts live in the repository checkout (editable install), not in the wheel.
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
    "power": (
        "bench_power.py",
        "equal-token accuracy and log p^alpha: ancestral, low-temp, best-of-n, power_mh, power_smc (stylized)",
    ),
    "proposals": ("bench_proposals.py", "(legacy) backend and power_mh throughput in one script"),
}
# group -> {benchmark: its extra arguments}; the order is the order of the run and of BENCHMARKS.md
ALL: dict[str, list[str]] = {n: [] for n in BENCHMARKS if n != "proposals"}
# every section at a size that fits < 20 min on a 2-core CPU (`make bench-core`): throughput in fp32 only (bf16 has
# no hardware support on such CPUs), quality on the stylized task only, EM schemes on the stylized task only
CORE: dict[str, list[str]] = {
    **ALL,
    "throughput": ["--dtypes", "float32"],
    "quality": ["--gsm8k", "0"],
    "em": ["--no-smollm2"],
    "power": ["--models", "even", "--multiples", "8", "--samples", "256"],
}
GROUPS = {"all": ALL, "core": CORE}


def benchmarks_dir() -> Path:
    """``benchmarks/`` next to the ``fem`` package of the checkout (editable install)."""
    path = Path(__file__).resolve().parents[1] / "benchmarks"
    if not (path / "_common.py").is_file():
        raise FemError(
            f"no benchmarks folder at {path}",
            fix="run fem bench from a source checkout installed with `pip install -e .` (make install)",
        )
    return path


def _run(name: str, quick: bool, out: Path, extra: list[str]) -> int:
    script = benchmarks_dir() / BENCHMARKS[name][0]
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
    sys.path.insert(0, str(root))
    if args.name == "report":
        from report import write_report  # benchmarks/report.py

        print(f"wrote {write_report(out, _report_target(root, out, args.quick))}")
        return 0
    if args.name in GROUPS:
        group = GROUPS[args.name]
        failed = [n for n, own in group.items() if _run(n, args.quick, out, [*own, *extra]) != 0]
        from report import write_report

        print(f"wrote {write_report(out, _report_target(root, out, args.quick))}")
        if failed:
            print(f"fem bench: failed: {', '.join(failed)}", file=sys.stderr)
        return 1 if failed else 0
    if args.name not in BENCHMARKS:
        raise FemError(
            f"unknown benchmark '{args.name}'", fix=f"use one of list, all, core, report, {', '.join(BENCHMARKS)}"
        )
    return _run(args.name, args.quick, out, extra)
