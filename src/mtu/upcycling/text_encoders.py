"""Task text encoders: a task's own copy of the base's text encoder, trained with its MTU parts (opt-in).

The paper keeps the text encoder frozen: Stable Diffusion's CLIP has read instruction-like text. A base whose
encoder never read a task's words (the toy world's, whose captions hold no instruction verbs) gives that task
prompts the frozen encoder cannot tell apart; docs/DIAGNOSIS.md ("Seventeenth round") measured that a copy of the
encoder read and trained by edit samples alone lifts edits, the other tasks level. Like the task LayerNorms and
input convs, the copy belongs to one task: each task's deployed model keeps the base's size and FLOPs (its text
encoder replaces the base's), and the bundle grows by one encoder per listed task.

On disk an adapter folder holds each as a stock transformers folder, `text_encoders/<task>/` (config.json and
model.safetensors), and `mtu_config.json` lists them as "task_text_encoders"; a task's diffusers or ONNX export
writes its own as the pipeline's `text_encoder`. SD 1.x/2.x bases only (SDXL has two encoders).
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

from ..errors import InputError

TEXT_ENCODERS_DIR = "text_encoders"
PREFIX = "text_encoders."  # their parameters' names in the model's state dict


def is_text_encoder_parameter(name: str) -> bool:
    """A task text encoder's parameter (its own learning rate, `optim.text_encoder_lr`; saved in its folder)."""
    return name.startswith(PREFIX)


def check_encoder_tasks(tasks, model_tasks: list[str], field: str) -> list[str]:
    """`tasks` as a list of distinct task names of the model; InputError naming `field` otherwise."""
    if not isinstance(tasks, (list, tuple)) or not all(isinstance(task, str) for task in tasks):
        raise InputError(f"must be a list of task names, got {tasks!r}.", field=field)
    unknown = [task for task in tasks if task not in model_tasks]
    if unknown:
        raise InputError(f"names {unknown[0]!r}, which is not one of the model's tasks {model_tasks}.", field=field)
    if len(set(tasks)) != len(tasks):
        raise InputError(f"has duplicates: {list(tasks)}.", field=field)
    return list(tasks)


def task_copies(base_encoder: nn.Module, tasks: list[str]) -> dict[str, nn.Module]:
    """A trainable copy of `base_encoder` per task (the base's own stays frozen)."""
    return {task: copy.deepcopy(base_encoder).requires_grad_(True) for task in tasks}


def split_state_dict(state_dict: dict[str, torch.Tensor]) -> tuple[dict, dict[str, dict[str, torch.Tensor]]]:
    """(the UNet adapter's tensors, {task: its text encoder's tensors}) of a model state dict's trainable part."""
    adapter, encoders = {}, {}
    for name, tensor in state_dict.items():
        if is_text_encoder_parameter(name):
            task, _, rest = name[len(PREFIX):].partition(".")
            encoders.setdefault(task, {})[rest] = tensor
        else:
            adapter[name] = tensor
    return adapter, encoders


def text_encoder_folder(directory, task: str) -> Path:
    """Where an adapter folder keeps `task`'s text encoder; InputError when it is not there."""
    folder = Path(directory) / TEXT_ENCODERS_DIR / task
    if not (folder / "config.json").is_file() or not (folder / "model.safetensors").is_file():
        raise InputError(f"{directory} lists a text encoder for task {task!r} (\"task_text_encoders\" in "
                         f"mtu_config.json), but {folder} does not hold one (config.json and model.safetensors).")
    return folder
