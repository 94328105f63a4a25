"""Recipe parsing: one flat YAML (loaded safely) + command-line overrides -> ``Configs``, through ``trl.TrlParser``.

Before TRL sees anything, the recipe is checked here so that a user error becomes one line naming the file,
the key and the fix: unknown keys (with a did-you-mean), wrong value types, YAML that is not a mapping or
carries Python object tags.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from transformers import HfArgumentParser
from trl import TrlParser

from fem.configs import FEM_DATACLASSES
from fem.errors import ConfigError
from fem.run_configs import Configs, validate_configs
from fem.trl_configs import FemModelConfig, MStepConfig
from fem.validation import RULE_KEYS, argparse_metadata, fem_field_names

# Command-line shorthands documented in `fem eval --help`.
ALIASES = {"--limit": "--eval_limit"}
RESERVED_KEYS = {"env"}  # TrlParser's `env:` block sets environment variables
STRING_OR_LIST_KEYS = {"lora_target_modules"}  # PEFT takes "all-linear" as well as a list of module names


def all_dataclasses() -> tuple[type, ...]:
    """Every dataclass a recipe fills, in the order ``parse_configs`` unpacks them."""
    return FEM_DATACLASSES + (MStepConfig, FemModelConfig)


class RecipeParser(TrlParser):
    """``TrlParser`` over fem's dataclasses. argparse takes a field's metadata as ``add_argument`` keywords, so the
    fields fem declares reach it without their validation rules (``fem.validation``; the dataclasses check them)."""

    def __init__(self) -> None:
        self.fem_fields = frozenset().union(*(fem_field_names(cls) for cls in all_dataclasses()))
        super().__init__(all_dataclasses())

    def _parse_dataclass_field(self, parser, field: dataclasses.Field) -> None:  # type: ignore[override]
        if field.name in self.fem_fields and RULE_KEYS & field.metadata.keys():
            field = copy.copy(field)
            field.metadata = types.MappingProxyType(argparse_metadata(field.metadata))
        HfArgumentParser._parse_dataclass_field(parser, field)


def recipe_parser() -> RecipeParser:
    """The parser of every recipe key (``fem COMMAND --help-all`` prints its help)."""
    return RecipeParser()


def all_fields() -> dict[str, dataclasses.Field]:
    out: dict[str, dataclasses.Field] = {}
    for cls in all_dataclasses():
        for f in dataclasses.fields(cls):
            if f.init:
                out.setdefault(f.name, f)
    return out


MAX_DEPTH = 32  # a flat recipe nests two levels (task_fields, an inline deepspeed config a few more)
TAG_FIX = "remove the tag: recipes hold plain values (Python object tags are not allowed)"


class RecipeYAMLError(yaml.MarkedYAMLError):
    """A YAML construct fem refuses in a recipe, with the fix to print."""

    def __init__(self, problem: str, mark: yaml.Mark, fix: str):
        super().__init__(problem=problem, problem_mark=mark)
        self.fix = fix


class RecipeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` (plain data only: no Python tags) that also refuses a key written twice (plain YAML
    silently keeps the last value), aliases and merge keys (an alias bomb expands a 500-byte file into gigabytes),
    and nesting deeper than ``MAX_DEPTH`` (which would otherwise exhaust Python's recursion limit)."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self.depth = 0

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            raise RecipeYAMLError(
                f"aliases (*{event.anchor}) are not allowed in recipes",
                event.start_mark,
                "write each value out in full (YAML anchors, aliases and merge keys are not supported)",
            )
        if self.depth >= MAX_DEPTH:
            raise RecipeYAMLError(
                f"values nested more than {MAX_DEPTH} levels deep",
                event.start_mark,
                "write a flat recipe of key: value",
            )
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_mapping(self, node, deep=False):
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise RecipeYAMLError(
                    "merge keys (<<) are not supported in recipes",
                    key_node.start_mark,
                    "write each key out in full (YAML anchors, aliases and merge keys are not supported)",
                )
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, typing.Hashable) and key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key '{key}'", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_recipe(path: str | Path) -> dict[str, Any]:
    """Read a recipe YAML safely (no Python tags, aliases or deep nesting) and check it is a flat mapping."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("recipe file not found", file=str(path), fix="check the path given to --config")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"not UTF-8 text (byte {e.start})", file=str(path), fix="save the recipe as UTF-8 YAML"
        ) from None
    try:
        data = yaml.load(text, Loader=RecipeLoader)  # noqa: S506 - RecipeLoader is a SafeLoader
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        fix = getattr(e, "fix", None)
        if fix is None:
            fix = TAG_FIX if "constructor for the tag" in problem else "write plain YAML key: value pairs"
        raise ConfigError(f"invalid YAML{where}: {problem}", file=str(path), fix=fix) from None
    if data is None:
        raise ConfigError("the recipe is empty", file=str(path), fix="add at least `task:` and `model_name_or_path:`")
    if not isinstance(data, dict):
        raise ConfigError(
            f"the recipe must be a mapping of keys to values, not a {type(data).__name__}",
            file=str(path),
            fix="write one `key: value` per line",
        )
    return data


def _type_ok(value: Any, annotation: Any) -> bool:
    """Does a YAML value fit a dataclass field annotation (None, bool, int, float, str, list, dict, unions), shape
    included: the items of a ``list[str]``, the keys and values of a ``dict[str, str]``? A text field takes only
    text (``task: 123`` is refused, not turned into a name); a text item of a mapping or list may be a number."""
    return _fits(value, annotation, top=True)


def _fits(value: Any, annotation: Any, top: bool) -> bool:
    if isinstance(annotation, str):
        annotation = {"str": str, "int": int, "float": float, "bool": bool}.get(annotation, Any)
    if annotation is Any:
        return True
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, arg, top) for arg in args)
    if annotation is type(None):
        return value is None
    if origin in (list, tuple) or annotation in (list, tuple):
        item = args[0] if args else Any  # list[str], tuple[str, ...]
        return isinstance(value, (list, tuple)) and all(_fits(v, item, False) for v in value)
    if origin is dict or annotation is dict:
        key, item = args if len(args) == 2 else (Any, Any)
        return isinstance(value, dict) and all(
            _fits(k, key, False) and _fits(v, item, False) for k, v in value.items()
        )
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is str:  # a label mapping {1: A} or {true: A} has number or boolean keys
        return isinstance(value, str) or (not top and isinstance(value, (int, float, bool)))
    if isinstance(annotation, type) and issubclass(annotation, str):  # str enums
        return isinstance(value, str)
    return True


def _describe(annotation: Any) -> str:
    return str(annotation).replace("typing.", "").replace("<class '", "").replace("'>", "")


def check_recipe_keys(data: dict[str, Any], path: str) -> None:
    """Unknown keys and wrong value types fail here with the key, the file and a suggestion."""
    fields = all_fields()
    hints = typing.get_type_hints
    for key, value in data.items():
        if key in RESERVED_KEYS:
            if not _fits(value, dict[str, str], top=True):
                raise ConfigError(
                    "must be a mapping of environment variables", file=path, field=key, fix="write env: {NAME: value}"
                )
            continue
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            fix = f"did you mean '{close[0]}'?" if close else "remove it (see `fem train --help` for every key)"
            raise ConfigError("unknown key", file=path, field=str(key), fix=fix)
        owner = next(cls for cls in all_dataclasses() if key in {f.name for f in dataclasses.fields(cls)})
        annotation = hints(owner).get(key, Any)
        if key in STRING_OR_LIST_KEYS:
            annotation = str | list[str]
        if value is not None and not _type_ok(value, annotation):
            quote = (
                " (quote it if you mean the text)"
                if isinstance(value, (int, float)) and not isinstance(value, bool)
                else ""
            )
            raise ConfigError(
                f"has the wrong type or shape: got {type(value).__name__} {value!r:.60}",
                file=path,
                field=key,
                fix=f"give a value of type {_describe(annotation)}{quote}",
            )


def _raise_parse_error(message: str) -> typing.NoReturn:
    text = message.replace("argument ", "")
    field = text.split(":", 1)[0].split("/")[0].lstrip("-") if ":" in text else None
    raise ConfigError(
        text.split(":", 1)[-1].strip() if field else text, field=field, fix="fix the command-line value (see --help)"
    )


def find_config_path(argv: Sequence[str]) -> str | None:
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
    return None


def parse_configs(argv: Sequence[str]) -> Configs:
    """Parse ``--config RECIPE.yaml`` plus overrides into ``Configs``; every user error is a ``ConfigError``."""
    argv = [ALIASES.get(a, a) for a in argv]
    recipe = find_config_path(argv)
    if recipe is not None:
        data = load_recipe(recipe)
        check_recipe_keys(data, recipe)
    parser = recipe_parser()
    parser.error = _raise_parse_error  # argparse would print usage and exit 2
    try:
        parsed = parser.parse_args_and_config(list(argv))
    except ConfigError as e:
        raise (e.in_file(recipe) if recipe else e) from None
    except ValueError as e:  # TRL / TrainingArguments validation
        raise ConfigError(str(e).splitlines()[0], file=recipe, fix="fix the value named in the message") from None
    task, proposal, estep, evalc, em, mstep, model = parsed[:7]
    configs = Configs(
        task=task, proposal=proposal, estep=estep, eval=evalc, em=em, mstep=mstep, model=model, recipe=recipe
    )
    try:
        validate_configs(configs)
    except ConfigError as e:
        raise (e.in_file(recipe) if recipe else e) from None
    return configs
