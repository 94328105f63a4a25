"""Render BENCHMARKS.md from the JSON written by the benchmark scripts (``fem bench report`` / end of ``fem bench all``)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

ORDER = ["exactness", "mixing", "throughput", "power_cost", "quality", "memory", "mstep", "em"]
TITLES = {
    "exactness": "1. Exactness: TV to the exact p^alpha on table LMs",
    "mixing": "2. Mixing versus decisions (stylized decision model)",
    "throughput": "3. E-step throughput (hf backend vs a generate loop, roofline)",
    "power_cost": "4. Power-sampling cost per MH step (vs the reference loop)",
    "quality": "5. Quality at equal compute",
    "memory": "6. Memory",
    "mstep": "7. M-step overhead (vs plain TRL SFTTrainer + LoRA)",
    "em": "8. EM schemes",
}
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
    "quality": ["task", "sampler", "accuracy", "tokens_per_sample", "wall_s", "load"],
    "memory": [
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


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (dict, list)):
        return json.dumps(v, default=str).replace("|", "/")
    return "" if v is None else str(v)


def _table(rows: list[dict], cols: list[str]) -> list[str]:
    cols = [c for c in cols if any(c in r for r in rows)]
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    out += ["| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |" for r in rows]
    return out


def section(data: dict, out_dir: Path, md_dir: Path) -> list[str]:
    name = data["benchmark"]
    m = data["machine"]
    lines = [f"## {TITLES.get(name, name)}", ""]
    lines.append(f"- command: `{data['command']} --out {os.path.relpath(out_dir, md_dir)}` (`{data['argv']}`)")
    lines.append(
        f"- machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']}, transformers {m.get('transformers')}, "
        f"{m['torch_threads']} thread(s), GPU: {m.get('gpu') or 'none'}; git {m['git']}"
    )
    lines.append(
        f"- date: {m['date']}; load average at the end (1/5/15 min): {m['load_average']}; run took {data['wall_s']} s"
    )
    lines.append(f"- settings: `{json.dumps(data['settings'], default=str)}`")
    lines.append("")
    if data.get("goals"):
        lines += ["| goal | measured | status |", "|---|---|---|"]
        for g in data["goals"].values():
            status = "met" if g["met"] else ("reported" if g["met"] is None else "**missed**")
            lines.append(f"| {g['goal']} | {_fmt(g['value'])} | {status} |")
        lines.append("")
    results = data["results"]
    rows = results["rows"] if isinstance(results, dict) and "rows" in results else results
    if isinstance(rows, list) and rows:
        lines += _table(rows, COLUMNS.get(name, list(rows[0])))
        lines.append("")
    if name == "exactness" and rows and "exact_tv_ours_by_N" in rows[0]:
        ns = list(rows[0]["exact_tv_ours_by_N"])
        lines.append(
            "Exact TV of our sampler's output law against N (MH steps per stage; finite-N mixing error only):"
        )
        lines.append("")
        by_n = [
            {
                "lm_seed": r["lm_seed"],
                "alpha": r["alpha"],
                "cut": r["cut"],
                **{f"N={n}": r["exact_tv_ours_by_N"][n] for n in ns},
            }
            for r in rows
        ]
        lines += _table(by_n, ["lm_seed", "alpha", "cut"] + [f"N={n}" for n in ns])
        lines.append("")
    if name == "power_cost":
        raw = results["raw"]
        r = raw["ratios"]
        lines.append(
            f"Power sample / ancestral sample: **{r['power_over_ancestral_tokens']:.2f}x tokens, "
            f"{r['power_over_ancestral_wall']:.2f}x wall** (paper's N*T/(4B) at these settings: "
            f"{raw['paper_formula']['N*T/(4B)']:.2f}x; exact block sum {raw['paper_formula']['exact_block_sum_ratio']:.2f}x; "
            f"published {raw['paper_formula']['published']}). Reference per-step wall / ours: "
            f"{r['wall_per_mh_step_reference_over_ours']:.2f}x (early rejection on), "
            f"{r['wall_per_mh_step_reference_over_ours_no_er']:.2f}x (off)."
        )
        lines.append("")
    if data.get("plot"):
        plot = out_dir / data["plot"]
        lines += [f"![{name}]({os.path.relpath(plot, md_dir)})", ""]
    return lines


def write_report(out_dir: Path | str, target: Path | str | None = None) -> Path:
    out_dir = Path(out_dir).resolve()
    target = Path(target) if target else out_dir / "BENCHMARKS.md"
    md_dir = target.resolve().parent
    lines = [
        "# Benchmarks",
        "",
        "Generated by `make bench` (= `fem bench all --out benchmarks/results`, every section) or `make bench-core` "
        "(the claims' subset) from the JSON in "
        f"`{os.path.relpath(out_dir, md_dir)}/`; do not edit by hand (`fem bench report` re-renders it). Each section names "
        "the command, the machine and the date of its numbers; baselines are measured in the same process, and the "
        "1-minute load average is recorded next to timings (the machine is shared: absolute timings are noisy, ratios less "
        "so). `fem bench NAME --quick` runs a seconds-long smoke version of each.",
        "",
    ]
    notes = Path(__file__).resolve().parent / "NOTES.md"
    if notes.is_file():
        lines += [notes.read_text().strip(), ""]
    for name in ORDER + sorted(p.stem for p in out_dir.glob("*.json") if p.stem not in ORDER):
        path = out_dir / f"{name}.json"
        if not path.is_file():
            lines += [f"## {TITLES.get(name, name)}", "", f"_not run yet: `fem bench {name}`_", ""]
            continue
        lines += section(json.loads(path.read_text()), out_dir, md_dir)
    target.write_text("\n".join(lines) + "\n")
    return target
