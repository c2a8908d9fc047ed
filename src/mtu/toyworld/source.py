"""A toy-world data source: map-style dataset of the data layer's example dicts, generated on the fly.

Items are made exactly like those of `mtu.data.dataset.SourceDataset` (through `make_example`), so a toy source
mixes with file-backed ones; the scene of item i is fixed, while per-epoch choices (which edit, which object to
remove, the SR degradation) come from a generator seeded by (seed, epoch, index).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import torch

from ..data.dataset import ExampleDataset
from ..data.degradation import DegradationConfig
from ..data.schemas import get_schema
from ..upcycling.tasks import get_task
from .scene import MAX_SIZE, MIN_SIZE, caption, make_scenes
from .tasks import TOY_DEGRADATION, edit_pair, inpaint_pair, sample_edit, sample_removal, sr_pair, t2i_pair

# The schema whose roles each task's fields fill; it decides how `make_example` derives a missing condition.
TASK_SCHEMAS = {"t2i": "captions", "edit": "instructpix2pix", "sr": "sr_highres", "inpaint": "gqa_inpaint",
                "inpaint_mask": "mask_inpaint"}


@dataclass
class ToyWorldConfig:
    """A toy-world source for one task.

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

    def __post_init__(self):
        if isinstance(self.weight, bool) or not isinstance(self.weight, (int, float)) or not self.weight > 0:
            raise ValueError(f"`weight` must be a number > 0, got {self.weight!r}.")
        if isinstance(self.degradation, dict):
            self.degradation = DegradationConfig(**self.degradation)
        if self.task not in TASK_SCHEMAS:
            raise ValueError(f"`task` must be one of {tuple(TASK_SCHEMAS)}, got {self.task!r}.")
        if isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 1:
            raise ValueError(f"`count` must be an integer >= 1, got {self.count!r}.")
        if self.split not in ("train", "test"):
            raise ValueError(f"`split` must be one of ('train', 'test'), got {self.split!r}.")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"`seed` must be an integer >= 0, got {self.seed!r}.")
        resolution = self.resolution
        if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution % 8 or not (
                MIN_SIZE <= resolution <= MAX_SIZE):
            raise ValueError(f"`resolution` must be a multiple of 8 in [{MIN_SIZE}, {MAX_SIZE}], got {resolution!r}.")
        if isinstance(self.sr_scale, bool) or not isinstance(self.sr_scale, int) or self.sr_scale < 1 or (
                resolution % self.sr_scale):
            raise ValueError(f"`sr_scale` must be an integer >= 1 that divides resolution={resolution}, "
                             f"got {self.sr_scale!r}.")
        if not 0.0 <= self.max_failure_fraction <= 1.0:
            raise ValueError(f"`max_failure_fraction` must be in [0, 1], got {self.max_failure_fraction!r}.")

    @property
    def path(self) -> str:
        """A name for reports (`check_failure_rate` prints the source's path)."""
        return f"toyworld:{self.split}:seed={self.seed}"


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
            raise ValueError(f"`task` must be one of {tuple(TASK_SCHEMAS)}, got {task!r}.")
        return fields, torch.Generator().manual_seed(int(rng.integers(2 ** 63)))

    def scene_caption(self, index: int) -> str:
        """Caption of item `index`'s (input) scene, for reports."""
        return caption(self.scenes[index])
