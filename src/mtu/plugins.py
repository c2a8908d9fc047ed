"""User plug-ins: importing a user's module (a task, a schema, a source format) before a config is checked.

A plug-in is a Python module that registers things when imported: `mtu.tasks.register(Task(...))`,
`mtu.data.register_schema(Schema(...))`, `mtu.data.register_format(DataFormat(...))`. It is named by an importable
module path (`my_package.my_task`) or a file (`tasks/colorize.py`), in a run file's `plugins:` or with `--plugin` on
the command line; installed packages announce theirs in the entry-point groups `mtu.tasks` and `mtu.data_formats`
instead. The tasks a plug-in registers remember it (`mtu.upcycling.tasks.task_origin`), and an adapter trained on
them records it, so that loading the adapter without the plug-in names the module in one line.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path

from .errors import InputError
from .upcycling.tasks import available_tasks, record_origin


def _is_file(name: str) -> bool:
    return name.endswith(".py") or os.sep in name or "/" in name


def _import(name: str, field: str):
    if _is_file(name):
        path = Path(name).expanduser().resolve()
        if not path.is_file():
            raise InputError(f"plug-in file {name!r} does not exist.", field=field)
        module_name = path.stem
        if module_name in sys.modules and getattr(sys.modules[module_name], "__file__", None) == str(path):
            return sys.modules[module_name]
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[module_name]
            raise
        return module
    if not all(part.isidentifier() for part in name.split(".")):
        raise InputError(f"must be a module path such as 'my_package.my_task' or a .py file, got {name!r}.",
                         field=field)
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        if error.name is None or not name.startswith(error.name):
            raise  # the plug-in itself imports something missing: its traceback is the useful message
        if os.getcwd() not in sys.path:  # as `python -m` would: modules of the current folder
            sys.path.insert(0, os.getcwd())
            return _import(name, field)
        raise InputError(f"plug-in module {name!r} cannot be imported: no module {error.name!r} on the Python path "
                         f"(install it, add its folder to PYTHONPATH, or give its .py file).", field=field) from None


def check_plugins(value, field: str = "plugins") -> list[str]:
    """`value` checked as a list of plug-in names (module paths or .py files)."""
    if value is None:
        return []
    if not isinstance(value, (list, tuple)) or not all(isinstance(item, str) and item for item in value):
        raise InputError(f"must be a list of module paths or .py files such as ['my_package.my_task'], got "
                         f"{value!r}.", field=field)
    return list(value)


def load_plugins(names, field: str = "plugins") -> list[str]:
    """Imports each plug-in of `names` (module paths or .py files) once, in order, and notes which tasks each
    registered; returns the names. Raises `InputError` naming a plug-in that cannot be found, or that registers
    something mtu refuses (a task that clashes with a registered one, a malformed `Task`)."""
    names = check_plugins(names, field)
    for index, name in enumerate(names):
        before = set(available_tasks())
        try:
            _import(name, f"{field}[{index}]")
        except InputError as error:
            if error.field == f"{field}[{index}]":
                raise
            raise InputError(f"plug-in {name!r} registers something mtu refuses: {error}",
                             field=f"{field}[{index}]") from None
        record_origin(set(available_tasks()) - before, name)
    return names
