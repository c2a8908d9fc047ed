"""A toy-world data source: map-style dataset of the data layer's example dicts, generated on the fly, registered as
the data format "toyworld" (`FORMAT`, announced in the `mtu.data_formats` entry-point group of pyproject.toml, so
the data layer finds it without importing the toy world).

Items are made exactly like those of `mtu.data.dataset.SourceDataset` (through `make_example`), so a toy source
mixes with file-backed ones; the scene of item i is fixed, while per-epoch choices (which edit, which object to
remove, the SR degradation) come from a generator seeded by (seed, epoch, index).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np
import torch

from ..configuration import JsonConfig, is_int, is_number, must_be
from ..errors import InputError
from ..data.config import degradation_from
from ..data.dataset import ExampleDataset
from ..data.degradation import DegradationConfig
from ..data.registry import DataFormat, fields_from_dict, register_format
from ..data.schemas import get_schema
from ..tasks.base import task_plugin
from ..upcycling.tasks import available_tasks
from .scene import MAX_SIZE, MIN_SIZE, make_scenes
from .tasks import TOY_DEGRADATION, kind_weights


class _ToySchemas(Mapping):
    """{task: the schema whose roles its toy-world pairs fill} over the registered tasks with a toy world (a `Task`
    with `toy_pair`); the schema decides how `make_example` derives a missing condition. Looked up when read."""

    def __getitem__(self, task: str) -> str:
        plugin = task_plugin(task) if task in available_tasks() else None
        if plugin is None or plugin.toy_pair is None:
            raise KeyError(task)
        return plugin.schemas[0]

    def __iter__(self):
        return iter(name for name in available_tasks() if task_plugin(name).toy_pair is not None)

    def __len__(self) -> int:
        return sum(1 for _ in self)


TASK_SCHEMAS = _ToySchemas()


@dataclass
class ToyWorldConfig(JsonConfig):
    """A toy-world source for one task (a source dict with `format: toyworld`).

    Args:
        task: A registered task with a toy world (`TASK_SCHEMAS`): "t2i", "edit", "sr", "inpaint", "inpaint_mask"
            or a plug-in's task whose `Task` has a `toy_pair`.
        count: Number of distinct scenes (items).
        split: "train", or "test" for held-out scenes (disjoint from every train scene).
        seed: Seed of the scene list and of the per-item random choices.
        resolution: Side R of the rendered images, a multiple of 8 in [32, 128] (renders are crisp at R).
        sr_scale: Downscale factor of the SR degradation; must divide `resolution`.
        max_failure_fraction: Highest tolerated fraction of failed items (`check_failure_rate`).
        degradation: Ranges of the SR degradation (default `TOY_DEGRADATION`, scaled to toy image sizes).
        weight: Mixing ratio of this source relative to the others (> 0); used by the trainer's sampler.
        edit_kind_weights: Task "edit" only: relative weights of the edit kinds drawn, e.g. `{recolour: 3, move: 3}`
            (a kind left out weighs 1, weight 0 leaves it out; `mtu.toyworld.tasks.sample_edit`); None: uniform
            over the kinds that apply to each scene, as before the option existed.
        format: Always "toyworld" (the registry's name of this config class).
    """

    task: str
    count: int = 10_000
    split: str = "train"
    seed: int = 0
    resolution: int = 32
    sr_scale: int = 2
    max_failure_fraction: float = 0.01
    degradation: DegradationConfig = field(default_factory=lambda: copy.deepcopy(TOY_DEGRADATION))
    weight: float = 1.0
    edit_kind_weights: dict[str, float] | None = None
    format: Literal["toyworld"] = "toyworld"

    def __post_init__(self):
        if self.format != "toyworld":
            raise must_be("format", "'toyworld' for a ToyWorldConfig", self.format)
        if self.task not in TASK_SCHEMAS:
            raise must_be("task", f"one of {tuple(TASK_SCHEMAS)} (a plug-in's task: name its module in the run "
                                  f"file's `plugins:` or with --plugin)", self.task)
        if not is_int(self.count) or self.count < 1:
            raise must_be("count", "an integer >= 1", self.count)
        if self.split not in ("train", "test"):
            raise must_be("split", "one of ('train', 'test')", self.split)
        if not is_int(self.seed) or self.seed < 0:
            raise must_be("seed", "an integer >= 0", self.seed)
        resolution = self.resolution
        if not is_int(resolution) or resolution % 8 or not MIN_SIZE <= resolution <= MAX_SIZE:
            raise must_be("resolution", f"a multiple of 8 in [{MIN_SIZE}, {MAX_SIZE}]", resolution)
        if not is_int(self.sr_scale) or self.sr_scale < 1 or resolution % self.sr_scale:
            raise must_be("sr_scale", f"an integer >= 1 that divides resolution={resolution}", self.sr_scale)
        if not is_number(self.max_failure_fraction) or not 0.0 <= self.max_failure_fraction <= 1.0:
            raise must_be("max_failure_fraction", "a number in [0, 1]", self.max_failure_fraction)
        if not is_number(self.weight) or not self.weight > 0:
            raise must_be("weight", "a finite number > 0", self.weight)
        self.weight = float(self.weight)
        if self.edit_kind_weights is not None:
            if self.task != "edit":
                raise must_be("edit_kind_weights", f"null for task {self.task!r} (edit kinds weigh only the 'edit' "
                                                   f"task's pairs)", self.edit_kind_weights)
            try:
                self.edit_kind_weights = kind_weights(self.edit_kind_weights)
            except ValueError as error:
                raise InputError(str(error), field="edit_kind_weights") from None
        self.degradation = degradation_from(self.degradation)

    @property
    def path(self) -> str:
        """A name for reports (`check_failure_rate` prints the source's path)."""
        return f"toyworld:{self.split}:seed={self.seed}"

    def to_dict(self) -> dict:
        data = asdict(self)
        data["degradation"] = self.degradation.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict) -> ToyWorldConfig:
        """A `format: toyworld` source dict; unknown or missing keys raise `InputError` naming the key."""
        return cls(**fields_from_dict(cls, data, required=("task",)))


class ToyWorldDataset(ExampleDataset):
    """Example dicts of one toy-world task; same interface as `SourceDataset` (get, set_epoch, failures).

    Args:
        config: The source.
        epoch: Initial epoch of the per-epoch random choices.
    """

    def __init__(self, config: ToyWorldConfig, epoch: int = 0):
        self.config = config
        self.plugin = task_plugin(config.task)
        self.task = self.plugin.spec
        self.schema = get_schema(TASK_SCHEMAS[config.task])
        self.scenes = make_scenes(config.seed, config.count, config.split)
        self._start_epochs(epoch)

    def __len__(self) -> int:
        return len(self.scenes)

    def key(self, index: int) -> str:
        return f"toyworld-{self.config.split}-{self.config.seed}-{index}"

    def describe(self) -> dict:
        return {"count": self.config.count, "split": self.config.split, "seed": self.config.seed}

    def load_fields(self, index: int, epoch: int) -> tuple[dict, torch.Generator]:
        """The role -> PIL image / str fields of item `index` in `epoch`, and the generator of the SR degradation."""
        rng = np.random.default_rng([self.config.seed, epoch, index])
        options = {} if self.config.edit_kind_weights is None else {"kind_weights": self.config.edit_kind_weights}
        fields = self.plugin.toy_pair(self.scenes[index], self.config.resolution, rng, **options)
        return fields, torch.Generator().manual_seed(int(rng.integers(2 ** 63)))


FORMAT = register_format(DataFormat("toyworld", ToyWorldConfig, ToyWorldDataset,
                                    "scenes of the embedded toy world, rendered on the fly (mtu.toyworld)"))
