"""Instruction-driven object removal ("inpaint", GQA-Inpaint / Inst-Inpaint): an image and "remove the X" -> the
image without it. Scored by whether the object is gone and the rest parses to the target scene; the trivial
baseline returns the input unchanged."""

from __future__ import annotations

import numpy as np

from ..toyworld.evaluate import Example
from ..toyworld.metrics import PSNR_CAP, preserved
from ..toyworld.oracle import edit_fidelity, inpaint_preserved, inpaint_removed
from ..toyworld.scene import render
from ..toyworld.tasks import inpaint_pair, sample_removal
from ..upcycling.tasks import TaskSpec
from .base import Evaluation, Intents, Task, register
from .edit import identity
from .sampling import TaskDefaults


def heldout_example(task, scene, rng, *, index, seed, size, sr_scale) -> Example:
    edit = sample_removal(scene, rng)
    return Example(task, edit.instruction, render(edit.before, size), render(edit.after, size), edit.after, edit)


def score(examples, outputs) -> dict[str, float]:
    fidelity = [min(edit_fidelity(o, e.target), 100.0) for o, e in zip(outputs, examples)]  # identical: capped
    removed = [inpaint_removed(o, e.edit.shape) for o, e in zip(outputs, examples)]
    kept = [inpaint_preserved(o, e.target) for o, e in zip(outputs, examples)]
    return {"success": float(np.mean([r and p for r, p in zip(removed, kept)])),
            "removed": float(np.mean(removed)), "preserved": float(np.mean(kept)),
            "fidelity_psnr": float(np.mean(fidelity))}


def record(example, output, parsed, record: dict) -> None:
    edit = example.edit
    record.update(preserved=preserved(parsed, edit), copied=parsed == edit.before,
                  fidelity_psnr=min(edit_fidelity(output, example.target), PSNR_CAP))
    # evaluate.score's inpaint "preserved" is "parses to the target's scene", i.e. exact here.
    removed = inpaint_removed(output, edit.shape)
    record.update(removed=removed, success=removed and record["exact"])


TASK = register(Task(
    TaskSpec("inpaint", "instruction-driven object removal (GQA-Inpaint / Inst-Inpaint)", image_inputs=("image",)),
    schemas=("gqa_inpaint",),
    toy_pair=lambda scene, size, rng: inpaint_pair(sample_removal(scene, rng), size),
    evaluation=Evaluation(heldout_example, score, record, main_metric="success", main_record="success",
                          baseline_name="identity (input unchanged)", baseline=identity,
                          card_fields=("success", "removed", "preserved"), seed_index=3),
    defaults={"sd": TaskDefaults("dual", 20, guidance_scale=4.0, image_guidance_scale=1.5),
              "sdxl": TaskDefaults("dual", 50, guidance_scale=4.0, image_guidance_scale=1.5)},
    intents=Intents(("remove", "removal", "erase", "delete", "eliminate", "get rid of", "rid of",
                     "take * away|out|off", "get * out|off|away", "clear * out|away|off", "wipe * out|away|off",
                     "wipe", "lose", "ditch", "drop", "discard", "omit", "exclude", "hide", "vanish", "disappear",
                     "make * go away", "go away", "gone", "no more", "no longer", "without",
                     "don't|dont want|need", "do not want|need", "has|have|needs|need|got to go", "must go",
                     "gotta go", "cut * out|off|away", "crop * out", "strip * out|off|away", "throw * away|out",
                     "do away with", "leave * out", "paint over|out", "blank * out", "scrub * out|off|away"),
                    verb="remove", priority=3),
    metrics=("clip_image_directional", "lpips_inside", "lpips_outside"),
    colour="#9467bd",
))
