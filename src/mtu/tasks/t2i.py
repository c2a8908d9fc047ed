"""Text-to-image ("t2i"): a caption -> the image. Scored by whether the output parses to the caption's scene; the
base model is the reference (no trivial baseline)."""

from __future__ import annotations

import numpy as np

from ..toyworld.evaluate import Example
from ..toyworld.oracle import t2i_faithful
from ..toyworld.scene import caption, render
from ..toyworld.tasks import t2i_pair
from ..upcycling.tasks import TaskSpec
from .base import Evaluation, Task, register
from .sampling import TaskDefaults


def heldout_example(task, scene, rng, *, index, seed, size, sr_scale) -> Example:
    return Example(task, caption(scene), None, render(scene, size), scene)


def score(examples, outputs) -> dict[str, float]:
    return {"faithfulness": float(np.mean([t2i_faithful(o, e.target_scene) for o, e in zip(outputs, examples)]))}


def record(example, output, parsed, record: dict) -> None:
    """Nothing beyond every task's "exact" (parses to the caption's scene) and attributes."""


TASK = register(Task(
    TaskSpec("t2i", "text-to-image generation", uses_prompt=True),
    schemas=("captions", "coco_captions"),
    toy_pair=lambda scene, size, rng: t2i_pair(scene, size),
    evaluation=Evaluation(heldout_example, score, record, main_metric="faithfulness", main_record="exact",
                          baseline_name="base model", baseline=None,
                          card_fields=("exact",), seed_index=0),
    # Appendix A.2: 20 steps for SDv1.5, 50 for SDXL.
    defaults={"sd": TaskDefaults("text", 20, guidance_scale=7.5), "sdxl": TaskDefaults("text", 50, guidance_scale=5.0)},
    colour="#1f77b4",
))
