"""Config validation helpers: a failed check is a ``ConfigError`` that names the field and the fix."""

from __future__ import annotations

from fem.errors import ConfigError


def check(condition: bool, field_name: str, message: str, fix: str) -> None:
    if not condition:
        raise ConfigError(message, field=field_name, fix=fix)


def check_choice(value: str, choices: tuple[str, ...], field_name: str) -> None:
    check(
        value in choices,
        field_name,
        f"'{value}' is not one of {', '.join(choices)}",
        f"set {field_name} to one of {choices}",
    )
