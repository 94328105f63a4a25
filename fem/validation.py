"""Config checks declared once per field, in the field's ``metadata`` next to its help (TRL style), and read here.

Rule keys of a field's metadata:

- ``choices``: the allowed values;
- ``min`` / ``max``: inclusive bounds; ``gt``: an exclusive lower bound;
- ``nonempty``: the value may not be empty (nor None);
- ``fix``: what the error tells the user to do (a choice's fix is derived from its choices).

Every field, fem's or TRL's, must also be finite: a NaN or infinite number anywhere is refused (``non_finite``).
``None`` passes every rule but ``nonempty`` (it is how an optional field says "unset"). A failed rule is a
``ConfigError`` that names the field and the fix. Only the fields that fem's own classes declare are checked (a
TRL config's fields carry TRL's own ``choices``); the recipe parser hands argparse their metadata without these
keys (``argparse_metadata``).
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Mapping
from typing import Any

from fem.errors import ConfigError

RULE_KEYS = frozenset({"choices", "min", "max", "gt", "nonempty", "fix"})


def check(condition: bool, field_name: str, message: str, fix: str) -> None:
    """A check that spans several fields (single-field rules live in the metadata)."""
    if not condition:
        raise ConfigError(message, field=field_name, fix=fix)


def fem_field_names(cls: type) -> frozenset[str]:
    """The fields of ``cls`` that fem's own classes declare (or re-declare) in its MRO."""
    return frozenset(
        name for klass in cls.__mro__ if klass.__module__.startswith("fem.") for name in inspect.get_annotations(klass)
    )


def argparse_metadata(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """A field's metadata without fem's rule keys (argparse takes the rest as ``add_argument`` keywords)."""
    return {key: value for key, value in metadata.items() if key not in RULE_KEYS}


def _bounds(rules: Mapping[str, Any]) -> str:
    low = f"({rules['gt']}" if "gt" in rules else f"[{rules['min']}" if "min" in rules else None
    if low is not None and "max" in rules:
        return f"in {low}, {rules['max']}]"
    if low is not None:
        return f"{'>' if low[0] == '(' else '>='} {low[1:]}"
    return f"<= {rules['max']}"


def check_field(name: str, value: Any, rules: Mapping[str, Any]) -> None:
    """Raise ``ConfigError`` when ``value`` breaks one of ``rules``."""
    if rules.get("nonempty") and not value:
        raise ConfigError("is empty", field=name, fix=rules["fix"])
    if value is None:
        return
    choices = rules.get("choices")
    if choices is not None and value not in choices:
        raise ConfigError(
            f"'{value}' is not one of {', '.join(choices)}",
            field=name,
            fix=rules.get("fix", f"set {name} to one of {tuple(choices)}"),
        )
    too_low = ("min" in rules and value < rules["min"]) or ("gt" in rules and value <= rules["gt"])
    if too_low or ("max" in rules and value > rules["max"]):
        raise ConfigError(f"must be {_bounds(rules)} (got {value})", field=name, fix=rules["fix"])


def non_finite(value: Any) -> float | None:
    """The first NaN or infinite float in ``value`` (a number, or a list / mapping holding numbers), else None."""
    if isinstance(value, float):
        return None if math.isfinite(value) else value
    items = value.values() if isinstance(value, Mapping) else value if isinstance(value, (list, tuple)) else ()
    return next((bad for item in items if (bad := non_finite(item)) is not None), None)


def validate_fields(config: Any) -> None:
    """Check every field of the dataclass instance ``config``: no field (fem's or TRL's) holds a NaN or infinite
    number, and every field fem declares obeys its metadata rules."""
    own = fem_field_names(type(config))
    for f in dataclasses.fields(config):
        value = getattr(config, f.name, None)
        bad = non_finite(value)
        if bad is not None:
            raise ConfigError(
                f"must be a finite number (got {bad})", field=f.name, fix=f"give {f.name} a finite value"
            )
        rules = {key: value for key, value in f.metadata.items() if key in RULE_KEYS}
        if rules and f.name in own:
            check_field(f.name, value, rules)
