"""Super-resolution ("sr"): a degraded low-resolution image -> the image at `sr_scale` times its size, without a
prompt. Scored by PSNR (and SSIM) to the exact render; the trivial baseline is bicubic upsampling."""

from __future__ import annotations

import numpy as np
from PIL import Image

from ..toyworld.evaluate import Example
from ..toyworld.metrics import PSNR_CAP
from ..toyworld.oracle import sr_psnr, sr_ssim
from ..toyworld.scene import render
from ..toyworld.tasks import sr_input, sr_pair
from ..upcycling.tasks import TaskSpec
from .base import Evaluation, Intents, Task, register
from .sampling import TaskDefaults


def heldout_example(task, scene, rng, *, index, seed, size, sr_scale) -> Example:
    target = render(scene, size)
    return Example(task, None, sr_input(target, seed=seed + index, scale=sr_scale), target, scene)


def score(examples, outputs) -> dict[str, float]:
    return {"psnr": float(np.mean([sr_psnr(o, e.target) for o, e in zip(outputs, examples)])),
            "ssim": float(np.mean([sr_ssim(o, e.target) for o, e in zip(outputs, examples)]))}


def record(example, output, parsed, record: dict) -> None:
    record.update(read_back=record["exact"], psnr=min(sr_psnr(output, example.target), PSNR_CAP),
                  ssim=sr_ssim(output, example.target))


def bicubic(example):
    return example.image.resize(example.target.size, Image.BICUBIC)


TASK = register(Task(
    TaskSpec("sr", "x2 super-resolution from a degraded low-resolution image", uses_prompt=False,
             image_inputs=("image",)),
    schemas=("sr_highres",),
    toy_pair=lambda scene, size, rng: sr_pair(scene, size),
    evaluation=Evaluation(heldout_example, score, record, main_metric="psnr", main_record="psnr",
                          baseline_name="bicubic upsampling", baseline=bicubic,
                          card_fields=("psnr", "ssim", "read_back"), seed_index=2),
    # Appendix A.2: SR without guidance and with the empty prompt.
    defaults={"sd": TaskDefaults("none", 20, sr_scale=2), "sdxl": TaskDefaults("none", 50, sr_scale=2)},
    intents=Intents(("upscale", "upsample", "upres", "upsize", "super resolution|resolve|res", "superres",
                     "sharp", "sharpen", "crisp", "clarity", "enhance", "resolution", "res", "hires", "lowres",
                     "hd", "uhd", "4k", "1080p", "2x", "zoom", "magnify", "enlarge", "scale * up", "blow * up",
                     "blur", "deblur", "unblur", "fuzz", "focus", "unfocused", "denoise", "noise", "grain",
                     "pixel", "pixelate", "pixelation", "artifact|artefact", "jaggies|jagged", "quality",
                     "detail", "restore", "improve it|this", "improve the image|picture|photo",
                     "it|image|picture|photo|pic|drawing|everything * big|large|huge|clear|soft|hazy|muddy",
                     "this big|large|huge|clear|soft|hazy|muddy", "times big|large",
                     "twice|double the size|resolution", "it's|its|it|this|image|picture|photo too small|tiny",
                     "it|this|image|picture|photo is|looks|seems too small|tiny",
                     # the blur removed is sr, not inpaint's "remove" (a phrase inside a longer one yields to it)
                     *(f"{ask} * blur|noise|grain|pixel|pixelation|artifact|artefact|fuzz|jaggies" for ask in (
                         "remove|reduce|erase|delete|eliminate|lose|drop|clear|clean|wipe|fix|cut|without|less",
                         "no more", "get rid of", "rid of"))),
                    verb="drop", priority=2),
    metrics=("lpips", "psnr", "ssim"),
    colour="#2ca02c",
))
