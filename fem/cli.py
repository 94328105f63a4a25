"""The ``fem`` command line: ``fem train | eval | sample | tasks | bench | report | export``, dispatched to
``fem.commands``.

Dispatch only, and the one module of fem that imports lazily: a command module (which pulls torch, transformers,
TRL) is imported when that command runs, so ``fem --help`` and ``fem train --help`` answer at once. User errors
(``FemError``) and a full disk print one line, no traceback.
"""

from __future__ import annotations

import dataclasses
import errno
import importlib
import os
import sys
from collections.abc import Sequence

from fem import __version__
from fem.commands import RECIPE_COMMANDS, SUMMARIES
from fem.configs import FEM_DATACLASSES
from fem.errors import FemError

RECIPE_OPTIONS = {
    "eval": "Shorthands: --limit N (= --eval_limit), --num_samples k, --seed S, --adapter PATH, --proposals a,b.",
    "train": "Add --dry_run to validate the recipe and its data files and print the plan without loading a model.",
    "sample": "Options: --split train|eval (default eval), --out FILE.jsonl (default OUTPUT_DIR/samples.jsonl; an existing "
    "file only with --overwrite); num_samples draws per prompt.",
}


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
        SUMMARIES[command],
        "",
        "Every recipe key can be overridden on the command line as --KEY VALUE.",
        RECIPE_OPTIONS[command],
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


def _top_level_help() -> str:
    lines = [f"fem {__version__} - filtered-EM reasoning with LoRA, exact power sampling and TRL", "", "commands:"]
    lines += [f"  {name:<8} {text}" for name, text in SUMMARIES.items()]
    lines += ["", "`fem COMMAND --help` for the keys of a command. Recipes live in recipes/; see README.md."]
    return "\n".join(lines)


def _run(command: str, argv: list[str]) -> int:
    if command in RECIPE_COMMANDS and any(a in ("-h", "--help") for a in argv):
        print(_recipe_help(command))
        return 0
    if command in RECIPE_COMMANDS and "--help-all" in argv:
        from fem.recipe import recipe_parser

        recipe_parser().print_help()
        return 0
    import warnings

    from fem.utils.logging import setup_logging

    warnings.filterwarnings("ignore", message=".*gradient_checkpointing.*deprecated", category=FutureWarning)
    setup_logging()
    return importlib.import_module(f"fem.commands.{command}").main(argv)


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_top_level_help())
        sys.exit(0)
    if argv[0] == "--version":
        print(__version__)
        sys.exit(0)
    command, rest = argv[0], argv[1:]
    if command not in SUMMARIES:
        print(f"fem: unknown command '{command}' -> use one of {', '.join(SUMMARIES)} (fem --help)", file=sys.stderr)
        sys.exit(2)
    _environment_defaults()
    try:
        code = _run(command, rest)
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
