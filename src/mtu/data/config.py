"""`DataSourceConfig`: one file-backed training data source, the task it teaches and how to read it (App. A.1)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal, get_args

from ..configuration import JsonConfig, is_int, is_number, must_be
from ..errors import InputError
from ..upcycling.tasks import available_tasks, get_task
from .degradation import DegradationConfig
from .registry import fields_from_dict, source_from_dict
from .schemas import available_schemas, check_compatible, get_schema, get_schema_or_none

SourceFormat = Literal["folder", "hf", "webdataset"]


@dataclass
class DataSourceConfig(JsonConfig):
    """A file-backed data source for one task; the trainer mixes several by `weight`.

    Args:
        task: Registered task name (`mtu.available_tasks()`), e.g. "t2i", "edit", "sr", "inpaint".
        format: "folder" (a folder with `metadata.jsonl`), "hf" (a `save_to_disk` folder, a folder of .parquet or
            .arrow files, or a hub id when online) or "webdataset" (uncompressed .tar shards). Other formats
            (e.g. "toyworld") have their own config classes; `DataSourceConfig.from_dict` parses them all.
        path: The folder, the hub id, or for "webdataset" a folder of .tar files, a glob or a brace pattern such
            as "shards/train-{000000..000099}.tar".
        schema: Column layout, a registered schema (`mtu.data.SCHEMAS`, see `mtu.data.schemas`; plug-ins add theirs
            with `mtu.data.register_schema`).
        columns: role -> column name overriding the schema's defaults, e.g. {"prompt": "edit_prompt"}. Roles:
            "target", "condition", "mask", "prompt", "input_caption", "output_caption" (those the schema has).
        resolution: Side R of the square crops, a positive multiple of 8 (the VAE downsamples by 8).
        split: Split to read from a `DatasetDict` or hub dataset ("hf"); for a parquet/arrow folder, the
            sub-folder of that name when it exists.
        weight: Mixing ratio of this source relative to the others (> 0); used by the trainer's sampler.
        sr_scale: Downscale factor of the low-resolution input of "sr_highres"; must divide `resolution`.
        max_failure_fraction: Highest tolerated fraction of unreadable samples (`check_failure_rate`).
        seed: Seed of the per-sample random choices (caption, target variant, degradation).
        degradation: Ranges of the SR degradation ("sr_highres" only).
    """

    task: str
    format: SourceFormat
    path: str
    schema: str
    columns: dict[str, str] | None = None
    resolution: int = 512
    split: str = "train"
    weight: float = 1.0
    sr_scale: int = 2
    max_failure_fraction: float = 0.01
    seed: int = 0
    degradation: DegradationConfig = field(default_factory=DegradationConfig)

    def __post_init__(self):
        if self.task not in available_tasks():
            raise InputError(f"unknown task {self.task!r}; registered tasks: {', '.join(available_tasks())}.",
                             field="task")
        if self.format not in get_args(SourceFormat):
            raise must_be("format", f"one of {get_args(SourceFormat)} (other formats have their own config class; "
                                 f"`DataSourceConfig.from_dict` picks it)", self.format)
        if not isinstance(self.path, str) or not self.path:
            raise must_be("path", "a non-empty string", self.path)
        if get_schema_or_none(self.schema) is None:
            raise must_be("schema", f"one of {available_schemas()} (a plug-in's schema: name its module in the run "
                                    f"file's `plugins:` or with --plugin)", self.schema)
        schema = get_schema(self.schema)
        check_compatible(get_task(self.task), schema)
        self._check_columns(schema.roles)
        if not is_int(self.resolution) or self.resolution <= 0 or self.resolution % 8:
            raise must_be("resolution", "a positive multiple of 8", self.resolution)
        if not isinstance(self.split, str) or not self.split:
            raise must_be("split", "a non-empty string such as 'train'", self.split)
        if not is_number(self.weight) or self.weight <= 0:
            raise must_be("weight", "a finite number > 0", self.weight)
        self.weight = float(self.weight)
        if not is_int(self.sr_scale) or self.sr_scale < 1 or self.resolution % self.sr_scale:
            raise must_be("sr_scale", f"an integer >= 1 that divides resolution={self.resolution}", self.sr_scale)
        if not is_number(self.max_failure_fraction) or not 0 <= self.max_failure_fraction <= 1:
            raise must_be("max_failure_fraction", "a number in [0, 1]", self.max_failure_fraction)
        if not is_int(self.seed):
            raise must_be("seed", "an integer", self.seed)
        self.degradation = degradation_from(self.degradation)

    def _check_columns(self, roles: tuple[str, ...]) -> None:
        if self.columns is None:
            return
        if not isinstance(self.columns, dict):
            raise must_be("columns", "None or a mapping role -> column name", self.columns)
        for role, column in self.columns.items():
            if role not in roles:
                raise InputError(f"role {role!r} is not one that schema {self.schema!r} uses; allowed roles: "
                                 f"{list(roles)}.", field="columns")
            if not isinstance(column, str) or not column:
                raise must_be(f"columns.{role}", "a non-empty column name", column)
        self.columns = dict(self.columns)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["degradation"] = self.degradation.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict):
        """Any source dict as its format's config: this class for "folder", "hf" and "webdataset", the registered
        format's config class for any other (`mtu.data.registry`). Unknown or missing keys raise `InputError`."""
        if isinstance(data, dict) and data.get("format") not in get_args(SourceFormat):
            return source_from_dict(data)  # names the registered formats when `format` is none of them
        return cls(**fields_from_dict(cls, data, required=("task", "format", "path", "schema")))


def degradation_from(value) -> DegradationConfig:
    """A `degradation` field (a `DegradationConfig` or its dict) checked; errors name "degradation.<key>"."""
    if isinstance(value, DegradationConfig):
        return value
    if not isinstance(value, dict):
        raise must_be("degradation", "a DegradationConfig or a mapping of its fields", value)
    try:
        return DegradationConfig(**fields_from_dict(DegradationConfig, value))
    except InputError as error:
        raise error.within("degradation") from None
