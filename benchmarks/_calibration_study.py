"""One dataset of the calibration study (``bench_calibration.py``), in one process with one model load.

On ``train_pairs`` training pairs and ``eval_pairs`` evaluation pairs (the eval split, or held-out train pairs with
``--selection``), every pair asked both ways:

1. the base model's read-out on the eval pairs; temperature scaling fitted on the base read-outs of the training
   pairs (the calibration split: the same labelled pairs the trained judges learn from) and applied to eval;
2. one PPS E-step on the training pairs in both orders, scored once; each confidence target is then written into
   the kept samples' completions (``fem.estep.confidence``: the extra plain draws of ``empirical`` and the plain
   read-out are made once and shared), and each variant takes its share: ``plain`` the pairs as given (no swap, no
   balance), ``balanced`` both orders with the kept samples balanced across gold verdicts;
3. per (target, variant) one LoRA M-step from the base model and an eval of what the trained judge states
   (forced verdict, then its own ``Confidence:`` line) and of its read-out.

Pairs are sorted by prompt length before batching (a batch pads to its longest prompt). Process CPU seconds per
phase and unit counts are recorded, so a slice run estimates what a full-size run costs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from trl import get_peft_config

from fem import calibration as Cal
from fem.configs import CONFIDENCE_TARGETS
from fem.drawing import HINTED, Sample, render_prompt
from fem.estep.confidence import apply_confidence_targets, balance_records
from fem.estep.schemes import build_scheme
from fem.eval.evaluate import evaluate, to_prediction
from fem.eval.scaling import apply as apply_temperature
from fem.eval.scaling import fit as fit_temperature
from fem.mstep.sft import train_adapter
from fem.recipe import parse_configs
from fem.runtime import Runtime, build_runtime
from fem.tasks.base import Example
from fem.utils.distributed import World
from fem.utils.io import read_jsonl

VARIANTS = ("plain", "balanced")
SWAP = ":swapped"


def recipe(task: str, out: Path, args: Any) -> dict[str, Any]:
    return {
        "model_name_or_path": args.model,
        "dtype": "float32",
        "backend": args.backend,
        "vllm_dtype": args.vllm_dtype,
        "lora_r": 16,
        "lora_alpha": 32,
        "lora_dropout": 0.0,
        "lora_target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        "task": task,
        "answer_mode": "forced",
        "scheme": "pps",
        "estep_samples": args.draws,
        "estep_max_keep": 1,
        "confidence_samples": args.confidence_samples,
        "confidence_prior": 1.0,
        "proposal": "ancestral",
        "temperature": 1.0,
        "max_new_tokens": args.rationale_tokens,
        "generation_batch_size": 8,
        "eval_temperature": 0.0,
        "eval_confidence": "stated",
        "output_dir": str(out),
        "learning_rate": 5e-4,
        "num_train_epochs": args.epochs,
        "per_device_train_batch_size": 1,
        "gradient_accumulation_steps": 4,
        "max_length": 2048,
        "lr_scheduler_type": "constant",
        "save_strategy": "no",
        "seed": args.seed,
        "report_to": "none",
    }


class Clock:
    """Process CPU seconds and wall seconds per phase (the machine is shared: CPU time is what a phase costs)."""

    def __init__(self) -> None:
        self.phases: dict[str, dict[str, float]] = {}

    def __call__(self, name: str, fn: Callable[[], Any]) -> Any:
        cpu, wall = time.process_time(), time.perf_counter()
        out = fn()
        entry = self.phases.setdefault(name, {"cpu_s": 0.0, "wall_s": 0.0, "calls": 0})
        entry["cpu_s"] += time.process_time() - cpu
        entry["wall_s"] += time.perf_counter() - wall
        entry["calls"] += 1
        return out


# ------------------------------------------------------------------------------------------------------ metrics
def pair_of(example_id: str) -> str:
    return example_id.removesuffix(SWAP)


def confidence_of(record: dict[str, Any], which: str) -> float | None:
    """The stated confidence, or the read-out probability of the verdict."""
    if which != "readout":
        return record.get("confidence")
    info = record.get("info") or {}
    return info.get("readout", record.get("confidence")) if info.get("mode") == "forced" else None


def judge_metrics(task: Any, examples: dict[str, Example], records: list[dict], which: str, args: Any) -> dict:
    """Accuracy, position consistency, ECE (both binnings), Brier and NLL of one judge's eval predictions, each
    with its 95 % bootstrap interval over pairs (a pair and its swapped copy are resampled together). The
    calibration target is the task's: correctness for judges, the human confidence for TL;DR."""
    boot = {"n_boot": args.boot, "seed": args.seed}
    correct = np.array([float(r["reward"]) for r in records])
    out: dict[str, Any] = {"prompts": len(records)}
    groups = [pair_of(r["example_id"]) for r in records]
    out["accuracy"] = Cal.with_interval(lambda i: float(correct[i].mean()), len(records), groups=groups, **boot)
    by_id = {r["example_id"]: r for r in records}
    flip = {"A": "B", "B": "A"}
    same = np.array(
        [
            float(
                r["extracted"] is not None
                and flip.get(by_id.get(r["example_id"] + SWAP, {}).get("extracted")) == r["extracted"]
            )
            for r in records
            if not r["example_id"].endswith(SWAP)
        ]
    )
    out["position_consistency"] = Cal.with_interval(lambda i: float(same[i].mean()), len(same), **boot)
    scored = [r for r in records if r.get("extracted") is not None and confidence_of(r, which) is not None]
    out["scored_fraction"] = len(scored) / max(len(records), 1)
    conf = np.array([min(max(float(confidence_of(r, which)), 0.0), 1.0) for r in scored])
    target = np.array([task.target_distribution(examples[r["example_id"]]).get(r["extracted"], 0.0) for r in scored])
    out["mean_confidence"] = float(conf.mean()) if scored else None
    groups = [pair_of(r["example_id"]) for r in scored]
    measures = {
        "ece": lambda c, t: Cal.ece(c, t),
        "ece_mass": lambda c, t: Cal.ece(c, t, binning="mass"),
        "brier": Cal.brier,
        "nll": Cal.nll,
    }
    for name, fn in measures.items():
        out[name] = (
            Cal.with_interval(lambda i, fn=fn: fn(conf[i], target[i]), len(scored), groups=groups, **boot)
            if scored
            else None
        )
    return out


# ------------------------------------------------------------------------------------------------------ phases
def evaluate_set(runtime: Runtime, examples: list[Example], out: Path, seed: int) -> list[dict]:
    proposal = runtime.eval_proposal()
    evaluate(
        task=runtime.task,
        examples=examples,
        drawer=runtime.drawer(proposal),
        proposal_name=proposal.name,
        num_samples=1,
        seed=seed,
        chunk_size=runtime.configs.proposal.generation_batch_size,
        world=runtime.world,
        out_dir=out,
    )
    return read_jsonl(out / "predictions.jsonl")


def by_length(runtime: Runtime, pairs: list[Example]) -> list[Example]:
    """Pairs sorted by prompt length, each followed by its swapped copy (same length): little padding per batch."""
    length = {e.id: len(render_prompt(runtime.tokenizer, runtime.task.prompt(e))) for e in pairs}
    return runtime.task.with_swaps(sorted(pairs, key=lambda e: (length[e.id], e.id)))


def estep(runtime: Runtime, examples: list[Example], seed: int, clock: Clock) -> tuple[list[list[Sample]], Any]:
    """One PPS E-step (forced verdicts sampled) over ``examples`` in chunks, as the EM loop draws."""
    drawer = runtime.drawer(runtime.proposal(), sample_answers=True)
    scheme = build_scheme(runtime.configs.estep)
    size = runtime.configs.proposal.generation_batch_size
    draws: list[list[Sample]] = []
    for c in range(0, len(examples), size):
        draws += clock("estep_hinted", lambda c=c: scheme.run(examples[c : c + size], drawer, seed=seed + c))
    return draws, drawer


def training_sets(runtime: Runtime, draws: list[list[Sample]], drawer: Any, args: Any, clock: Clock) -> dict:
    """``{(variant, target): rows}``: the kept samples of each variant with each target's confidence line."""
    targets = [t for t in CONFIDENCE_TARGETS if t in args.targets]
    completions: dict[str, dict[tuple[str, int], tuple[str, float]]] = {}
    for target in targets:  # empirical draws its plain samples once; later calls reuse them
        clock(
            f"target_{target}",
            lambda target=target: apply_confidence_targets(
                draws,
                drawer,
                target=target,
                samples=args.confidence_samples,
                prior=1.0,
                options=runtime.task.options,
                seed=args.seed,
                swap=runtime.task.swapped if runtime.task.pairwise else None,
            ),
        )
        completions[target] = {
            (s.example.id, s.attempt): (s.completion, s.target_confidence) for row in draws for s in row if s.kept
        }
    records = [
        {"example_id": s.example.id, "attempt": s.attempt, "gold": s.example.answer, "kept": True, "sample": s}
        for row in draws
        for s in row
        if s.kept and s.origin == HINTED
    ]
    chosen = {
        "plain": [r for r in records if not r["example_id"].endswith(SWAP)],
        "balanced": [r for r in balance_records(records, args.seed)[0] if r["kept"]],
    }
    sets = {}
    for variant in (v for v in VARIANTS if v in args.variants):
        for target in targets:
            rows = []
            for r in chosen[variant]:
                completion, value = completions[target][(r["example_id"], r["attempt"])]
                example = r["sample"].example
                rows.append(
                    {
                        "prompt": runtime.plain_messages(example),
                        "completion": completion,
                        "weight": 1.0,
                        "target": value,
                        "gold": example.answer,
                    }
                )
            sets[(variant, target)] = rows
    return sets


def run_dataset(task_name: str, args: Any, out: Path) -> dict[str, Any]:
    """The rows (one per judge and confidence kind) and the cost record of one dataset."""
    out.mkdir(parents=True, exist_ok=True)
    recipe_path = out / "recipe.yaml"
    recipe_path.write_text(yaml.safe_dump(recipe(task_name, out, args)))
    configs = parse_configs(["--config", str(recipe_path)])
    clock = Clock()
    runtime = clock("load", lambda: build_runtime(configs, World()))
    task = runtime.task
    train_split = task.load("train")
    train_pairs = train_split[: args.train_pairs]
    if args.selection:  # choose defaults on held-out train pairs: the eval split stays unseen
        eval_pairs = train_split[args.train_pairs : args.train_pairs + args.eval_pairs]
    else:
        eval_pairs = task.load("eval")[: args.eval_pairs]
    train_set, eval_set = by_length(runtime, train_pairs), by_length(runtime, eval_pairs)
    examples = {e.id: e for e in [*train_set, *eval_set]}
    rows: list[dict[str, Any]] = []

    def add(judge: str, which: str, records: list[dict], **extra: Any) -> None:
        rows.append(
            {
                "dataset": task_name,
                "judge": judge,
                "confidence": which,
                **extra,
                **judge_metrics(task, examples, records, which, args),
            }
        )

    base = clock("eval", lambda: evaluate_set(runtime, eval_set, out / "base", args.seed))
    add("base", "readout", base)
    add("base", "stated", base)
    calibration = clock("eval", lambda: evaluate_set(runtime, train_set, out / "calibration", args.seed))
    cal_preds = [to_prediction(r) for r in calibration]
    for r in cal_preds:  # the fit is on the read-out
        r.confidence = r.info.get("readout", r.confidence)
    temperature, used = fit_temperature(task, cal_preds, train_set)
    base_preds = [to_prediction(r) for r in base]
    for p in base_preds:
        p.confidence = p.info.get("readout", p.confidence)
    scaled = apply_temperature(task, temperature, base_preds, eval_set)
    scaled_records = [{**r, "confidence": p.confidence} for r, p in zip(base, scaled)]
    add(
        "base + temperature scaling",
        "scaled readout",
        scaled_records,
        temperature=temperature,
        calibration_prompts=used,
    )

    units = {"eval_prompts": len(base) + len(calibration), "estep_examples": 0, "mstep_sample_epochs": 0}
    # the balanced variant needs both orders; the plain one alone draws the pairs as given
    drawn = train_set if "balanced" in args.variants else [e for e in train_set if not e.id.endswith(SWAP)]
    units["estep_examples"] = len(drawn)
    draws, drawer = estep(runtime, drawn, args.seed, clock)
    for (variant, target), train_rows in training_sets(runtime, draws, drawer, args, clock).items():
        name = f"pps {target} / {variant}"
        if not train_rows:
            rows.append({"dataset": task_name, "judge": name, "confidence": "stated", "error": "no kept samples"})
            continue
        adapter = out / f"{variant}_{target}" / "adapter"
        runtime.backend.unload_adapter()
        info = clock(
            "mstep",
            lambda train_rows=train_rows, adapter=adapter: train_adapter(
                base_model=runtime.model,
                tokenizer=runtime.tokenizer,
                rows=[{k: r[k] for k in ("prompt", "completion", "weight")} for r in train_rows],
                args=configs.mstep,
                peft_config=get_peft_config(configs.model),
                adapter_dir=adapter,
                init_adapter=None,
                weighted=False,
                seed=args.seed,
            ),
        )
        runtime.backend.load_adapter(str(adapter))
        records = clock(
            "eval",
            lambda variant=variant, target=target: evaluate_set(
                runtime, eval_set, out / f"{variant}_{target}" / "eval", args.seed
            ),
        )
        runtime.backend.unload_adapter()
        units["eval_prompts"] += len(records)
        units["mstep_sample_epochs"] += len(train_rows) * args.epochs
        kept = {
            "kept": len(train_rows),
            "kept_gold_a": sum(r["gold"] == "A" for r in train_rows),
            "mean_target": float(np.mean([r["target"] for r in train_rows])) if train_rows else None,
            "mstep_tokens": info.get("mstep/train_tokens"),
        }
        add(name, "stated", records, **kept)
        add(name, "readout", records, **kept)
    runtime.close()
    cost = {"phases": clock.phases, "units": units}
    return {"rows": rows, "cost": cost}
