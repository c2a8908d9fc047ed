"""What every config dataclass shares: loading from a dict (unknown keys warn, naming the key) and JSON."""

from __future__ import annotations

import dataclasses
import json
import math
import warnings

from .errors import InputError


def is_int(value) -> bool:
    """An int that is not a bool (a YAML `true` must not pass as 1)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
    """A finite int or float that is not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def must_be(name: str, expected: str, value) -> InputError:
    """The error for a field with a bad value: `name: must be <expected>, got <value>.`"""
    return InputError(f"must be {expected}, got {value!r}.", field=name)


def known_fields(cls, data: dict, owner: str | None = None) -> dict:
    """The items of `data` that are fields of dataclass `cls`; each other key warns, naming it."""
    known = {field.name for field in dataclasses.fields(cls)}
    for key in data:
        if key not in known:
            warnings.warn(f"{owner or cls.__name__}: ignoring unknown key {key!r}.", stacklevel=3)
    return {key: value for key, value in data.items() if key in known}


class JsonConfig:
    """`to_json_string` / `from_json_string` for a dataclass with `to_dict` / `from_dict`."""

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json_string(cls, text: str):
        return cls.from_dict(json.loads(text))


def check_counts(config, names, minimum: int = 1) -> None:
    """Raises ValueError naming the first field of `names` on `config` that is not an integer >= `minimum`."""
    for name in names:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise InputError(f"`{name}` must be an integer >= {minimum}, got {value!r}.")
