"""Shared helpers of the benchmark scripts: the harness (``main``), machine info, load average, matmul roofline,
JSON output.

A script defines ``measure(args) -> Measured`` (and optionally its extra arguments) and ends with
``C.main(NAME, __doc__, measure, arguments)``: the harness parses ``--quick`` (seconds, used by
tests/test_bench.py), ``--out DIR`` and ``--seed``, sets one thread, measures, prints the goals and writes
``DIR/<name>.json`` = ``{"benchmark", "command", "machine", "settings", "results", "goals"}``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def load() -> float:
    """The 1-minute load average (recorded next to every timing: the machine is shared)."""
    return round(os.getloadavg()[0], 2)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True)
        return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except OSError:
        return "unknown"


def machine_info() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "git": git_commit(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:
        pass
    return info


def matmul_gflops(dtype_name: str = "float32", n: int = 1024, seconds: float = 0.5) -> dict[str, float]:
    """Measured dense matmul throughput (n x n x n, current thread count): the roofline of decode/train."""
    import torch

    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype_name]
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(3):
        a @ b
    best, reps, t_end = 0.0, 0, time.perf_counter() + seconds
    while time.perf_counter() < t_end or reps < 5:
        t0 = time.perf_counter()
        a @ b
        dt = time.perf_counter() - t0
        best = max(best, 2 * n**3 / dt / 1e9)
        reps += 1
    return {"dtype": dtype_name, "n": n, "gflops_best": round(best, 1), "load": load()}


def parser(name: str, doc: str | None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=f"fem bench {name}", description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="seconds-long smoke version (used by tests)")
    p.add_argument("--out", default=str(RESULTS), help="folder for <name>.json (and plots)")
    p.add_argument("--seed", type=int, default=0)
    return p


def setup_threads() -> None:
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))


def command_line(name: str, quick: bool) -> str:
    """The ``fem bench`` command that reproduces this run: the script's arguments without ``--out``."""
    argv = sys.argv[1:]
    out_at = {i for i, a in enumerate(argv) if a == "--out"}
    drop = out_at | {i + 1 for i in out_at}
    args = [a for i, a in enumerate(argv) if i not in drop and not a.startswith("--out=")]
    if quick and "--quick" not in args:
        args.append("--quick")
    return " ".join(["fem bench", name, *(shlex.quote(a) for a in args)])


def write(
    name: str, out: str | Path, *, quick: bool, settings: dict, results: Any, goals: dict, started: float, **extra
) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    record = {
        "benchmark": name,
        "command": command_line(name, quick),
        "argv": " ".join(shlex.quote(a) for a in sys.argv),
        "quick": quick,
        "machine": machine_info(),
        "wall_s": round(time.perf_counter() - started, 1),
        "settings": settings,
        "results": results,
        "goals": goals,
        **extra,
    }
    path = out / f"{name}.json"
    path.write_text(json.dumps(record, indent=2, default=float))
    print(f"\nwrote {path}")
    return path


@dataclass
class Measured:
    """What a benchmark measured: the settings that define the run, its results, its goals (``goal`` each), and any
    extra top-level keys of the JSON record (e.g. a plot's file name)."""

    settings: dict[str, Any]
    results: Any
    goals: dict[str, dict[str, Any]]
    extra: dict[str, Any] = field(default_factory=dict)


def main(
    name: str,
    doc: str | None,
    measure: Callable[[argparse.Namespace], Measured],
    arguments: Callable[[argparse.ArgumentParser], None] | None = None,
) -> NoReturn:
    """A benchmark script's whole run: its arguments, one thread, ``measure``, the goals printed, the JSON record
    written, exit 0 (``measure`` raises ``SystemExit`` when the run cannot finish)."""
    p = parser(name, doc)
    if arguments is not None:
        arguments(p)
    args = p.parse_args()
    setup_threads()
    started = time.perf_counter()
    measured = measure(args)
    for g in measured.goals.values():
        print(f"{'MET ' if g['met'] else ('----' if g['met'] is None else 'MISS')} {g['goal']}: {g['value']}")
    write(
        name,
        args.out,
        quick=args.quick,
        settings=measured.settings,
        results=measured.results,
        goals=measured.goals,
        started=started,
        **measured.extra,
    )
    sys.exit(0)


def goal(description: str, value: Any, met: bool | None) -> dict[str, Any]:
    """One goal line: what it asks, the measured value, met / missed (None: not measured in this run)."""
    return {"goal": description, "value": value, "met": None if met is None else bool(met)}


def table(rows: list[dict], cols: list[str], title: str | None = None) -> str:
    """A plain-text (and Markdown-compatible) table."""

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}" if abs(v) < 1e5 else f"{v:.3e}"
        return "" if v is None else str(v)

    lines = ([f"{title}"] if title else []) + ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in cols) + " |" for r in rows]
    text = "\n".join(lines)
    print(text)
    return text


def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def rss_mb() -> float:
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    except ImportError:
        return float("nan")


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS (Linux ``clear_refs`` 5), so ``phase_peak_rss_mb`` measures what follows."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def phase_peak_rss_mb() -> float:
    """Peak RSS since the last ``reset_peak_rss`` (VmHWM); ru_maxrss where /proc is not available."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return peak_rss_mb()


# Table columns of each section, for the script's printout and for BENCHMARKS.md alike.
COLUMNS = {
    "exactness": [
        "lm_seed",
        "alpha",
        "cut",
        "N",
        "exact_tv_ours",
        "exact_tv_reference",
        "exact_tv_ours_early_stop",
        "exact_tv_reference_early_stop",
        "exact_tv_reference_N100000",
        "sampled_tv_ours_er",
        "sampled_tv_ours_no_er",
        "sampled_tv_reference",
        "sampling_noise_floor",
        "tv_low_temp",
        "tv_base_p",
    ],
    "mixing": [
        "sweep",
        "T",
        "k",
        "cut",
        "steps",
        "steps_to_90pct_accuracy",
        "decoded_tokens_per_chain_step",
        "accuracy_p",
        "accuracy_p_alpha",
        "wall_s",
        "load",
    ],
    "throughput": [
        "model",
        "dtype",
        "batch",
        "tokens_per_s",
        "generate_loop_tokens_per_s",
        "ratio_vs_generate_loop",
        "matmul_gflops",
        "roofline_tokens_per_s",
        "fraction_of_roofline",
        "load",
    ],
    "power_cost": ["sampler", "s_per_mh_step", "decoded_per_step", "reencoded_per_step", "acceptance"],
    "vllm": [
        "model",
        "dtype",
        "batch",
        "adapter",
        "generate_loop_tokens_per_s",
        "hf_tokens_per_s",
        "vllm_tokens_per_s",
        "vllm_no_stats_tokens_per_s",
        "vllm_compiled_tokens_per_s",
        "vllm_vs_hf",
        "compiled_vs_hf",
        "compiled_vs_eager",
        "vllm_vs_generate_loop",
        "vllm_fraction_of_roofline",
        "hf_fraction_of_roofline",
        "vllm_vs_no_adapter",
        "load",
    ],
    "vllm_estep": [
        "backend",
        "dtype",
        "batch",
        "examples",
        "wall_s",
        "prompts_per_s",
        "tokens_decoded",
        "readout_tokens_encoded",
        "kept",
        "speedup_vs_hf_float32",
        "load",
    ],
    "quality": ["task", "sampler", "accuracy", "tokens_per_sample", "wall_s", "load"],
    "memory": [
        "model",
        "part",
        "param_mb",
        "rss_after_load_mb",
        "increase_over_load_mb",
        "peak_rss_mb",
        "tokens_held",
        "kv_held_mb",
        "phase_s",
        "load",
    ],
    "mstep": [
        "impl",
        "rep",
        "steps",
        "tokens",
        "train_runtime_s",
        "wall_s",
        "tokens_per_s",
        "tokens_per_s_wall",
        "load",
    ],
    "power": [
        "model",
        "backend",
        "budget_xT",
        "sampler",
        "accuracy",
        "accuracy_ci95",
        "chance",
        "mean_log_pi",
        "mean_alpha_logp",
        "mean_logp",
        "tokens_per_sample",
        "wall_x_ancestral",
        "latency_x_ancestral",
        "smc_resamples",
        "smc_final_ess",
        "unique_draws",
        "exact_accuracy_p",
        "exact_accuracy_p_alpha",
        "exact_e_log_pi",
        "load",
    ],
    "calibration": [
        "dataset",
        "judge",
        "confidence",
        "accuracy",
        "position_consistency",
        "ece",
        "ece_mass",
        "brier",
        "nll",
        "scored_fraction",
        "mean_confidence",
        "kept",
        "mean_target",
    ],
    "em": [
        "task",
        "scheme",
        "round",
        "acceptance_rate",
        "kept_samples",
        "mstep_loss",
        "eval_accuracy",
        "eval_ece",
        "eval_parsed",
        "run_wall_s",
        "load",
    ],
}
