"""Prompt templates (format strings or .txt/.jinja files) and chat messages (system prompt, plain text)."""

from __future__ import annotations

import functools
import string
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2.meta
from jinja2 import StrictUndefined
from jinja2.sandbox import SandboxedEnvironment

from fem.errors import ConfigError

from .base import Messages

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"
TEMPLATE_SUFFIXES = (".txt", ".jinja", ".j2")


@dataclass(frozen=True)
class Template:
    """A prompt template: a Python format string (``{question}``) or a Jinja template (``{{ question }}``)."""

    text: str
    kind: str = "format"  # "format" | "jinja"
    origin: str = "<inline>"
    field_name: str = "prompt_template"

    def placeholders(self) -> set[str]:
        if self.kind == "jinja":
            return set(jinja2.meta.find_undeclared_variables(SandboxedEnvironment().parse(self.text)))
        return {name.split(".")[0].split("[")[0] for _, name, _, _ in string.Formatter().parse(self.text) if name}

    def render(self, values: Mapping[str, Any]) -> str:
        missing = self.placeholders() - set(values)
        if missing:
            raise ConfigError(
                f"template {self.origin} uses {', '.join('{' + m + '}' for m in sorted(missing))}, which this task does not provide",
                field=self.field_name,
                fix=f"use only these fields: {', '.join(sorted(values))} (write literal braces as {{{{ }}}})",
            )
        if self.kind == "jinja":
            return _jinja_env().from_string(self.text).render(**values)
        return self.text.format(**values)


@functools.cache
def _jinja_env() -> SandboxedEnvironment:
    return SandboxedEnvironment(undefined=StrictUndefined, keep_trailing_newline=False)


def load_template(spec: str, field_name: str = "prompt_template") -> Template:
    """A template from ``spec``: a path to a .txt/.jinja file (absolute, relative to the working directory, or a
    shipped template name under ``fem/tasks/templates``), or else an inline Python format string."""
    text = spec.strip()
    if text.lower().endswith(TEMPLATE_SUFFIXES) and "\n" not in text:
        for candidate in (Path(text).expanduser(), TEMPLATE_DIR / text):
            if candidate.is_file():
                try:
                    body = candidate.read_text(encoding="utf-8")
                except UnicodeDecodeError:
                    raise ConfigError(
                        f"template file {candidate} is not UTF-8", field=field_name, fix="re-save it as UTF-8"
                    ) from None
                kind = "format" if candidate.suffix == ".txt" else "jinja"
                return Template(body.rstrip("\n"), kind, str(candidate), field_name)
        raise ConfigError(
            f"template file '{text}' not found",
            field=field_name,
            fix="give an existing .txt/.jinja path, or an inline format string",
        )
    try:
        list(string.Formatter().parse(spec))
    except ValueError as exc:
        raise ConfigError(
            f"is not a valid format string ({exc})", field=field_name, fix="write literal braces as {{ and }}"
        ) from None
    return Template(spec, "format", "<inline>", field_name)


def shipped_template(name: str) -> Template:
    """A template shipped with fem (``fem/tasks/templates/NAME``)."""
    path = TEMPLATE_DIR / name
    return Template(
        path.read_text(encoding="utf-8").rstrip("\n"), "format" if path.suffix == ".txt" else "jinja", str(path)
    )


def with_system(messages: Messages, system_prompt: str | None) -> Messages:
    """Prepend a system message (replacing an existing one) when ``system_prompt`` is set."""
    if not system_prompt:
        return list(messages)
    return [{"role": "system", "content": system_prompt}] + [m for m in messages if m.get("role") != "system"]


def plain_text(messages: Messages) -> str:
    """Messages joined without a chat template (for tokenizers that have none): contents separated by blank lines."""
    return "\n\n".join(m["content"] for m in messages) + "\n\n"
