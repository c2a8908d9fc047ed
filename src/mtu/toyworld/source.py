"""A toy-world data source: map-style dataset of the data layer's example dicts, generated on the fly, registered as
the data format "toyworld" (`FORMAT`, announced in the `mtu.data_formats` entry-point group of pyproject.toml, so
the data layer finds it without importing the toy world).

Items are made exactly like those of `mtu.data.dataset.SourceDataset` (through `make_example`), so a toy source
mixes with file-backed ones; the scene of item i is fixed, while per-epoch choices (which edit, which object to
remove, the SR degradation) come from a generator seeded by (seed, epoch, index).
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np
import torch

from ..configuration import JsonConfig, is_int, is_number, must_be
from ..data.config import degradation_from
from ..data.dataset import ExampleDataset
from ..data.degradation import DegradationConfig
from ..data.registry import DataFormat, fields_from_dict, register_format
from ..data.schemas import get_schema
from ..upcycling.tasks import get_task
from .scene import MAX_SIZE, MIN_SIZE, make_scenes
from .tasks import TOY_DEGRADATION, edit_pair, inpaint_pair, sample_edit, sample_removal, sr_pair, t2i_pair

# The schema whose roles each task's fields fill; it decides how `make_example` derives a missing condition.
TASK_SCHEMAS = {"t2i": "captions", "edit": "instructpix2pix", "sr": "sr_highres", "inpaint": "gqa_inpaint",
                "inpaint_mask": "mask_inpaint"}


@dataclass
class ToyWorldConfig(JsonConfig):
    """A toy-world source for one task (a source dict with `format: toyworld`).

    Args:
        task: One of `TASK_SCHEMAS`: "t2i", "edit", "sr", "inpaint" or "inpaint_mask".
        count: Number of distinct scenes (items).
        split: "train", or "test" for held-out scenes (disjoint from every train scene).
        seed: Seed of the scene list and of the per-item random choices.
        resolution: Side R of the rendered images, a multiple of 8 in [32, 128] (renders are crisp at R).
        sr_scale: Downscale factor of the SR degradation; must divide `resolution`.
        max_failure_fraction: Highest tolerated fraction of failed items (`check_failure_rate`).
        degradation: Ranges of the SR degradation (default `TOY_DEGRADATION`, scaled to toy image sizes).
        weight: Mixing ratio of this source relative to the others (> 0); used by the trainer's sampler.
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
    format: Literal["toyworld"] = "toyworld"

    def __post_init__(self):
        if self.format != "toyworld":
            raise must_be("format", "'toyworld' for a ToyWorldConfig", self.format)
        if self.task not in TASK_SCHEMAS:
            raise must_be("task", f"one of {tuple(TASK_SCHEMAS)}", self.task)
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
        self.task = get_task(config.task)
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
        scene, size, task = self.scenes[index], self.config.resolution, self.config.task
        if task == "t2i":
            fields = t2i_pair(scene, size)
        elif task == "edit":
            fields = edit_pair(sample_edit(scene, rng), size)
        elif task == "sr":
            fields = sr_pair(scene, size)
        elif task in ("inpaint", "inpaint_mask"):
            fields = inpaint_pair(sample_removal(scene, rng), size)
            if task == "inpaint_mask":
                # Classic inpainting: the masked target is the input, the prompt describes the whole target.
                fields = {"target": fields["target"], "mask": fields["mask"], "prompt": fields["output_caption"]}
        else:
            raise AssertionError(f"task {task!r} passed ToyWorldConfig's check")
        return fields, torch.Generator().manual_seed(int(rng.integers(2 ** 63)))


FORMAT = register_format(DataFormat("toyworld", ToyWorldConfig, ToyWorldDataset,
                                    "scenes of the embedded toy world, rendered on the fly (mtu.toyworld)"))
