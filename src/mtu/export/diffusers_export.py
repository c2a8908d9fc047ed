"""One task of an MTU pipeline as a stock diffusers pipeline folder, which `DiffusionPipeline.from_pretrained` runs
without mtu installed.

The whole pipeline, not the bare UNet (`mtu fold` writes that): someone deploying a task wants one folder to load
and call. It is the pipeline `MTUPipeline.fold(task)` gives: StableDiffusionPipeline for a text-only task,
StableDiffusionInstructPix2PixPipeline for an image task (edit, sr, inpaint), StableDiffusionInpaintPipeline for a
mask task (inpaint_mask), and their SDXL counterparts; the base's VAE, text encoder(s), tokenizer(s), scheduler
and (SD) safety checker with it. `mtu_task.json` beside model_index.json records the task and the arguments that
sample it as the MTU pipeline does (diffusers' pipelines have their own defaults).
"""

from __future__ import annotations

import json
from importlib.metadata import version
from pathlib import Path

import torch

TASK_RECORD = "mtu_task.json"
TORCH_DTYPES = {"fp32": torch.float32, "fp16": torch.float16}
NOTES = {
    "sr": "give the empty prompt and the low-resolution image resized (bicubic) to the output size "
          "(mtu.conditioning.upsample_for_sr)",
    "mask": "diffusers' inpainting pipeline samples the masked-image latents where MTU takes their mode, so it "
            "matches MTUPipeline only approximately",
}


def write_diffusers_pipeline(pipe, task: str, folder, dtype: str = "fp32") -> dict:
    """Writes `task` of the MTU pipeline `pipe` as a stock diffusers pipeline into `folder` (safetensors, in
    `dtype`); returns the record written to `mtu_task.json`. `pipe`'s shared components are cast to `dtype`."""
    folded = pipe.fold(task)
    if dtype != "fp32":
        folded.to(TORCH_DTYPES[dtype])
    folded.save_pretrained(folder, safe_serialization=True)
    spec = pipe.unet.task_specs[pipe.unet.task_index(task)]
    note = NOTES.get(spec.name) or (NOTES["mask"] if "mask" in spec.image_inputs else None)
    record = {"format": "mtu-diffusers-task", "mtu_version": version("mtu-diffusion"), "task": spec.name,
              "spec": spec.to_dict(), "pipeline": type(folded).__name__, "dtype": dtype,
              "call_kwargs": pipe.task_defaults(task).call_kwargs(), **({"note": note} if note else {})}
    (Path(folder) / TASK_RECORD).write_text(json.dumps(record, indent=2) + "\n")
    return record
