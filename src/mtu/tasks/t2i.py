"""Text-to-image ("t2i"): a caption -> the image. Scored by whether the output parses to the caption's scene; the
base model is the reference (no trivial baseline)."""

from __future__ import annotations

import numpy as np

from ..toyworld.evaluate import Example
from ..toyworld.oracle import t2i_faithful
from ..toyworld.scene import caption, render
from ..toyworld.tasks import t2i_pair
from ..upcycling.tasks import TaskSpec
from .base import Evaluation, Intents, Task, register
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
    intents=Intents(("draw", "draw me", "generate", "create", "render", "sketch", "imagine", "illustrate",
                     "visualise|visualize", "depict", "design", "produce", "paint a|an|me", "make a|an|me",
                     "give me", "show a|an|me|us", "a|an picture|image|photo|drawing|pic of|with",
                     "picture|image|photo|drawing|painting|illustration|pic of|with|showing|featuring|containing",
                     "new|another|different|fresh|next one|image|picture|pic|photo|drawing|scene|canvas",
                     "something new|else|different", "fresh start", "start over|again|anew|afresh|fresh",
                     "from scratch", "begin again|anew"),
                    verb="drop", priority=1),
    metrics=("fid", "kid", "clip_score"),  # Sec. 6 "Metrics" (`mtu eval`)
    colour="#1f77b4",
))
