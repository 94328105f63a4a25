"""One resolver for fem's plug-in points (tasks, proposals, generation backends): a registered name, or a dotted
path ``pkg.module.Class`` to a class of your own. Every failure is a ``ConfigError`` on the plug-in's config field."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from fem.errors import ConfigError

IMPORT_FIX = "check the dotted path and that its package is importable (pip install it or set PYTHONPATH)"


def missing_methods(*names: str) -> Callable[[type], list[str]]:
    """A ``Registry.missing`` check: the named methods a class does not define."""
    return lambda cls: [name for name in names if not callable(getattr(cls, name, None))]


@dataclass(frozen=True)
class Registry:
    """Names of one kind of plug-in (``kind`` is also its config field) and how to check a class of that kind.

    ``entries`` maps a name to ``pkg.module.Class`` (imported only when resolved); ``contract`` says what a class
    must be (for the fix); ``missing`` lists what a resolved class lacks; ``unshipped`` names known but not shipped
    plug-ins, with the reason."""

    kind: str
    entries: Mapping[str, str]
    contract: str
    missing: Callable[[type], list[str]]
    unshipped: Mapping[str, str] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return list(self.entries)

    def _error(self, message: str, fix: str) -> ConfigError:
        return ConfigError(message, field=self.kind, fix=fix)

    def resolve(self, name: str) -> type:
        """The class registered as ``name`` or importable as ``pkg.module.Class``."""
        if name in self.unshipped:
            raise self._error(self.unshipped[name], f"use {self.kind}: {self.names[0]}")
        target = self.entries.get(name, name)
        module_name, _, class_name = target.rpartition(".")
        if not module_name:
            close = [n for n in self.names if name.lower() in n or n in name.lower()]
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise self._error(
                f"unknown {self.kind} '{name}'{hint}",
                f"use one of {', '.join(self.names)}, or a dotted path pkg.module.Class to {self.contract}",
            )
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise self._error(
                f"cannot import module '{module_name}' for {self.kind} '{name}' ({exc})", IMPORT_FIX
            ) from None
        cls = getattr(module, class_name, None)
        if cls is None:
            raise self._error(f"'{module_name}' has no class '{class_name}'", IMPORT_FIX)
        if not isinstance(cls, type):
            raise self._error(f"'{name}' is not a class", f"point {self.kind}: to {self.contract}")
        lacks = self.missing(cls)
        if lacks:
            raise self._error(f"class '{name}' lacks {', '.join(lacks)}", f"make it {self.contract}")
        return cls

    def check(self, name: str) -> None:
        """Validate ``name`` at config time (no model is loaded)."""
        self.resolve(name)
