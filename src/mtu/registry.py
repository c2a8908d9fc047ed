"""`Registry`: the one mechanism behind every name -> plug-in table (tasks, data schemas, source formats).

A registry holds its items by name and fills itself on the first look-up, once: it imports its built-in modules
by name (importlib, so the registry never imports what registers into it) and loads its entry-point group, where
installed packages announce their plug-ins. An entry point names a module (`my_package.my_task`: importing it
registers) or an object (`my_package.formats:FORMAT`: handed to `add_loaded`). A user's module not installed is
imported by `mtu.plugins.load_plugins` (`plugins:` in a run file, `--plugin` on the command line).
"""

from __future__ import annotations

import types
from collections.abc import Callable
from importlib import import_module, metadata


class Registry:
    """Items of one kind by name.

    Args:
        kind: What the items are, for messages ("task", "schema", "format").
        entry_point_group: The entry-point group installed packages announce items in.
        builtin_modules: Modules imported (in order) on the first look-up; each registers its items.
        add_loaded: Registers an object an entry point names (the registry's own `register` function, with its
            checks); None: entry points must name modules.
    """

    def __init__(self, kind: str, entry_point_group: str, builtin_modules: tuple[str, ...] = (),
                 add_loaded: Callable | None = None):
        self.kind = kind
        self.entry_point_group = entry_point_group
        self.builtin_modules = tuple(builtin_modules)
        self.add_loaded = add_loaded
        self.items: dict[str, object] = {}
        self.origins: dict[str, str] = {}  # name -> the plug-in module that registered it
        self._loaded = False

    def load(self) -> None:
        """Imports the built-in modules and loads the entry points, once."""
        if self._loaded:
            return
        self._loaded = True
        for module in self.builtin_modules:
            import_module(module)
        for entry_point in metadata.entry_points(group=self.entry_point_group):
            if entry_point.name in self.items:
                continue
            before = set(self.items)
            loaded = entry_point.load()
            if not isinstance(loaded, types.ModuleType):
                assert self.add_loaded is not None, f"{self.kind} entry points must name modules"
                self.add_loaded(loaded)
            self.note_origin(set(self.items) - before, entry_point.value.split(":")[0])

    def note_origin(self, names, module: str) -> None:
        for name in names:
            self.origins.setdefault(name, module)

    def names(self) -> tuple[str, ...]:
        self.load()
        return tuple(self.items)

    def __contains__(self, name) -> bool:
        self.load()
        return name in self.items

    def get(self, name):
        """The item called `name`, or None (the caller raises, in its own words)."""
        if name not in self.items:
            self.load()  # only when needed: a plug-in's module is imported when something names its item
        return self.items.get(name)

    def put(self, name: str, item, conflict=None, *, overwrite: bool = False) -> None:
        """Registers `item` as `name`; the same item again is a no-op. Another item of that name is replaced when
        `overwrite`, else refused: `conflict(known)` makes the error, by default `InputError` "<kind> 'name' is
        already registered as <known>; pass `overwrite=True` to replace it"."""
        known = self.items.get(name)
        if not overwrite and known is not None and known != item:
            if conflict is None:
                from .errors import InputError

                described = repr(known) if len(repr(known)) <= 160 else f"another {type(known).__name__}"
                raise InputError(f"{self.kind} {name!r} is already registered as {described}; pass `overwrite=True` "
                                 f"to replace it.")
            raise conflict(known)
        self.items[name] = item
