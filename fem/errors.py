"""User-facing errors: one line that names the file, the field and the fix (the CLI prints it, no traceback)."""

from __future__ import annotations


class FemError(Exception):
    """An error caused by the user's input (config, data, output dir). Printed as one line by the CLI."""

    def __init__(self, message: str, *, file: str | None = None, field: str | None = None, fix: str | None = None):
        self.message = message
        self.file = file
        self.field = field
        self.fix = fix
        super().__init__(self.one_line())

    def one_line(self) -> str:
        where = []
        if self.file:
            where.append(str(self.file))
        if self.field:
            where.append(f"field '{self.field}'")
        text = (": ".join([", ".join(where), self.message]) if where else self.message).replace("\n", " ")
        if self.fix:
            text += f" -> {self.fix}"
        return text

    def in_file(self, file: str) -> FemError:
        """The same error, attributed to ``file`` if it names none yet."""
        if self.file is None:
            self.file = file
            self.args = (self.one_line(),)
        return self


class ConfigError(FemError):
    """A recipe or command-line value is invalid."""


class DataError(FemError):
    """A data file is missing, malformed or does not match the task's field mapping."""
