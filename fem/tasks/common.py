"""``DataTask``: the shared machinery of the shipped tasks (sources, splits, field mapping, templates, limits)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from fem.configs import TaskConfig
from fem.errors import ConfigError, DataError

from .base import Example, Messages, Task
from .loading import Record, Source, check_unique_ids, hash_split, load_records, read_rows
from .preference import is_preference_row, preference_records
from .prompting import Template, load_template, shipped_template, with_system

SPLITS = ("train", "eval")
SPLIT_ALIASES = {
    "train": "train",
    "eval": "eval",
    "test": "eval",
    "validation": "eval",
    "valid": "eval",
    "dev": "eval",
}


def normalize_split(split: str) -> str:
    """ "train" or "eval" ("test", "validation", "valid", "dev" are aliases of "eval")."""
    try:
        return SPLIT_ALIASES[split.lower()]
    except KeyError:
        raise DataError(f"unknown split '{split}'", field="split", fix="use train or eval") from None


class DataTask(Task):
    """A task read from data files. Subclasses set the class attributes and implement ``make_example``,
    ``extract``, ``reward``, ``answer_text``, ``metrics`` and, for closed answers, ``options``."""

    sources: ClassVar[Mapping[str, Source]] = {}
    required_fields: ClassVar[tuple[str, ...]] = ()
    allow_empty: ClassVar[tuple[str, ...]] = ()  # required fields that may hold an empty string
    text_fields: ClassVar[tuple[str, ...]] = ()  # fields that must hold text (a prompt, a response), not JSON data
    label_field: ClassVar[str | None] = None
    allowed_labels: ClassVar[tuple[str, ...]] = ()
    plain_template: ClassVar[str] = ""
    hinted_template: ClassVar[str] = ""
    # (context, first candidate, second candidate) fields filled from TRL preference data; None: not a pairwise task
    preference_fields: ClassVar[tuple[str, str, str] | None] = None

    def __init__(self, config: TaskConfig | None = None):
        self.config = config if config is not None else TaskConfig(task=self.name)
        self.data_formats: dict[str, str] = {}  # split -> how its file was read (shown in the --dry_run plan)
        self._plain: Template = (
            load_template(self.config.prompt_template, "prompt_template")
            if self.config.prompt_template
            else shipped_template(self.plain_template)
        )
        self._hinted: Template = (
            load_template(self.config.hinted_template, "hinted_template")
            if self.config.hinted_template
            else shipped_template(self.hinted_template)
        )

    # ----- data -------------------------------------------------------------------------------------------
    def user_file(self, split: str) -> str | None:
        return self.config.train_file if normalize_split(split) == "train" else self.config.eval_file

    def files(self, split: str) -> list[str]:
        """The files that split reads (the user's file, or the shipped ones; empty when there is none)."""
        split = normalize_split(split)
        user = self.user_file(split)
        if user:
            return [user]
        source = self.sources.get(split)
        return [str(p) for p in source.paths()] if source else []

    def input_files(self) -> dict[str, list[str]]:
        """The data files of both splits (those that exist) and the prompt templates read from files."""
        templates = [t.origin for t in (self._plain, self._hinted) if t.origin != "<inline>"]
        return {**{split: self.files(split) for split in SPLITS}, "templates": templates}

    def field_map(self, split: str) -> dict[str, str]:
        source = self.sources.get(split) or self.sources.get("eval") or next(iter(self.sources.values()), None)
        fields = dict(source.fields) if source else {}
        if self.user_file(split) and self.config.task_fields:
            fields.update({str(k): str(v) for k, v in self.config.task_fields.items()})
        return fields

    def label_map(self, split: str) -> Mapping[Any, Any] | None:
        if self.user_file(split) and self.config.task_labels:
            return self.config.task_labels
        source = self.sources.get(split) or self.sources.get("eval")
        return source.labels if source else None

    def read_records(self, split: str) -> list[Record]:
        """Validated canonical records of a split (all rows of the user's file, or the shipped split)."""
        split = normalize_split(split)
        user = self.user_file(split)
        fields, labels = self.field_map(split), self.label_map(split)
        kwargs = dict(
            label_field=self.label_field,
            labels=labels,
            allowed_labels=self.allowed_labels or None,
            allow_empty=self.allow_empty,
            text_fields=self.text_fields,
        )
        if user:
            return self.read_user_file(Path(user).expanduser(), split, fields, kwargs)
        source = self.sources.get(split)
        if source is None:
            which = "train_file" if split == "train" else "eval_file"
            raise DataError(
                f"task '{self.name}' ships no {split} split",
                field=which,
                fix=f"set {which}: to your own file (fields: {', '.join(self.required_fields)}), see `fem tasks list`",
            )
        records: list[Record] = []
        for path in source.paths():
            for record in load_records(path, fields, self.required_fields, **kwargs):
                if source.select is not None and not source.select(record):
                    continue
                if (
                    source.split_key is not None
                    and hash_split(record.get(source.split_key), source.eval_fraction, self.name) != split
                ):
                    continue
                records.append(record)
        return records

    def data_format(self, split: str) -> str | None:
        return self.data_formats.get(normalize_split(split))

    def read_user_file(self, path: Path, split: str, fields: dict[str, str], kwargs: dict[str, Any]) -> list[Record]:
        """The user's file of ``split``: TRL preference rows (``data_format`` preference, or auto-detected) or
        columns mapped by ``task_fields``. Records how it was read in ``data_formats[split]``."""
        fmt = self.config.data_format
        if fmt == "preference" and self.preference_fields is None:
            raise ConfigError(
                f"task '{self.name}' does not read preference data (chosen/rejected pairs)",
                field="data_format",
                fix="use a pairwise task (judge*, summarize) or data_format: fields",
            )
        columns = "columns mapped by task_fields" if self.config.task_fields else "the task's own column names"
        if fmt == "fields" or self.preference_fields is None:
            self.data_formats[split] = columns
            return load_records(path, fields, self.required_fields, **kwargs)
        rows, where = read_rows(path)
        if fmt == "auto" and (self.config.task_fields or not is_preference_row(rows[0])):
            self.data_formats[split] = columns
            return load_records(path, fields, self.required_fields, **kwargs)
        context, first, second = self.preference_fields
        records, shape = preference_records(
            rows,
            where,
            str(path),
            context_field=context,
            first=first,
            second=second,
            seed=self.config.preference_seed,
        )
        gold_a = sum(r["label"] == "A" for r in records)
        self.data_formats[split] = (
            f"{shape.describe()}{', detected' if fmt == 'auto' else ''}; chosen in position A for {gold_a} "
            f"of {len(records)} rows (seeded coin, preference_seed={self.config.preference_seed})"
        )
        return records

    def load(self, split: str) -> list[Example]:
        """Examples of ``split`` ("train" or "eval"), truncated to train_limit / eval_limit."""
        split = normalize_split(split)
        examples = [ex for ex in (self.make_example(r, split) for r in self.read_records(split)) if ex is not None]
        files = self.files(split)
        check_unique_ids([e.id for e in examples], files[0] if files else self.name)
        if not examples:
            raise DataError(
                f"split '{split}' of task '{self.name}' has no usable examples",
                file=files[0] if files else None,
                fix="check the file and the tie_policy",
            )
        limit = self.config.train_limit if split == "train" else self.config.eval_limit
        return examples[:limit] if limit else examples

    def make_example(self, record: Record, split: str) -> Example | None:
        raise NotImplementedError

    def example_id(self, record: Record, prefix: str | None = None) -> str:
        """The record's own id when the file maps one, else ``<file stem>-<row index>`` (stable for a fixed file)."""
        own = record.get("id")
        if own is not None:
            return str(own)
        stem = prefix or Path(str(record.get("_file", self.name))).name.split(".")[0]
        return f"{stem}-{record['_index']:05d}"

    # ----- prompts ----------------------------------------------------------------------------------------
    def template_fields(self, example: Example) -> dict[str, Any]:
        return {k: v for k, v in example.fields.items() if not k.startswith("_")}

    def hint_text(self, example: Example) -> str:
        """The correct answer as stated in the hinted prompt."""
        return self.answer_text(example).strip()

    def prompt(self, example: Example) -> Messages:
        return with_system(
            [{"role": "user", "content": self._plain.render(self.template_fields(example))}], self.config.system_prompt
        )

    def hinted_prompt(self, example: Example) -> Messages:
        values = {**self.template_fields(example), "hint": self.hint_text(example)}
        return with_system([{"role": "user", "content": self._hinted.render(values)}], self.config.system_prompt)

    # ----- data mapping -----------------------------------------------------------------------------------
    def field_names(self) -> tuple[str, ...]:
        """Every field a data file may map: the required ones, the id, the label and each source's fields (none
        for a task that generates its data)."""
        if not self.required_fields:
            return ()
        names = {*self.required_fields, "id", *self.allow_empty, *([self.label_field] if self.label_field else [])}
        for source in self.sources.values():
            names |= set(source.fields)
        return tuple(sorted(names))


def group_by_example(predictions: Sequence[Any]) -> dict[str, list[Any]]:
    """Predictions grouped by example id, each group sorted by sample index."""
    groups: dict[str, list[Any]] = {}
    for p in predictions:
        groups.setdefault(p.example_id, []).append(p)
    return {k: sorted(v, key=lambda p: p.sample_index) for k, v in groups.items()}
