"""``fem tasks check`` and ``fem tasks list``: every example's gold answer scores 1, a wrong one 0."""

from __future__ import annotations

import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TextIO

from fem.configs import TaskConfig
from fem.errors import FemError
from fem.sandbox import describe

from . import TASKS, build_task
from .base import Example, Task
from .code import CodeTask

RATIONALE = "Let me work through this carefully."


def _score(task: Task, example: Example, answer_text: str) -> float:
    """Reward of a completion that writes ``answer_text`` after the task's cue (with a confidence line if the task
    states one)."""
    completion = RATIONALE + "\n\n" + task.answer_cue + answer_text + task.confidence_text(0.9)
    extracted = task.extract(completion)
    return float(task.reward(extracted, example)) if extracted is not None else 0.0


def check_task(name: str, limit: int | None = None, workers: int = 2) -> dict[str, Any]:
    """Check one task over its shipped splits: returns counts of examples, gold misses and wrong-answer hits."""
    start = time.monotonic()
    row: dict[str, Any] = {"task": name, "examples": 0, "gold_fail": 0, "wrong_pass": 0, "error": "", "failed_ids": []}
    try:
        task = build_task(TaskConfig(task=name))
        examples = []
        for split in ("train", "eval"):
            if not task.files(split) and not name.startswith("toy_"):
                continue
            examples += task.load(split)
        if limit is not None:
            examples = examples[:limit]
        examples = list({e.id: e for e in examples}.values())

        def one(ex):
            gold = _score(task, ex, task.answer_text(ex))
            wrong_text = task.wrong_answer_text(ex)
            wrong = _score(task, ex, wrong_text) if wrong_text is not None else 0.0
            return ex.id, gold, wrong

        if isinstance(task, CodeTask):
            row["sandbox"] = describe(task.sandbox)
            with ThreadPoolExecutor(max_workers=workers) as pool:
                results = list(pool.map(one, examples))
        else:
            results = [one(ex) for ex in examples]
        row["examples"] = len(results)
        for eid, gold, wrong in results:
            if gold != 1.0:
                row["gold_fail"] += 1
                row["failed_ids"].append(eid)
            if wrong != 0.0:
                row["wrong_pass"] += 1
                row["failed_ids"].append(eid)
    except FemError as exc:
        row["error"] = exc.one_line()
    row["seconds"] = round(time.monotonic() - start, 1)
    return row


def run_checks(names: list[str], limit: int | None = None, out: TextIO | None = None) -> int:
    """Check the named tasks (``["all"]`` or empty = every task with shipped data); print a table; 0 if all pass."""
    out = out or sys.stdout
    if not names or names == ["all"] or "--all" in names:
        names = [t for t in TASKS if t != "gpqa"]
    rows = [check_task(n, limit) for n in names]
    out.write(f"{'task':<26}{'examples':>9}{'gold≠1':>8}{'wrong≠0':>9}{'secs':>7}  status\n")
    bad = 0
    for r in rows:
        ok = not r["error"] and r["gold_fail"] == 0 and r["wrong_pass"] == 0 and r["examples"] > 0
        bad += not ok
        status = "ok" if ok else (r["error"] or f"FAIL {', '.join(r['failed_ids'][:5])}")
        out.write(
            f"{r['task']:<26}{r['examples']:>9}{r['gold_fail']:>8}{r['wrong_pass']:>9}{r['seconds']:>7}  {status}\n"
        )
    for line in dict.fromkeys(r["sandbox"] for r in rows if r.get("sandbox")):
        out.write(f"code sandbox: {line}\n")
    out.write(f"{len(rows) - bad}/{len(rows)} tasks pass\n")
    return 1 if bad else 0


def list_tasks() -> list[dict[str, Any]]:
    """One row per registered task: name, description, train/eval files and example counts (None = not shipped)."""
    rows = []
    for name in TASKS:
        task = build_task(TaskConfig(task=name))
        row: dict[str, Any] = {"name": name, "description": (type(task).__doc__ or "").strip().split("\n")[0]}
        for split in ("train", "eval"):
            files = task.files(split)
            row[f"{split}_files"] = files
            if files or name.startswith("toy_"):  # synthetic tasks generate their data
                try:
                    row[f"{split}_count"] = len(task.load(split))
                except FemError as exc:
                    row[f"{split}_count"] = None
                    row[f"{split}_error"] = exc.one_line()
            else:
                row[f"{split}_count"] = None
        rows.append(row)
    return rows
