"""Outputs that never destroy anything: how every writing command claims, stages and publishes what it writes.

    output = claim_output(args.out, command="fold", overwrite=args.overwrite, inputs={"adapter": args.dir})
    ...                                                 # the heavy work, after every check
    output.write(lambda folder: folded.save_pretrained(folder))

`claim_output` runs before any heavy work and only looks. It refuses an existing file where a folder goes, a folder
that is, holds or lies inside one of the command's inputs, a place that cannot be written, and an existing folder
holding anything but this command's own earlier output (unless `overwrite`). A command marks its output with
`MARKER_NAME`, a small JSON record of the command and the files it wrote; `recognize` lets a command accept its
outputs from before markers existed.

`OutputFolder.write` (or `.stage()`) writes into a staging folder beside the target and then moves it into place:
the whole folder in one rename when the target is absent or empty, else file by file (`os.replace`, each atomic),
replacing only the files the command writes and removing only files its own earlier run wrote and this one did not.
Nothing else in the folder is touched, with or without `overwrite`. `claim_output_file` does the same checks for a
command that writes one file (`mtu generate`).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError

MARKER_NAME = ".mtu-output.json"


def read_marker(folder) -> dict | None:
    """The marker record in `folder` ({"command", "files"?}), or None where there is none (or it is unreadable)."""
    path = Path(folder) / MARKER_NAME
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return record if isinstance(record, dict) else None


def _write_marker(folder: Path, command: str, files: list[str] | None = None) -> None:
    record = {"command": command} | ({"files": files} if files is not None else {})
    handle, staging = tempfile.mkstemp(prefix=f"{MARKER_NAME}.", suffix=".tmp", dir=folder)
    with os.fdopen(handle, "w") as stream:
        stream.write(json.dumps(record, indent=1) + "\n")
    os.replace(staging, folder / MARKER_NAME)


def _relation(target: Path, source: Path) -> str | None:
    if target == source:
        return "is"
    if source in target.parents:
        return "lies inside"
    if target in source.parents:
        return "contains"
    return None


def _check_inputs(target: Path, shown: str, inputs: Mapping[str, object] | None, command: str, field: str) -> None:
    """Refuses a target that is, lies inside or contains one of the command's inputs (those that exist here)."""
    for label, value in (inputs or {}).items():
        if value is None or not str(value):
            continue
        source = Path(str(value)).expanduser()
        if not source.exists():  # a hub id, a short name, a path not made yet: nothing here to overwrite
            continue
        relation = _relation(target, source.resolve())
        if relation is not None:
            raise InputError(f"{shown!r} {relation} the {label} {str(value)!r} that `mtu {command}` reads; writing "
                             f"there could overwrite it. Choose another place.", field=field)


def _check_writable(target: Path, shown: str, field: str) -> None:
    """The nearest existing folder above `target` (where staging goes) is a writable folder."""
    ancestor = target.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise InputError(f"{shown!r} cannot be created: {str(ancestor)!r} is a file, not a folder.", field=field)
    for place in (ancestor, target) if target.is_dir() else (ancestor,):
        if not os.access(place, os.W_OK | os.X_OK):
            raise InputError(f"{shown!r} cannot be written: no write permission in {str(place)!r} (or a read-only "
                             f"file system).", field=field)


@dataclass(frozen=True)
class OutputFolder:
    """A claimed output folder (`claim_output`): write it with `write` / `stage`, or `create` it to fill over time.

    Args:
        path: The folder, resolved.
        command: The command that writes it, as its marker records it ("fold", "toyworld package", ...).
        shown: The path as the user gave it, for messages.
        field: How messages name the argument ("--out", "output_dir").
    """

    path: Path
    command: str
    shown: str
    field: str = "--out"

    def create(self) -> Path:
        """Creates and marks the folder for a command that writes into it over time (`mtu train`); returns it."""
        self.path.mkdir(parents=True, exist_ok=True)
        if (read_marker(self.path) or {}).get("command") != self.command:
            _write_marker(self.path, self.command)
        return self.path

    @contextmanager
    def stage(self) -> Iterator[Path]:
        """A fresh staging folder beside the target; moved into place when the block ends without an error, and
        removed in any case (it and whatever is left in it are this command's own)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent))
        try:
            yield staging
            self._publish(staging)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def write(self, write: Callable[[Path], object]) -> Path:
        """Runs `write(staging_folder)`, then moves what it wrote into place (see the module docstring)."""
        with self.stage() as staging:
            write(staging)
        return self.path

    def _publish(self, staging: Path) -> None:
        files = sorted(path.relative_to(staging).as_posix() for path in staging.rglob("*")
                       if not path.is_dir() and path.name != MARKER_NAME)
        earlier = read_marker(self.path)
        _write_marker(staging, self.command, files)
        if not self.path.exists() or {entry.name for entry in self.path.iterdir()} <= {MARKER_NAME}:
            (self.path / MARKER_NAME).unlink(missing_ok=True)
            os.replace(staging, self.path)  # one rename; an empty folder in the way is replaced on POSIX
            return
        self._check_merge(files)
        for name in [*files, MARKER_NAME]:  # the marker last: it lists what is now in place
            destination = self.path / name
            destination.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / name, destination)
        if earlier and earlier.get("command") == self.command:
            self._remove_stale(earlier.get("files") or [], set(files))

    def _check_merge(self, files: list[str]) -> None:
        """Every file can be put in place without removing something else; raises before anything moves."""
        for name in files:
            destination = self.path / name
            in_the_way = [parent for parent in reversed(destination.parents)
                          if self.path in parent.parents and parent.exists() and not parent.is_dir()]
            if destination.is_dir() and not destination.is_symlink():
                in_the_way.append(destination)
            if in_the_way:
                raise InputError(f"cannot write {name!r} into {self.shown!r}: {str(in_the_way[0])!r} is in the way "
                                 f"and is not `mtu {self.command}`'s to replace; nothing was changed.",
                                 field=self.field)

    def _remove_stale(self, earlier_files: list, written: set[str]) -> None:
        """Removes the files this command's earlier run wrote here and this run did not (and their emptied
        folders); a marker naming anything outside the folder is ignored."""
        root = self.path
        for name in earlier_files:
            if not isinstance(name, str) or name in written:
                continue
            path = root / name
            if root not in path.resolve().parents or not path.is_file():
                continue
            path.unlink()
            for parent in path.parents:
                if parent == root or root not in parent.parents or any(parent.iterdir()):
                    break
                parent.rmdir()


def claim_output(path, *, command: str, overwrite: bool = False, inputs: Mapping[str, object] | None = None,
                 field: str = "--out", recognize: Callable[[Path], bool] | None = None) -> OutputFolder:
    """Checks that `command` may write the folder `path`; raises `InputError` naming `field` if not. Writes nothing.

    Args:
        path: The output folder the user named.
        command: The command's name as users type it after `mtu` ("fold", "toyworld package").
        overwrite: Accept an existing folder holding other files; only the files the command writes are
            replaced there, nothing else is removed.
        inputs: {label: path} of what the command reads ("input adapter": ..., "base (`--base`)": ...); an output
            that is, lies inside or contains one of those that exist is refused, even with `overwrite`.
        field: How errors name the argument.
        recognize: True for a folder this command wrote before outputs were marked (its own earlier output).
    Returns:
        The claimed `OutputFolder`.
    """
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise InputError(f"must name a folder, got {path!r}.", field=field)
    shown = str(path)
    target = Path(path).expanduser().resolve()
    if target.exists() and not target.is_dir():
        raise InputError(f"{shown!r} is an existing file; `mtu {command}` writes a folder. Give a folder path (the "
                         f"file is left as it is).", field=field)
    _check_inputs(target, shown, inputs, command, field)
    entries = sorted(entry.name for entry in target.iterdir()) if target.is_dir() else []
    if entries and not overwrite:
        own = (read_marker(target) or {}).get("command") == command or (recognize is not None and recognize(target))
        if not own:
            example = next((name for name in entries if name != MARKER_NAME), entries[0])
            raise InputError(f"{shown!r} already holds files that are not an earlier `mtu {command}` output (such as "
                             f"{example!r}); choose a new or empty folder, or pass --overwrite to replace only the "
                             f"files `mtu {command}` writes there (nothing else is removed).", field=field)
    _check_writable(target, shown, field)
    return OutputFolder(target, command, shown, field)


def claim_output_file(path, *, command: str, overwrite: bool = False, inputs: Mapping[str, object] | None = None,
                      field: str = "--out", recognize: Callable[[Path], bool] | None = None) -> Path:
    """`claim_output` for a command that writes one file: returns the resolved path, or raises `InputError`.

    An existing file is replaced only if `recognize(path)` says this command wrote it, or with `overwrite`.
    """
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise InputError(f"must name a file, got {path!r}.", field=field)
    shown = str(path)
    target = Path(path).expanduser().resolve()
    if target.is_dir():
        raise InputError(f"{shown!r} is a folder; `mtu {command}` writes a file. Give a file path.", field=field)
    _check_inputs(target, shown, inputs, command, field)
    if target.exists() and not overwrite and not (recognize is not None and recognize(target)):
        raise InputError(f"{shown!r} already exists and is not an earlier `mtu {command}` output; choose another "
                         f"name, or pass --overwrite to replace it.", field=field)
    _check_writable(target, shown, field)
    return target


# ---- a training run's folder (`mtu train`'s output_dir), which the trainer fills over time ----

def _field(section, name: str):
    """`section.name` of a config section given as a dataclass or, as written, a mapping."""
    return section.get(name) if isinstance(section, Mapping) else getattr(section, name, None)


def run_inputs(config) -> dict[str, object]:
    """{label: path} of what a training config reads: its base, its starting adapter and its data sources."""
    inputs = {"base (`model.base`)": _field(config.model, "base"),
              "adapter (`model.adapter`)": _field(config.model, "adapter")}
    for number, source in enumerate(config.data):
        inputs[f"data source (`data[{number}].path`)"] = _field(source, "path")
    return inputs


def is_run_folder(folder: Path) -> bool:
    """True for a run folder `mtu train` wrote before outputs were marked: its config.yaml and what a run adds."""
    return (folder / "config.yaml").is_file() and any(
        (folder / name).exists() for name in ("checkpoints", "final", "logs", "train_summary.json"))


def claim_run_folder(config, *, overwrite: bool = False) -> OutputFolder:
    """Claims `config.output_dir` for `mtu train`: new, empty, or this trainer's own run (which `resume` continues);
    another folder only with `overwrite`. Refuses one that is, holds or lies inside what the run reads (base,
    adapter, data, `cache_dir`). Call `.create()` on the main process when the run starts writing."""
    inputs = run_inputs(config) | {"latent cache (`cache_dir`)": getattr(config, "cache_dir", None)}
    return claim_output(config.output_dir, command="train", overwrite=overwrite, inputs=inputs,
                        field="output_dir", recognize=is_run_folder)
