"""The project's one exception for bad input, so a user's mistake and a bug never look alike.

`InputError` is raised by validation (an argument, a config field, a file the user named, data the user gave) before
any heavy work. The CLI prints it as one line, `mtu: error: <field>: <message>`, and exits 2; every other exception is
a bug and keeps its traceback. It subclasses `ValueError`, so Python callers that catch `ValueError` keep working.

`field` is the dotted path of what was wrong in the user's terms (`data[2].schema`, `optim.lr`, `--out`); `within`
prefixes it when a nested validator's error travels up, e.g. a data source's `schema` becomes `data[2].schema`.
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad input from the user. `str(error)` is the one line the CLI prints: "field: message" (or the message)."""

    def __init__(self, message: str, *, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message

    def within(self, prefix: str) -> InputError:
        """The same error seen from one level up: `within("data[2]")` turns field `schema` into `data[2].schema`."""
        if not self.field:
            path = prefix
        elif self.field.startswith("["):
            path = f"{prefix}{self.field}"
        else:
            path = f"{prefix}.{self.field}"
        return InputError(self.message, field=path)


class MissingExtraError(InputError, ImportError):
    """An optional dependency is not installed: one line with the install command (the CLI prints InputErrors as
    one line; Python callers may catch it as the ImportError it is)."""
