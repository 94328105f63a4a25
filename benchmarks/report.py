"""Render BENCHMARKS.md from the JSON written by the benchmark scripts (``fem bench report`` / end of ``fem bench all``)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from _common import COLUMNS  # benchmarks/ is on sys.path: fem bench runs this file as a script

ORDER = [
    "exactness",
    "mixing",
    "throughput",
    "power_cost",
    "quality",
    "memory",
    "mstep",
    "em",
    "calibration",
    "power",
    "vllm",
    "vllm_estep",
]
TITLES = {
    "exactness": "1. Exactness: TV to the exact p^alpha on table LMs",
    "mixing": "2. Mixing versus decisions (stylized decision model)",
    "throughput": "3. E-step throughput (hf backend vs a generate loop, roofline)",
    "power_cost": "4. Power-sampling cost per MH step (hf and vLLM backends vs the reference loop)",
    "quality": "5. Quality at equal compute",
    "memory": "6. Memory",
    "mstep": "7. M-step overhead (vs plain TRL SFTTrainer + LoRA)",
    "em": "8. EM schemes",
    "calibration": "9. Judge calibration: confidence targets and temperature scaling",
    "calibration_selection": "9b. Judge calibration: the default target chosen on held-out training pairs",
    "power": "10. Power sampling at equal tokens: power_smc, power_mh and baselines (stylized models, SmolLM2 slice)",
    "vllm": "11. vLLM backend decoding (vs the hf backend and a generate loop, roofline)",
    "vllm_estep": "12. The demo's judge E-step end to end, hf vs vLLM backend",
}


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict) and set(v) == {"value", "interval"}:  # a measure with its 95 % bootstrap interval
        lo, hi = v["interval"]
        return f"{v['value']:.3f} [{lo:.3f}, {hi:.3f}]"
    if isinstance(v, (dict, list)):
        return json.dumps(v, default=str).replace("|", "/")
    return "" if v is None else str(v)


def _table(rows: list[dict], cols: list[str]) -> list[str]:
    cols = [c for c in cols if any(c in r for r in rows)]
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    out += ["| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |" for r in rows]
    return out


def section(data: dict, out_dir: Path, md_dir: Path, title: str | None = None) -> list[str]:
    name = data["benchmark"]
    m = data["machine"]
    lines = [f"## {title or TITLES.get(name, name)}", ""]
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
        "(every section at a reduced size, about 20 min) from the JSON in "
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
        lines += section(json.loads(path.read_text()), out_dir, md_dir, TITLES.get(name))
    target.write_text("\n".join(lines) + "\n")
    return target


if __name__ == "__main__":  # python benchmarks/report.py RESULTS_DIR [TARGET.md]  (what `fem bench report` runs)
    print(f"wrote {write_report(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None)}")
