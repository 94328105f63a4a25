"""Crash-safe file IO: atomic JSON/YAML writes, fsynced JSONL appends, and JSONL readers that drop only a torn last
line (a crash mid-append) and refuse any other damaged line."""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fem.errors import FemError
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
        self.write_lines([json_line(r) for r in records])

    def write_lines(self, lines: Iterable[str]) -> None:
        """Append lines made by ``json_line`` in one write, then fsync."""
        text = "".join(lines)
        if text:
            self._file.write(text)
            self._file.flush()
            os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class JsonlScan:
    """What a JSONL file holds: its records (with each one's raw line and 1-based line number), the numbers of the
    damaged lines (not JSON objects, or not terminated but followed by more data), and whether the last line is
    torn (an unterminated last line: a crash in the middle of an append)."""

    records: list[dict[str, Any]] = field(default_factory=list)
    raw: list[bytes] = field(default_factory=list)
    line_numbers: list[int] = field(default_factory=list)
    damaged: list[int] = field(default_factory=list)
    torn: bool = False
    good_end: int = 0  # bytes up to the end of the last terminated line


def scan_jsonl(path: str | Path) -> JsonlScan:
    """Read every line of a JSONL file without stopping at a damaged one (a missing file holds nothing)."""
    path = Path(path)
    scan = JsonlScan()
    if not path.exists():
        return scan
    *lines, tail = path.read_bytes().split(b"\n")  # only "\n" ends a line ("\r" is a damaged byte, not an end)
    scan.torn = bool(tail)  # the last line lacks its newline
    for number, body in enumerate(lines, start=1):
        line = body + b"\n"
        scan.good_end += len(line)
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            record = None
        if isinstance(record, dict):
            scan.records.append(record)
            scan.raw.append(line)
            scan.line_numbers.append(number)
        else:  # fem's writers never write a blank line or a non-object either
            scan.damaged.append(number)
    return scan


class DamagedFileError(FemError):
    """A JSONL file has a damaged line that is not a torn last line: its records cannot be trusted to be complete."""


def read_jsonl(path: str | Path, *, repair: bool = False) -> list[dict[str, Any]]:
    """The records of a JSONL file written by ``JsonlWriter``. Only a torn last line (a crash mid-append) is
    dropped, and with ``repair=True`` cut off so that appends continue cleanly; any other damaged line raises
    ``DamagedFileError`` naming the file and the line (never a silent loss of the records after it)."""
    scan = scan_jsonl(path)
    if scan.damaged:
        more = f" (and {len(scan.damaged) - 1} more)" if len(scan.damaged) > 1 else ""
        raise DamagedFileError(
            f"line {scan.damaged[0]}{more} is not a JSON object: the file was damaged after it was written",
            file=str(path),
            fix="restore the file from a copy, or remove the damaged line if losing that record is acceptable",
        )
    if repair and scan.torn:
        with open(path, "r+b") as f:
            f.truncate(scan.good_end)
            f.flush()
            os.fsync(f.fileno())
    return scan.records
