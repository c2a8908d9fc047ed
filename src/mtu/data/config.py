"""`DataSourceConfig`: one training data source, the task it teaches and how to read it (App. A.1)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Literal, get_args

from ..configuration import JsonConfig, known_fields
from ..upcycling.tasks import get_task
from .degradation import DegradationConfig
from .schemas import SCHEMAS, check_compatible, get_schema

SourceFormat = Literal["folder", "hf", "webdataset"]
SchemaName = Literal["coco_captions", "instructpix2pix", "gqa_inpaint", "mask_inpaint", "sr_highres", "captions"]


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass
class DataSourceConfig(JsonConfig):
    """A data source for one task; the trainer mixes several by `weight`.

    Args:
        task: Registered task name (`mtu.available_tasks()`), e.g. "t2i", "edit", "sr", "inpaint".
        format: "folder" (a folder with `metadata.jsonl`), "hf" (a `save_to_disk` folder, a folder of .parquet or
            .arrow files, or a hub id when online) or "webdataset" (uncompressed .tar shards).
        path: The folder, the hub id, or for "webdataset" a folder of .tar files, a glob or a brace pattern such
            as "shards/train-{000000..000099}.tar".
        schema: Column layout, one of `mtu.data.SCHEMAS` (see `mtu.data.schemas`).
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
    schema: SchemaName
    columns: dict[str, str] | None = None
    resolution: int = 512
    split: str = "train"
    weight: float = 1.0
    sr_scale: int = 2
    max_failure_fraction: float = 0.01
    seed: int = 0
    degradation: DegradationConfig = field(default_factory=DegradationConfig)

    def __post_init__(self):
        task = get_task(self.task)  # raises naming the unknown task and the registered ones
        if self.format not in get_args(SourceFormat):
            raise ValueError(f"`format` must be one of {get_args(SourceFormat)}, got {self.format!r}.")
        if not isinstance(self.path, str) or not self.path:
            raise ValueError(f"`path` must be a non-empty string, got {self.path!r}.")
        if self.schema not in SCHEMAS:
            raise ValueError(f"`schema` must be one of {tuple(SCHEMAS)}, got {self.schema!r}.")
        schema = get_schema(self.schema)
        check_compatible(task, schema)
        self._check_columns(schema.roles)
        if not _is_int(self.resolution) or self.resolution <= 0 or self.resolution % 8:
            raise ValueError(f"`resolution` must be a positive multiple of 8, got {self.resolution!r}.")
        if not isinstance(self.split, str) or not self.split:
            raise ValueError(f"`split` must be a non-empty string such as 'train', got {self.split!r}.")
        if not _is_number(self.weight) or self.weight <= 0:
            raise ValueError(f"`weight` must be a finite number > 0, got {self.weight!r}.")
        self.weight = float(self.weight)
        if not _is_int(self.sr_scale) or self.sr_scale < 1 or self.resolution % self.sr_scale:
            raise ValueError(f"`sr_scale` must be an integer >= 1 that divides resolution={self.resolution}, "
                             f"got {self.sr_scale!r}.")
        if not _is_number(self.max_failure_fraction) or not 0 <= self.max_failure_fraction <= 1:
            raise ValueError(f"`max_failure_fraction` must be a number in [0, 1], got {self.max_failure_fraction!r}.")
        if not _is_int(self.seed):
            raise ValueError(f"`seed` must be an integer, got {self.seed!r}.")
        if isinstance(self.degradation, dict):
            self.degradation = _degradation_from_dict(self.degradation)
        if not isinstance(self.degradation, DegradationConfig):
            raise ValueError(f"`degradation` must be a DegradationConfig or a dict, got {self.degradation!r}.")

    def _check_columns(self, roles: tuple[str, ...]) -> None:
        if self.columns is None:
            return
        if not isinstance(self.columns, dict):
            raise ValueError(f"`columns` must be None or a dict role -> column name, got {self.columns!r}.")
        for role, column in self.columns.items():
            if role not in roles:
                raise ValueError(f"`columns` has role {role!r}, which schema {self.schema!r} does not use; "
                                 f"allowed roles: {list(roles)}.")
            if not isinstance(column, str) or not column:
                raise ValueError(f"`columns[{role!r}]` must be a non-empty column name, got {column!r}.")
        self.columns = dict(self.columns)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["degradation"] = self.degradation.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "DataSourceConfig":
        missing = [name for name in ("task", "format", "path", "schema") if name not in data]
        if missing:
            raise ValueError(f"DataSourceConfig: missing required key(s) {missing}; got keys {sorted(data)}.")
        return cls(**known_fields(cls, data))


def _degradation_from_dict(data: dict) -> DegradationConfig:
    return DegradationConfig(**known_fields(DegradationConfig, data))
