"""(8) EM schemes: rejection, STaR and PPS run through ``fem train`` (subprocess, recipe written to a temp dir):
acceptance rate and kept samples of each E-step, and eval accuracy before training and after each round.

- ``toy_parity`` on the tiny random model (the cheap synthetic task of the smoke recipe; 2 rounds). fem's EM loop
  drives ``fem.tasks`` tasks, so the table-LM stylized model of the other benchmarks is not used here.
- ``judge_llmbar_natural`` on SmolLM2-135M-Instruct, the demo's setup at a smaller size (skipped by --quick):
  forced verdicts in the E-step, evaluation of what the model writes (generate: verdict and confidence lines),
  16-token rationales, 1 round. The base model never writes the asked format (accuracy 0); the rows show what
  each scheme's kept samples teach in one round. The base eval runs once (in the first scheme's run).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

NAME = "em"

TOY = """model_name_or_path: tiny-random-llama
lora_r: 8
lora_alpha: 16
task: toy_parity
answer_mode: forced
train_limit: {train}
eval_limit: {eval}
scheme: {scheme}
estep_samples: 4
estep_max_keep: 1
proposal: ancestral
temperature: 1.0
max_new_tokens: 2
generation_batch_size: 16
rounds: {rounds}
restart_from_base: false
eval_temperature: 0.0
eval_before_training: true
output_dir: {out}
learning_rate: 0.01
num_train_epochs: {epochs}
per_device_train_batch_size: 8
max_length: 256
seed: 0
report_to: none
"""

JUDGE = """model_name_or_path: smollm2-135m-instruct
lora_r: 16
lora_alpha: 32
lora_dropout: 0.0
lora_target_modules: [q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj]
task: judge_llmbar_natural
answer_mode: forced
eval_answer_mode: generate
train_limit: {train}
eval_limit: {eval}
scheme: {scheme}
estep_samples: 2
estep_max_keep: 1
proposal: ancestral
temperature: 1.0
max_new_tokens: 16
generation_batch_size: 8
rounds: {rounds}
restart_from_base: true
eval_temperature: 0.0
eval_max_new_tokens: 40
eval_position_swap: false
eval_before_training: {eval_before}
output_dir: {out}
learning_rate: 0.0005
num_train_epochs: {epochs}
per_device_train_batch_size: 1
gradient_accumulation_steps: 4
max_length: 1536
lr_scheduler_type: constant
warmup_steps: 0
seed: 0
report_to: none
"""


def run(template: str, label: str, scheme: str, tmp: Path, **kw) -> list[dict]:
    out = tmp / f"{label}_{scheme}"
    recipe = tmp / f"{label}_{scheme}.yaml"
    recipe.write_text(template.format(scheme=scheme, out=out, **kw))
    t0, load0 = time.perf_counter(), C.load()
    proc = subprocess.run(
        [sys.executable, "-m", "fem", "train", "--config", str(recipe)], capture_output=True, text=True
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        print(proc.stderr[-3000:], file=sys.stderr)
        return [
            {
                "task": label,
                "scheme": scheme,
                "error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed",
            }
        ]
    rows = []
    for line in (out / "metrics.jsonl").read_text().splitlines():
        m = json.loads(line)
        rows.append(
            {
                "task": label,
                "scheme": scheme,
                "round": m.get("round"),
                "acceptance_rate": m.get("estep/acceptance_rate"),
                "kept_samples": m.get("estep/kept_samples"),
                "mstep_loss": m.get("mstep/loss"),
                "eval_accuracy": m.get("eval/accuracy"),
                "eval_ece": m.get("eval/ece"),
                "eval_parsed": m.get("eval/parsed_fraction"),
                "run_wall_s": round(wall, 1),
                "load": round((load0 + C.load()) / 2, 2),
            }
        )
    for r in rows:
        print(r, flush=True)
    return rows


def measure(args: argparse.Namespace) -> C.Measured:
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        for scheme in ("rejection", "star", "pps"):
            rows += run(
                TOY,
                "toy_parity (tiny)",
                scheme,
                t,
                train=40 if args.quick else 60,
                eval=20 if args.quick else 40,
                rounds=1 if args.quick else 2,
                epochs=5 if args.quick else 10,
            )
        if not args.quick and not args.no_smollm2:
            for i, scheme in enumerate(("pps", "rejection", "star")):
                rows += run(
                    JUDGE,
                    "judge_llmbar_natural (SmolLM2-135M)",
                    scheme,
                    t,
                    train=16,
                    eval=16,
                    rounds=1,
                    epochs=2,
                    eval_before="true" if i == 0 else "false",
                )
    C.table(rows, C.COLUMNS[NAME])
    goals = {}
    for task in dict.fromkeys(r["task"] for r in rows):
        base = next((r for r in rows if r["task"] == task and r.get("round") == -1), None)
        for scheme in ("rejection", "star", "pps"):
            sel = [r for r in rows if r["task"] == task and r["scheme"] == scheme and r.get("round") is not None]
            if sel:
                goals[f"{task}_{scheme}"] = C.goal(
                    f"{task} {scheme}: eval accuracy before -> after last round (acceptance of last E-step)",
                    {
                        "before": base["eval_accuracy"] if base else None,
                        "after": sel[-1]["eval_accuracy"],
                        "parsed_after": sel[-1].get("eval_parsed"),
                        "acceptance": sel[-1]["acceptance_rate"],
                        "kept": sel[-1]["kept_samples"],
                    },
                    None,
                )
    return C.Measured(
        settings={
            "toy": "tiny random Llama, toy_parity 60 train / 40 eval, forced, 4 draws/example, 2 rounds, 10 epochs",
            "judge": "SmolLM2-135M, LLMBar natural, forced E-step / generate eval, 16 train / 16 eval, 2 draws, "
            "16-token rationales, 1 round, LoRA r=16 lr 5e-4 2 epochs",
        },
        results=rows,
        goals=goals,
    )


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-smollm2", action="store_true")


if __name__ == "__main__":
    C.main(NAME, __doc__, measure, arguments)
