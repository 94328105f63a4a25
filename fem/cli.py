"""The ``fem`` command line: ``fem train | eval | sample | tasks | bench | report``.

Thin by design: heavy imports (torch, transformers, TRL) happen inside the command that needs them, so
``fem --help`` and ``fem train --help`` answer at once. User errors (``FemError``) print one line, no traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from fem import __version__
from fem.configs import FEM_DATACLASSES
from fem.errors import FemError

COMMANDS = {
    "train": "Run the EM loop: E-step (rejection | star | pps) -> filter -> LoRA M-step (TRL) -> eval, for `rounds` rounds.",
    "eval": "Evaluate a model (optionally with a LoRA adapter) with any proposal on any task; no trainer is built.",
    "sample": "Draw rationales with any proposal on a task's prompts and write one JSON line per trace.",
    "tasks": "List the tasks and their data (`fem tasks list`), or self-test their verifiers (`fem tasks check NAME|--all`).",
    "bench": "Run the benchmark scripts (`fem bench proposals|...`); prints ratios and writes JSON.",
    "report": "(Re)build report.md and plots/ from the files a run left (`fem report OUTPUT_DIR`).",
}

RECIPE_COMMANDS = ("train", "eval", "sample")


def _environment_defaults() -> None:
    """Settings that suit every run: one BLAS thread per process on CPU, no hub, quiet tokenizers."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault(
        "DS_ACCELERATOR", "cpu" if not os.path.exists("/dev/nvidia0") else os.environ.get("DS_ACCELERATOR", "cuda")
    )
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")


def _recipe_help(command: str) -> str:
    """Help for a recipe command, built from fem's own dataclasses without importing torch or TRL."""
    lines = [
        f"usage: fem {command} --config RECIPE.yaml [--KEY VALUE ...]",
        "",
        COMMANDS[command],
        "",
        "Every recipe key can be overridden on the command line as --KEY VALUE.",
    ]
    if command == "eval":
        lines += [
            "Shorthands: --limit N (= --eval_limit), --num_samples k, --seed S, --adapter PATH, --proposals a,b."
        ]
    if command == "train":
        lines += [
            "Add --dry_run to validate the recipe and its data files and print the plan without loading a model."
        ]
    if command == "sample":
        lines += [
            "Options: --split train|eval (default eval), --out FILE.jsonl (default OUTPUT_DIR/samples.jsonl); num_samples draws per prompt."
        ]
    for cls in FEM_DATACLASSES:
        lines += ["", (cls.__doc__ or cls.__name__).strip().lstrip("> ")]
        for f in dataclasses.fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else None
            lines.append(f"  --{f.name:<28} {f.metadata.get('help', '')} (default: {default})")
    lines += [
        "",
        "Model and LoRA: every field of trl.ModelConfig (model_name_or_path, dtype, lora_r, lora_alpha, lora_dropout,",
        "  lora_target_modules, trust_remote_code, ...). model_name_or_path: a local folder, a .gguf file or smollm2-135m-instruct.",
        "M-step: every field of trl.SFTConfig (output_dir, seed, learning_rate, num_train_epochs, per_device_train_batch_size,",
        "  gradient_accumulation_steps, max_length, bf16, report_to, ...).",
        f"`fem {command} --help-all` lists every key with its TRL help (slower: imports TRL).",
    ]
    return "\n".join(lines)


def _help_all() -> None:
    from trl import TrlParser

    from fem.recipe import all_dataclasses

    TrlParser(all_dataclasses()).print_help()


def _run_recipe_command(command: str, argv: list[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        print(_recipe_help(command))
        return 0
    if "--help-all" in argv:
        _help_all()
        return 0
    from fem.recipe import parse_configs

    if command == "sample":
        from fem.sampling import pop_option, sample_command

        split = pop_option(argv, "--split", "eval")
        out = pop_option(argv, "--out")
        return sample_command(parse_configs(argv), split=split, out=out)
    configs = parse_configs(argv)
    if command == "train":
        from fem.train import train

        return train(configs)
    from fem.eval.command import evaluate_command

    return evaluate_command(configs)


def _tasks(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="fem tasks", description=COMMANDS["tasks"])
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("list", help="each task with its data files and counts")
    check = sub.add_parser("check", help="gold answers score 1, wrong answers 0, canonical code passes the sandbox")
    check.add_argument("names", nargs="*", help="task names")
    check.add_argument("--all", action="store_true", help="check every task with shipped data")
    check.add_argument("--limit", type=int, default=None, help="check only the first N examples of each task")
    args = parser.parse_args(argv)
    if args.action == "list":
        from fem.tasks.check import list_tasks

        print(f"{'task':<26} {'train':>6} {'eval':>6}  data")
        for row in list_tasks():
            counts = [
                str(row[f"{split}_count"]) if row[f"{split}_count"] is not None else "-" for split in ("train", "eval")
            ]
            files = sorted({Path(f).name for split in ("train", "eval") for f in row[f"{split}_files"]})
            data = (
                ", ".join(files)
                if files
                else ("generated" if row["name"].startswith("toy_") else "your own file (train_file / eval_file)")
            )
            print(f"{row['name']:<26} {counts[0]:>6} {counts[1]:>6}  {data}")
        return 0
    from fem.tasks.check import run_checks

    if not args.names and not args.all:
        parser.error("name at least one task, or pass --all")
    return run_checks(["all"] if args.all else args.names, limit=args.limit)


def _bench(argv: list[str]) -> int:
    from fem.bench import main as bench_main

    return bench_main(argv)


def _report(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="fem report", description=COMMANDS["report"])
    parser.add_argument("output_dir")
    args = parser.parse_args(argv)
    from fem.eval.report import build_report

    path = build_report(args.output_dir)
    print(f"report: {path}")
    return 0


HANDLERS: dict[str, Callable[[list[str]], int]] = {"tasks": _tasks, "bench": _bench, "report": _report}


def _top_level_help() -> str:
    lines = [f"fem {__version__} - filtered-EM reasoning with LoRA, exact power sampling and TRL", "", "commands:"]
    lines += [f"  {name:<8} {text}" for name, text in COMMANDS.items()]
    lines += ["", "`fem COMMAND --help` for the keys of a command. Recipes live in recipes/; see README.md."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_top_level_help())
        sys.exit(0)
    if argv[0] == "--version":
        print(__version__)
        sys.exit(0)
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"fem: unknown command '{command}' -> use one of {', '.join(COMMANDS)} (fem --help)", file=sys.stderr)
        sys.exit(2)
    _environment_defaults()
    import warnings

    warnings.filterwarnings("ignore", message=".*gradient_checkpointing.*deprecated", category=FutureWarning)
    from fem.utils.logging import setup_logging

    setup_logging()
    try:
        code = _run_recipe_command(command, rest) if command in RECIPE_COMMANDS else HANDLERS[command](rest)
    except FemError as e:
        print(f"fem {command}: error: {e.one_line()}", file=sys.stderr)
        sys.exit(2)
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
            raise
        where = f"{e.filename}: " if e.filename else ""
        print(
            f"fem {command}: error: {where}{e.strerror} -> free space (or choose another output_dir) and run the same "
            "command again to resume; finished work is on disk",
            file=sys.stderr,
        )
        sys.exit(2)
    except KeyboardInterrupt:
        print(f"fem {command}: interrupted; finished work is on disk and the run resumes from it", file=sys.stderr)
        sys.exit(130)
    sys.exit(code)
