"""Crash-safe file IO: atomic JSON/YAML writes, fsynced JSONL appends, readers that survive a torn last line."""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from fem.utils.faults import crash_point


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old file or the new one, never a partial one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        crash_point(f"write.{path.name}")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


_TEMP_NAME = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")  # what atomic_write_text's mkstemp creates


def is_temp_file(path: str | Path) -> bool:
    """Is ``path`` a temp file of ``atomic_write_text`` (left behind only by a crash mid-write)?"""
    return bool(_TEMP_NAME.match(Path(path).name))


def remove_stale_temp_files(root: str | Path) -> int:
    """Remove the temp files that a process killed inside ``atomic_write_text`` left under ``root`` (the real
    file is untouched: the old version or the new one). Call it only while no writer is running. Returns the count."""
    removed = 0
    for path in Path(root).rglob(".*.tmp"):
        if path.is_file() and _TEMP_NAME.match(path.name):
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def json_line(record: dict[str, Any]) -> str:
    """One JSONL line: keys sorted, non-JSON values (paths, enums) as strings."""
    return json.dumps(record, sort_keys=True, default=str) + "\n"


def write_jsonl(path: str | Path, records: Iterable[dict[str, Any]]) -> None:
    """Replace ``path`` atomically with one line per record."""
    atomic_write_text(path, "".join(json_line(r) for r in records))


def read_json(path: str | Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


class JsonlWriter:
    """Appends one JSON object per line and flushes+fsyncs each record, so a crash loses at most a torn line."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        self.write_many([record])

    def write_many(self, records: Iterable[dict[str, Any]]) -> None:
        lines = "".join(json_line(r) for r in records)
        if lines:
            self._file.write(lines)
            self._file.flush()
            os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_jsonl(path: str | Path, *, repair: bool = False) -> list[dict[str, Any]]:
    """Read a JSONL file written by ``JsonlWriter``. A torn last line (a crash mid-write) is dropped; with
    ``repair=True`` the file is also truncated to its last complete line so appends continue cleanly."""
    path = Path(path)
    if not path.exists():
        return []
    data = path.read_bytes()
    records: list[dict[str, Any]] = []
    good_end = 0
    for line in data.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            break
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break
        good_end += len(line)
    if repair and good_end != len(data):
        with open(path, "r+b") as f:
            f.truncate(good_end)
            f.flush()
            os.fsync(f.fileno())
    return records
