"""Strict data loading through ``datasets``: JSONL, JSON arrays, CSV (optionally .gz), with field and label mapping.

Every problem becomes a one-line ``DataError`` naming the file, the line (JSONL), record (JSON array) or row
(CSV), and the field, with a fix. Rows are read by ``datasets`` (``load_dataset("json"|"csv")``); when it cannot
read a file, the file is re-scanned line by line with the standard ``json`` module to say exactly where and why.
Nothing in a data file is ever evaluated or unpickled.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import logging
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets

from fem.errors import DataError

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
FORMATS = {".jsonl": "json", ".json": "json", ".csv": "csv"}
Record = dict[str, Any]  # canonical field -> value, plus "_where" (e.g. "line 3") and "_index" (0-based row)


def shipped_path(relative: str) -> Path:
    """Path of a data file shipped in ``fem/data``."""
    return DATA_DIR / relative


def _format_of(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    fmt = FORMATS.get(suffixes[-1] if suffixes else "")
    if fmt is None:
        raise DataError(
            f"unsupported file type '{''.join(path.suffixes) or '(none)'}'",
            file=str(path),
            fix="use .jsonl, .json (array or JSON lines), .csv, optionally gzip-compressed (.gz)",
        )
    return fmt


def _read_text(path: Path) -> str:
    if not path.exists():
        raise DataError(
            "file not found",
            file=str(path),
            fix="check the path (relative paths are resolved from the working directory)",
        )
    if not path.is_file():
        raise DataError("is not a file", file=str(path), fix="point to a data file, not a directory")
    raw = path.read_bytes()
    if path.suffix.lower() == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise DataError(
                f"is not a valid gzip file ({type(exc).__name__})",
                file=str(path),
                fix="re-compress it with gzip or remove the .gz suffix",
            ) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise DataError(
            f"line {line}: byte 0x{raw[exc.start]:02x} is not valid UTF-8",
            file=str(path),
            fix="re-save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)",
        ) from None
    if not text.strip():
        raise DataError("is empty", file=str(path), fix="add at least one example")
    return text.lstrip("\ufeff")


MAX_RECORD_MB = 16  # a JSONL line longer than this is refused: no model context holds such a prompt


def _check_record_size(path: Path, where: str, size: int) -> None:
    if size > MAX_RECORD_MB * 1024 * 1024:
        raise DataError(
            f"{where}: one record of {size / 2**20:.0f} MB (the limit is {MAX_RECORD_MB} MB)",
            file=str(path),
            fix="split or shorten that record; no model context holds it (is the file missing its newlines?)",
        )


def _is_json_array(text: str) -> bool:
    return text.lstrip().startswith("[")


def _scan_json(path: Path, text: str) -> tuple[list[dict[str, Any]], list[str]]:
    """Parse with the stdlib, returning rows and their locations, or raise a DataError saying where it fails."""
    if _is_json_array(text):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(
                f"line {exc.lineno}: not valid JSON ({exc.msg}, column {exc.colno})",
                file=str(path),
                fix="fix the JSON syntax (a truncated file is common when a download was cut)",
            ) from None
        rows, where = [], []
        for i, item in enumerate(data):
            if not isinstance(item, dict):
                raise DataError(
                    f"record {i + 1}: expected a JSON object, got {type(item).__name__}",
                    file=str(path),
                    fix="make every array item an object of fields",
                )
            rows.append(item)
            where.append(f"record {i + 1}")
        return rows, where
    rows, where = [], []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        _check_record_size(path, f"line {n}", len(line))
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(
                f"line {n}: not valid JSON ({exc.msg}, column {exc.colno})",
                file=str(path),
                fix="fix or remove that line (a truncated last line is common when a download was cut)",
            ) from None
        if not isinstance(item, dict):
            raise DataError(
                f"line {n}: expected a JSON object, got {type(item).__name__}",
                file=str(path),
                fix="write one JSON object per line",
            )
        rows.append(item)
        where.append(f"line {n}")
    return rows, where


def _scan_csv(path: Path, text: str) -> tuple[list[dict[str, Any]], list[str]]:
    reader = csv.DictReader(io.StringIO(text))
    rows, where = [], []
    try:
        for row in reader:
            if None in row:
                raise DataError(
                    f"line {reader.line_num}: more values than header columns",
                    file=str(path),
                    fix="quote values that contain commas",
                )
            rows.append({k: (v if v != "" else None) for k, v in row.items()})
            where.append(f"line {reader.line_num}")
    except csv.Error as exc:
        raise DataError(
            f"line {reader.line_num}: malformed CSV ({exc})", file=str(path), fix="check the quoting of that line"
        ) from None
    return rows, where


def read_rows(path: str | Path) -> tuple[list[dict[str, Any]], list[str]]:
    """All rows of a data file (as dicts) and, for each, where it is ("line 3", "record 3")."""
    path = Path(path)
    fmt = _format_of(path)
    text = _read_text(path)
    rows, where = (_scan_csv if fmt == "csv" else _scan_json)(path, text)  # validation and row locations
    if not rows:
        raise DataError("has no data rows", file=str(path), fix="add at least one example")
    try:
        datasets.disable_progress_bars()
        logging.getLogger("datasets").setLevel(logging.ERROR)
        dataset = datasets.load_dataset(fmt, data_files=str(path), split="train")
        loaded = dataset.to_list()
    except Exception:  # e.g. Arrow cannot unify mixed types: the stdlib rows were already validated
        return rows, where
    if len(loaded) != len(rows):  # layouts Arrow reads differently (e.g. one object per file): trust the scan
        return rows, where
    if fmt == "csv":  # keep datasets' typed values, but empty cells are missing values
        loaded = [{k: (None if v == "" else v) for k, v in r.items()} for r in loaded]
    return loaded, where


def lookup(row: Mapping[str, Any], column: str) -> Any:
    """Value of ``column`` in ``row``; dotted paths reach into nested objects and lists ("info.post", "summaries.0.text");
    a comma-separated list of columns gives the list of their non-empty values ("opt_a,opt_b,opt_c")."""
    if column in row:
        return row[column]
    if "," in column:
        values = [lookup(row, c.strip()) for c in column.split(",") if c.strip()]
        values = [v for v in values if v is not None and not (isinstance(v, str) and not v.strip())]
        return values or None
    value: Any = row
    for part in column.split("."):
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        elif isinstance(value, (list, tuple)) and part.lstrip("-").isdigit() and -len(value) <= int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


def label_key(value: Any) -> str:
    """Canonical string of a raw label value (1, 1.0 and "1" are the same key)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


@dataclass(frozen=True)
class Source:
    """A shipped data file and how its columns map to the task's canonical fields.

    ``split_key`` (a canonical field) makes the split deterministic: ``hash_split(value, eval_fraction)`` decides
    whether a row belongs to "train" or "eval", so rows sharing that value never land in both. ``select``
    keeps only rows it accepts (e.g. an official task-id range).
    """

    files: tuple[str, ...]
    fields: Mapping[str, str]
    labels: Mapping[str, str] | None = None
    split_key: str | None = None
    eval_fraction: float = 0.5
    select: Callable[[Record], bool] | None = None
    description: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)

    def paths(self) -> list[Path]:
        return [Path(f) if Path(f).is_absolute() else shipped_path(f) for f in self.files]


def hash_split(key: Any, eval_fraction: float, salt: str = "fem") -> str:
    """ "eval" or "train", decided by the sha256 of ``salt:key`` (stable across runs, machines and Python versions)."""
    digest = hashlib.sha256(f"{salt}:{key}".encode()).digest()
    return "eval" if int.from_bytes(digest[:8], "big") / 2**64 < eval_fraction else "train"


def load_records(
    path: str | Path,
    fields: Mapping[str, str],
    required: Sequence[str],
    *,
    label_field: str | None = None,
    labels: Mapping[Any, Any] | None = None,
    allowed_labels: Sequence[str] | None = None,
    allow_empty: Sequence[str] = (),
    text_fields: Sequence[str] = (),
) -> list[Record]:
    """Rows of ``path`` mapped to canonical fields, validated.

    ``fields`` maps canonical name -> column (dotted paths allowed). A required field that is missing, null or
    blank (unless listed in ``allow_empty``: then only a missing or null value is) is an error. If ``label_field`` is given its raw value is mapped through ``labels`` (raw value ->
    task label; keys compared as strings, so YAML ``1:`` matches the JSON value ``1``) and must end in
    ``allowed_labels`` (compared case-insensitively). A NaN or infinite number in any field is an error, and so is a
    JSON object, list or boolean in one of ``text_fields`` (it would otherwise be stringified into a prompt).
    """
    file = str(path)
    rows, where = read_rows(path)
    is_csv = _format_of(Path(path)) == "csv"
    label_map = {label_key(k): str(v) for k, v in (labels or {}).items()}
    allowed = {a.upper(): a for a in (allowed_labels or [])}
    records: list[Record] = []
    for index, (row, loc) in enumerate(zip(rows, where)):
        record: Record = {"_where": loc, "_index": index, "_file": file}
        for name, column in fields.items():
            value = lookup(row, column)
            if isinstance(value, str) and not value.strip() and name not in allow_empty:
                value = None
            if value is None and name in allow_empty and is_csv and column in row:  # an empty CSV cell
                value = ""
            check_value(value, name, column, loc, file, text=name in text_fields)
            if value is None and name in required:
                columns = shown_columns(row)
                raise DataError(
                    f"{loc}: missing value for '{name}' (expected in column '{column}'; {columns})",
                    file=file,
                    field=column,
                    fix=f"add '{column}' to every row, or map your column with task_fields: {{{name}: YOUR_COLUMN}}",
                )
            record[name] = value
        if label_field is not None and record.get(label_field) is not None:
            raw = record[label_field]
            key = label_key(raw)
            if label_map:
                if key not in label_map:
                    raise DataError(
                        f"{loc}: label value {raw!r} is not in the label mapping ({', '.join(sorted(label_map))})",
                        file=file,
                        field=fields.get(label_field, label_field),
                        fix="fix the value or add it to task_labels, e.g. task_labels: {1: A, 2: B}",
                    )
                key = label_map[key]
            if allowed and key.upper() not in allowed:
                raise DataError(
                    f"{loc}: label value {raw!r} is not one of {', '.join(allowed.values())}",
                    file=file,
                    field=fields.get(label_field, label_field),
                    fix="map your values with task_labels, e.g. task_labels: {1: A, 2: B}",
                )
            record[label_field] = allowed.get(key.upper(), key)
        records.append(record)
    return records


COLUMN_NAME = re.compile(r"^[\w .()/-]{1,64}$")
JSON_TYPES = {dict: "object", list: "array", tuple: "array", bool: "boolean"}


def shown_columns(row: Mapping[str, Any]) -> str:
    """The row's column names for an error line, or a note when they do not look like names: the "header" of a
    file that is not a data file (a CSV's first line) is its content, and an error line never echoes content."""
    names = [str(name) for name in row]
    if names and all(COLUMN_NAME.match(name) for name in names):
        return f"this row has: {', '.join(names[:12])}" + (", ..." if len(names) > 12 else "")
    return "its column names are not shown: they do not look like a header"


def check_value(value: Any, name: str, column: str, loc: str, file: str, *, text: bool) -> None:
    """A NaN or infinite number is never data; a text field takes text (or a number), not JSON structure."""
    if isinstance(value, float) and not math.isfinite(value):
        raise DataError(
            f"{loc}: '{name}' holds {value}, which is not a value",
            file=file,
            field=column,
            fix="replace it with the real value or remove the row",
        )
    if text and (isinstance(value, bool) or value is not None and not isinstance(value, (str, int, float))):
        raise DataError(
            f"{loc}: '{name}' must be text, not a JSON {JSON_TYPES.get(type(value), type(value).__name__)}",
            file=file,
            field=column,
            fix=f"write '{column}' as a string in every row (or map another column with task_fields)",
        )


def record_error(record: Record, field_name: str, message: str, fix: str) -> DataError:
    """A DataError located at ``record``'s file and line."""
    return DataError(f"{record.get('_where', '?')}: {message}", file=record.get("_file"), field=field_name, fix=fix)


def check_unique_ids(ids: Sequence[str], file: str) -> None:
    """Example ids are used for resume and de-duplication: they must be unique."""
    seen: set[str] = set()
    for i in ids:
        if i in seen:
            raise DataError(
                f"example id '{i}' appears twice",
                file=file,
                field="id",
                fix="make the id column unique, or remove it from task_fields (ids then come from row numbers)",
            )
        seen.add(i)
