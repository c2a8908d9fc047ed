"""Source formats as a registry: a format name -> its typed config class and its dataset class.

The data layer registers the formats it reads from files ("folder", "hf", "webdataset", in `mtu.data.dataset`).
Any other package registers its own with `register_format`, and makes it findable without being imported first
through the entry-point group `mtu.data_formats` (the toy world's "toyworld", in pyproject.toml):

    [project.entry-points."mtu.data_formats"]
    toyworld = "mtu.toyworld.source:FORMAT"          # a `DataFormat`

so the data layer never names the packages that add formats. `source_from_dict` is the one parser of a source
dict: it dispatches on `format`.

A format's config class is a dataclass with the fields `format`, `task`, `resolution`, `weight` and
`max_failure_fraction`, a `path` (field or property: the source's name in reports), `to_dict()` (with `format`) and a
`from_dict(dict)` classmethod that raises `InputError` with `field` relative to the source (e.g. "schema"). Its
dataset class is an `mtu.data.dataset.ExampleDataset` built as `dataset_class(config, epoch=...)`; `validate_source`
reads any of them through that interface.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass

from ..errors import InputError
from ..registry import Registry

ENTRY_POINT_GROUP = "mtu.data_formats"


@dataclass(frozen=True)
class DataFormat:
    """One source format.

    Args:
        name: The value of a source's `format`.
        config_class: The source's typed config (see the module docstring for what it provides).
        dataset_class: `ExampleDataset` subclass; `dataset_class(config, epoch=0)` opens the source.
        description: One line for `available_formats` and error messages.
    """

    name: str
    config_class: type
    dataset_class: type
    description: str = ""


# The formats by name (`mtu.registry.Registry`, the mechanism of the task and schema registries too); an entry point
# names a `DataFormat`, registered with `register_format`'s checks.
FORMATS = Registry("format", ENTRY_POINT_GROUP, add_loaded=lambda data_format: register_format(data_format))


def register_format(data_format: DataFormat) -> DataFormat:
    """Makes `data_format` a value of `format` in every source dict; registering the same one again is a no-op.

    Raises:
        InputError: when another format of that name is registered already.
    """
    if not isinstance(data_format, DataFormat):
        raise InputError(f"must be a DataFormat, got {type(data_format).__name__}.", field="data_format")
    FORMATS.put(data_format.name, data_format, conflict=lambda known: InputError(
        f"format {data_format.name!r} is registered already, by {known.config_class.__module__}.",
        field="data_format.name"))
    return data_format


def available_formats() -> tuple[str, ...]:
    """Names of every registered format, those of installed plug-ins included."""
    return FORMATS.names()


def get_format(name) -> DataFormat:
    """The format called `name`; raises `InputError` (field "format") naming the registered ones."""
    data_format = FORMATS.get(name)  # loads the entry points only when `name` is not registered yet
    if data_format is None:
        raise InputError(f"must be one of {available_formats()}, got {name!r}. Other packages add formats with "
                         f"`mtu.data.register_format` or the {ENTRY_POINT_GROUP!r} entry-point group.",
                         field="format")
    return data_format


def fields_from_dict(cls, data, required: tuple[str, ...] = ()) -> dict:
    """The keyword arguments of dataclass `cls` that `data` gives, checked: an unknown key (naming the nearest
    valid one) or a missing required key raises `InputError` whose `field` is that key."""
    if not isinstance(data, dict):
        raise InputError(f"must be a mapping of {cls.__name__} fields, got {type(data).__name__} {data!r}.")
    names = [item.name for item in dataclasses.fields(cls) if item.init]
    for key in data:
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise InputError(f"unknown key; {hint}{cls.__name__} keys: {', '.join(names)}.", field=str(key))
    for key in required:
        if key not in data:
            raise InputError(f"required by {cls.__name__}, but missing; keys given: {sorted(map(str, data))}.",
                             field=key)
    return dict(data)


def source_from_dict(data):
    """Any source dict as its format's typed config (`DataSourceConfig` for "folder", "hf", "webdataset").

    Raises:
        InputError: with `field` relative to the source ("format", "schema", "degradation.jpeg_quality", ...);
            a caller holding a list of sources adds its place with `error.within("data[2]")`.
    """
    if not isinstance(data, dict):
        raise InputError(f"a data source must be a mapping such as {{format: folder, task: t2i, ...}}, got "
                         f"{type(data).__name__} {data!r}.")
    if "format" not in data:
        raise InputError(f"required, one of {available_formats()}; keys given: {sorted(map(str, data))}.",
                         field="format")
    return get_format(data["format"]).config_class.from_dict(data)
