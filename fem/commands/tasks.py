"""``fem tasks list`` / ``fem tasks check NAME | --all``: the tasks and their data, and a self-test of their
verifiers on real data."""

from __future__ import annotations

import argparse
from pathlib import Path

from fem.commands import SUMMARIES
from fem.errors import ConfigError
from fem.tasks.check import list_tasks, run_checks


def print_task_list() -> None:
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


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="fem tasks", description=SUMMARIES["tasks"])
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("list", help="each task with its data files and counts")
    check = sub.add_parser("check", help="gold answers score 1, wrong answers 0, canonical code passes the sandbox")
    check.add_argument("names", nargs="*", help="task names")
    check.add_argument("--all", action="store_true", help="check every task with shipped data")
    check.add_argument("--limit", type=int, default=None, help="check only the first N examples of each task")
    args = parser.parse_args(argv)
    if args.action == "list":
        print_task_list()
        return 0
    if not args.names and not args.all:
        parser.error("name at least one task, or pass --all")
    if args.limit is not None and args.limit < 1:
        raise ConfigError(
            f"must be a positive count (got {args.limit})", field="limit", fix="drop --limit to check every example"
        )
    return run_checks(["all"] if args.all else args.names, limit=args.limit)
