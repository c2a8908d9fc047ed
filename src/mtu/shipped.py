"""Short names of the models inside the package, accepted wherever a folder is: `mtu generate --model toyworld`.

`resolve` is the one place a short name becomes a folder. An existing path always wins over a short name, and a
value that is neither passes through unchanged, so the caller's own checks (which list `short_names(kind)` in
their errors) still decide what it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

Kind = Literal["adapter", "base"]
KINDS: tuple[str, ...] = ("adapter", "base")
KIND_WORDS = {"adapter": "an MTU adapter", "base": "a base pipeline"}


# The toy world's folders are looked up when a name is resolved, not when this module is imported: the package's
# lower layers (upcycling) resolve names without importing the toy world.
def _toyworld_model() -> Path:
    from .toyworld.components import shipped_model

    return shipped_model()


def _toyworld_base() -> Path:
    from .toyworld.components import shipped_base

    return shipped_base()


@dataclass(frozen=True)
class ShortName:
    """A model shipped inside the package.

    Args:
        kind: "adapter" (an MTU adapter folder, as `save_pretrained` writes it) or "base" (a diffusers pipeline
            folder).
        locate: Returns the folder; raises FileNotFoundError, saying so, when this installation lacks it.
        description: What the model is, for help texts.
    """

    kind: Kind
    locate: Callable[[], Path]
    description: str

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"`kind` must be one of {KINDS}, got {self.kind!r}.")


SHORT_NAMES: dict[str, ShortName] = {
    "toyworld": ShortName("adapter", _toyworld_model, "the MTU adapter trained on the embedded toy-world base"),
    "toyworld-base": ShortName("base", _toyworld_base, "the embedded toy-world base (Stable Diffusion pipeline)"),
}


def short_names(kind: Kind) -> list[str]:
    """The short names of the shipped models of `kind`, sorted."""
    if kind not in KINDS:
        raise ValueError(f"`kind` must be one of {KINDS}, got {kind!r}.")
    return sorted(name for name, entry in SHORT_NAMES.items() if entry.kind == kind)


def resolve(name_or_path, kind: Kind, argument: str):
    """The shipped folder a short name stands for; anything else is returned unchanged.

    Args:
        name_or_path: What the user gave: a path, a hub id, a short name, ...
        kind: What the caller accepts there, "adapter" or "base".
        argument: How the caller's errors name the value (e.g. "`base`").
    Returns:
        `name_or_path` itself if it exists as a path or is no short name; else the shipped folder (a Path).
    Raises:
        ValueError: the short name is of another kind of model.
        FileNotFoundError: the named model is not in this installation.
    """
    text = str(name_or_path)
    entry = SHORT_NAMES.get(text)
    if entry is None or Path(text).expanduser().exists():
        return name_or_path
    if entry.kind != kind:
        raise ValueError(f"{argument} {text!r} is the short name of {KIND_WORDS[entry.kind]} ({entry.description}), "
                         f"not of {KIND_WORDS[kind]}; shipped short names of that kind: "
                         f"{', '.join(short_names(kind)) or 'none'}.")
    return entry.locate()
