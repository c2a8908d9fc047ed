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


# The folders of the models inside the package. They are found here, by path, so that the lower layers
# (upcycling, which resolves short names) never import the toy world; `mtu.toyworld.components` re-exports them.
CONFIG_NAME = "mtu_config.json"  # = mtu.upcycling.serialization.CONFIG_NAME (importing it would close a cycle)


def _package_folder(name: str) -> Path:
    return Path(__file__).resolve().parent / "toyworld" / name


def shipped_base() -> Path:
    """The embedded base model's folder (a stock `StableDiffusionPipeline` folder inside the package)."""
    folder = _package_folder("base_model")
    if not (folder / "model_index.json").is_file():
        raise FileNotFoundError(f"the shipped toy-world base is missing from {folder}; rebuild it with "
                                f"`mtu toyworld pretrain --out {folder}`.")
    return folder


def shipped_model() -> Path:
    """The folder of the MTU adapter trained on the embedded base (short name "toyworld"), inside the package."""
    folder = _package_folder("mtu_model")
    if not (folder / CONFIG_NAME).is_file():
        raise FileNotFoundError(f"the shipped toy-world MTU model ('toyworld') is not in this installation "
                                f"({folder} holds no {CONFIG_NAME}); give an adapter folder instead.")
    return folder


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
    "toyworld": ShortName("adapter", lambda: shipped_model(), "the MTU adapter trained on the embedded toy-world base"),
    "toyworld-base": ShortName("base", lambda: shipped_base(), "the embedded toy-world base (Stable Diffusion pipeline)"),
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
