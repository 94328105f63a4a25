"""Preference data as the field stores it: TRL's preference format, read natively into pairwise-task records.

Four shapes (https://huggingface.co/docs/trl/dataset_formats, "preference"):

=============  ==========================================  ===============================================
               standard (plain strings)                    conversational (lists of ``{role, content}``)
=============  ==========================================  ===============================================
explicit       ``prompt``, ``chosen``, ``rejected``          ``prompt`` = the turns so far; ``chosen`` /
                                                           ``rejected`` = the assistant turn(s)
implicit       ``chosen`` / ``rejected`` = prompt + answer   the whole conversations; the prompt is their
               (their common prefix is the prompt)         common leading turns
=============  ==========================================  ===============================================

The implicit prompt is extracted as TRL's ``extract_prompt`` does (the common prefix: of characters for strings,
of whole turns for conversations), with one change for strings: the cut moves back to the last whitespace, so a
response never starts mid-word ("Sure, here" / "Sure thing" keep "Sure" in both responses).

Each row becomes a record of the pairwise task: the context (the instruction, or the conversation so far,
rendered as ``User: ...`` / ``Assistant: ...`` paragraphs when it has more than one turn), the two responses and
the gold verdict. A seeded coin per example (sha256 of ``seed:id``) puts the chosen response in position A or B,
so gold verdicts are balanced in expectation and the same on every machine. A malformed row (chosen equal to
rejected, an empty response, a conversation without an assistant turn, mixed shapes) is a one-line ``DataError``
naming the file and the line.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fem.errors import DataError

from .loading import Record, read_rows

FORMATS = ("auto", "fields", "preference")
ROLES = ("system", "user", "assistant", "tool")


@dataclass(frozen=True)
class Shape:
    """How a preference file stores its pairs."""

    conversational: bool
    explicit: bool

    def describe(self) -> str:
        kind = "conversational" if self.conversational else "standard"
        prompt = "explicit prompt" if self.explicit else "implicit prompt (common prefix of chosen/rejected)"
        return f"preference ({kind}, {prompt})"


def is_preference_row(row: Mapping[str, Any]) -> bool:
    """Whether a row looks like TRL's preference format (it has ``chosen`` and ``rejected``)."""
    return "chosen" in row and "rejected" in row


def coin(seed: int, key: str) -> bool:
    """A reproducible fair coin per example: True puts the chosen response in position A."""
    return hashlib.sha256(f"{seed}:{key}".encode()).digest()[0] % 2 == 0


class _RowError(Exception):
    """A problem with one row (turned into a DataError with the file and line)."""

    def __init__(self, message: str, fix: str):
        super().__init__(message)
        self.fix = fix


def _is_conversation(value: Any) -> bool:
    return isinstance(value, list)


def _content(message: Any, column: str) -> tuple[str, str]:
    """``(role, text)`` of one message; text parts of a multimodal content list are joined."""
    if not isinstance(message, Mapping) or not isinstance(message.get("role"), str):
        raise _RowError(
            f"'{column}' holds a turn that is not a {{role, content}} object", "write each turn as {role, content}"
        )
    role, content = message["role"], message.get("content")
    if role not in ROLES:
        raise _RowError(f"'{column}' has a turn with role '{role}'", f"use one of {', '.join(ROLES)}")
    if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]
        parts = [p.get("text") for p in content if isinstance(p, Mapping) and p.get("type") == "text"]
        if len(parts) != len(content) or not all(isinstance(p, str) for p in parts):
            raise _RowError(f"'{column}' has a turn with non-text content", "keep only text parts in the content")
        content = "\n".join(parts)
    if not isinstance(content, str):
        raise _RowError(f"'{column}' has a {role} turn without text content", "give every turn a string content")
    return role, content


def render_turns(turns: Sequence[tuple[str, str]]) -> str:
    """Readable text of a conversation: a single user turn is its text; otherwise ``Role: text`` paragraphs."""
    if len(turns) == 1 and turns[0][0] == "user":
        return turns[0][1].strip()
    return "\n\n".join(f"{role.capitalize()}: {text.strip()}" for role, text in turns)


def _response(turns: list[tuple[str, str]], column: str) -> str:
    if not turns:
        raise _RowError(f"'{column}' is an empty response", "give both responses some text")
    if not any(role == "assistant" for role, _ in turns):
        raise _RowError(f"'{column}' has no assistant turn", f"end '{column}' with an assistant message")
    text = turns[0][1].strip() if len(turns) == 1 else render_turns(turns)
    if not text or all(not t.strip() for role, t in turns if role == "assistant"):
        raise _RowError(f"'{column}' is an empty response", "give both responses some text")
    return text


def _split_text(chosen: str, rejected: str) -> tuple[str, str, str]:
    """TRL's implicit-prompt split of two strings, backed off to a whitespace so no response starts mid-word."""
    n = 0
    for x, y in zip(chosen, rejected):
        if x != y:
            break
        n += 1
    cut = n
    if n < min(len(chosen), len(rejected)):  # they differ mid-text (not one a prefix of the other): cut at a space
        while cut > 0 and not chosen[cut - 1].isspace():
            cut -= 1
    return chosen[:cut].strip(), chosen[cut:].strip(), rejected[cut:].strip()


def _split_turns(chosen: list, rejected: list) -> tuple[list, list, list]:
    n = 0
    for x, y in zip(chosen, rejected):
        if x != y:
            break
        n += 1
    return chosen[:n], chosen[n:], rejected[n:]


def convert_row(row: Mapping[str, Any], shape: Shape) -> tuple[str, str, str]:
    """``(context, chosen, rejected)`` texts of one row, or ``_RowError``."""
    chosen, rejected = row.get("chosen"), row.get("rejected")
    prompt = row.get("prompt") if shape.explicit else None
    for column, value in (("chosen", chosen), ("rejected", rejected)) + (
        (("prompt", prompt),) if shape.explicit else ()
    ):
        if value is None:
            raise _RowError(f"'{column}' is missing", f"give every row a '{column}' value (TRL preference format)")
        if _is_conversation(value) != shape.conversational:
            kind = "a list of messages" if shape.conversational else "a string"
            raise _RowError(
                f"'{column}' is not {kind} like the file's first row",
                "use one shape in the whole file: plain strings, or conversational message lists",
            )
    if not shape.conversational:
        if not shape.explicit:
            prompt, chosen, rejected = _split_text(chosen, rejected)
        context, first, second = prompt.strip(), chosen.strip(), rejected.strip()
        for column, text in (("chosen", first), ("rejected", second)):
            if not text:
                raise _RowError(f"'{column}' is an empty response", "give both responses some text")
    else:
        chosen_turns = [_content(m, "chosen") for m in chosen]
        rejected_turns = [_content(m, "rejected") for m in rejected]
        if shape.explicit:
            context_turns = [_content(m, "prompt") for m in prompt]
        else:
            context_turns, chosen_turns, rejected_turns = _split_turns(chosen_turns, rejected_turns)
        context = render_turns(context_turns)
        first, second = _response(chosen_turns, "chosen"), _response(rejected_turns, "rejected")
    if not context:
        raise _RowError(
            "has no prompt (empty, or chosen and rejected share no leading text)",
            "add a 'prompt' column, or write chosen/rejected as prompt + response",
        )
    if first == second:
        raise _RowError("chosen and rejected are the same response", "remove the row (it prefers nothing)")
    return context, first, second


def detect_shape(row: Mapping[str, Any]) -> Shape:
    return Shape(conversational=_is_conversation(row.get("chosen")), explicit=row.get("prompt") is not None)


def preference_records(
    rows: Sequence[Mapping[str, Any]],
    where: Sequence[str],
    file: str,
    *,
    context_field: str,
    first: str,
    second: str,
    seed: int,
) -> tuple[list[Record], Shape]:
    """Records (``context_field``, ``first``, ``second``, ``label`` = "A"/"B", ``id``) of a preference file's rows
    and the file's shape (that of its first row; every row must share it). The example id is the row's ``id``
    when present, else ``<file stem>-<row index>``; the coin that places the chosen response is keyed by it."""
    if not rows or not is_preference_row(rows[0]):
        columns = ", ".join(list(rows[0])[:12]) if rows else "none"
        raise DataError(
            f"{where[0] if where else 'line 1'}: not in TRL's preference format (columns: {columns})",
            file=file,
            field="data_format",
            fix="give every row 'chosen' and 'rejected' (and optionally 'prompt'), or set data_format: fields "
            "and map your columns with task_fields",
        )
    shape = detect_shape(rows[0])
    stem = Path(file).name.split(".")[0]
    records: list[Record] = []
    for index, (row, loc) in enumerate(zip(rows, where)):
        try:
            if not is_preference_row(row):
                raise _RowError("has no 'chosen' and 'rejected'", "give every row both (TRL preference format)")
            context, chosen, rejected = convert_row(row, shape)
        except _RowError as exc:
            raise DataError(f"{loc}: {exc}", file=file, field="chosen/rejected", fix=exc.fix) from None
        own = row.get("id")
        example_id = str(own) if own is not None else f"{stem}-{index:05d}"
        chosen_first = coin(seed, example_id)
        records.append(
            {
                "_where": loc,
                "_index": index,
                "_file": file,
                "id": example_id,
                context_field: context,
                first: chosen if chosen_first else rejected,
                second: rejected if chosen_first else chosen,
                "label": "A" if chosen_first else "B",
            }
        )
    return records, shape


def read_preference_file(path: str | Path, **kwargs: Any) -> tuple[list[Record], Shape]:
    """``preference_records`` of the rows of ``path`` (JSONL / JSON / CSV, optionally gzip)."""
    rows, where = read_rows(path)
    return preference_records(rows, where, str(path), **kwargs)
