"""Instruction-driven editing ("edit", InstructPix2Pix): an image and an instruction -> the edited image. Scored by
whether the output parses to the edited scene; the trivial baseline returns the input unchanged."""

from __future__ import annotations

import numpy as np

from ..toyworld.evaluate import Example
from ..toyworld.metrics import PSNR_CAP, preserved
from ..toyworld.oracle import edit_fidelity, edit_success
from ..toyworld.scene import render
from ..toyworld.tasks import edit_pair, sample_edit
from ..upcycling.tasks import TaskSpec
from .base import Evaluation, Intents, Task, register
from .sampling import TaskDefaults


def heldout_example(task, scene, rng, *, index, seed, size, sr_scale) -> Example:
    edit = sample_edit(scene, rng)
    return Example(task, edit.instruction, render(edit.before, size), render(edit.after, size), edit.after, edit)


def score(examples, outputs) -> dict[str, float]:
    fidelity = [min(edit_fidelity(o, e.target), 100.0) for o, e in zip(outputs, examples)]  # identical: capped
    return {"success": float(np.mean([edit_success(o, e.target_scene) for o, e in zip(outputs, examples)])),
            "fidelity_psnr": float(np.mean(fidelity))}


def record(example, output, parsed, record: dict) -> None:
    edit = example.edit
    record.update(preserved=preserved(parsed, edit), copied=parsed == edit.before,
                  fidelity_psnr=min(edit_fidelity(output, example.target), PSNR_CAP))
    record.update(kind=edit.kind, success=record["exact"])


def identity(example):
    return example.image.copy()


TASK = register(Task(
    TaskSpec("edit", "instruction-driven image editing (InstructPix2Pix)", image_inputs=("image",)),
    schemas=("instructpix2pix",),
    toy_pair=lambda scene, size, rng, kind_weights=None: edit_pair(sample_edit(scene, rng, weights=kind_weights),
                                                                   size),
    evaluation=Evaluation(heldout_example, score, record, main_metric="success", main_record="success",
                          baseline_name="identity (input unchanged)", baseline=identity,
                          card_fields=("success", "preserved", "fidelity_psnr"), seed_index=1),
    # Appendix A.2: InstructPix2Pix dual guidance.
    defaults={"sd": TaskDefaults("dual", 20, guidance_scale=7.5, image_guidance_scale=1.6),
              "sdxl": TaskDefaults("dual", 50, guidance_scale=10.0, image_guidance_scale=1.5)},
    intents=Intents(("make it|the|them|this|everything|all", "turn", "change", "recolour|recolor",
                     "colour|color the|it|them|everything", "paint the|it|them|everything", "move", "shift",
                     "relocate", "reposition", "slide", "add", "put", "place", "insert",
                     "add|put|place|insert another|new|different one", "swap", "replace", "edit", "modify",
                     "adjust", "tweak", "switch", "instead", "should be", "give it", "rotate", "flip", "mirror",
                     "shrink", "grow", "resize"),
                    verb="keep", priority=0),
    metrics=("clip_directional", "clip_image"),
    colour="#d62728",
))
