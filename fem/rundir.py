"""What fem owns in an output dir, and the checks on the dir itself (before anything is written to it).

A run dir holds fem's entries (``is_owned``): ``state.json``, ``config.yaml``, ``metrics.jsonl``, ``report.md``,
``samples.jsonl`` (``fem sample``'s default), the dirs ``baseline/``, ``eval/``, ``plots/`` and ``round_NNN/``
(in which fem writes the samples, progress and metrics files and the ``adapter/``, ``trainer/`` and ``eval/`` dirs),
plus the lock file ``.fem.lock``. ``clear_run`` (``--overwrite_output_dir_contents true``) removes exactly these and
``remove_stale_temp_files`` only the temp files of fem's own atomic writes among them: a file fem did not write is
never deleted, wherever it is.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import yaml

from fem.errors import ConfigError
from fem.utils.lock import LOCK_FILE

STATE_FILE = "state.json"
CONFIG_FILE = "config.yaml"
TOP_FILES = frozenset({STATE_FILE, CONFIG_FILE, "metrics.jsonl", "report.md", "samples.jsonl"})
TOP_DIRS = frozenset({"baseline", "eval", "plots"})  # fem writes every file in them
ROUND_DIR = re.compile(r"^round_\d{3,}$")
ROUND_FILES = re.compile(r"^(samples|estep_progress)(\.rank\d+)?\.jsonl$|^metrics\.json$")
ROUND_DIRS = frozenset({"adapter", "adapter.tmp", "trainer", "eval"})  # fem writes every file in them
TEMP_FILE = re.compile(r"^\.(?P<name>.+)\.[A-Za-z0-9_]{8}\.tmp$")  # what fem.utils.io.atomic_write_text creates
PSEUDO_FILESYSTEMS = (Path("/proc"), Path("/sys"), Path("/dev"))


def _temp_of(path: Path, owned_name: Callable[[str], bool]) -> bool:
    """Is ``path`` the temp file of an atomic write of a file that ``owned_name`` says fem writes there?"""
    match = TEMP_FILE.match(path.name)
    return bool(match) and path.is_file() and owned_name(match["name"])


def owned_entries(output_dir: Path) -> Iterator[Path]:
    """Every entry of ``output_dir`` that fem wrote (a whole dir when fem writes everything in it), deepest first
    within a round dir, and the round dirs themselves last (removed only if nothing else is left in them)."""
    if not output_dir.is_dir():
        return
    for path in sorted(output_dir.iterdir()):
        if path.name in TOP_FILES and path.is_file() or path.name in TOP_DIRS and path.is_dir():
            yield path
        elif _temp_of(path, TOP_FILES.__contains__):
            yield path
        elif ROUND_DIR.match(path.name) and path.is_dir():
            for inner in sorted(path.iterdir()):
                if inner.name in ROUND_DIRS and inner.is_dir() or ROUND_FILES.match(inner.name) and inner.is_file():
                    yield inner
                elif _temp_of(inner, lambda name: bool(ROUND_FILES.match(name))):
                    yield inner
            yield path


def run_entries(output_dir: Path) -> list[Path]:
    """The entries of ``output_dir`` itself that a fem run wrote (temp files of interrupted writes not counted)."""
    return [p for p in owned_entries(output_dir) if p.parent == output_dir and not TEMP_FILE.match(p.name)]


def is_fem_config(path: Path) -> bool:
    """Is ``path`` a ``config.yaml`` that fem wrote (its run record)?"""
    try:
        record = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError):
        return False
    return isinstance(record, dict) and str(record.get("command", "")).startswith("fem ") and "config" in record


def holds_fem_run(output_dir: Path) -> bool:
    """Does ``output_dir`` hold a fem run (its ``state.json``, or the ``config.yaml`` a run writes first)?"""
    return (output_dir / STATE_FILE).is_file() or is_fem_config(output_dir / CONFIG_FILE)


def foreign_entries(output_dir: Path) -> list[str]:
    """The names of the entries in ``output_dir`` that are not fem's (sorted)."""
    if not output_dir.is_dir():
        return []
    owned = {p for p in owned_entries(output_dir) if p.parent == output_dir}
    return sorted(p.name for p in output_dir.iterdir() if p not in owned and p.name != LOCK_FILE)


def clear_run(output_dir: Path) -> list[str]:
    """Remove the run in ``output_dir``: every entry fem owns (``state.json`` last), nothing else. A round dir that
    still holds a file fem did not write stays, with that file. Returns the removed paths, relative."""
    removed: list[str] = []
    entries = sorted(owned_entries(output_dir), key=lambda p: p.name == STATE_FILE)
    for path in entries:
        if path.is_dir() and ROUND_DIR.match(path.name):
            if not any(path.iterdir()):
                path.rmdir()
                removed.append(path.name)
            continue
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
        removed.append(str(path.relative_to(output_dir)))
    return removed


def remove_stale_temp_files(output_dir: Path) -> int:
    """Remove the temp files that a process killed inside an atomic write left among fem's files (the real file is
    untouched: the old version or the new one). Call it only while holding the run lock. Returns the count."""
    removed = 0
    for entry in list(owned_entries(output_dir)):
        if entry.is_dir() and not ROUND_DIR.match(entry.name):  # a dir fem writes every file of
            temps = [p for p in entry.rglob(".*.tmp") if TEMP_FILE.match(p.name) and p.is_file()]
        else:
            temps = [entry] if entry.is_file() and TEMP_FILE.match(entry.name) else []
        for path in temps:
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def check_dir_path(output_dir: Path, field_name: str = "output_dir") -> None:
    """The output dir can be a fem run dir: a directory (or a path that can become one) outside the pseudo
    filesystems, under a directory that is writable. Writes nothing."""
    resolved = output_dir.expanduser().resolve()
    if any(resolved == p or p in resolved.parents for p in PSEUDO_FILESYSTEMS):
        raise ConfigError(
            f"{output_dir} is inside {next(p for p in PSEUDO_FILESYSTEMS if p in (resolved, *resolved.parents))}, "
            "a kernel pseudo filesystem",
            field=field_name,
            fix="choose an output_dir on a real disk",
        )
    if resolved.exists() and not resolved.is_dir():
        raise ConfigError(
            f"{output_dir} is not a directory", field=field_name, fix="choose a new output_dir (a directory path)"
        )
    ancestor = next(p for p in (resolved, *resolved.parents) if p.exists())
    if not ancestor.is_dir():
        raise ConfigError(
            f"{output_dir} lies under {ancestor}, which is a file", field=field_name, fix="choose a directory path"
        )
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ConfigError(f"{ancestor} is not writable", field=field_name, fix="choose an output_dir you can write to")
