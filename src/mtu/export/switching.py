"""`TaskSwitchingUNet`: every task of an MTU model served by one stock diffusers UNet, switched in place.

A task's folded form (Sec. 5; `mtu.fold`) differs from another task's only in (a) each upcycled block's FFN: the
task's top-k experts of G * d_ffn units each, with its task LayerNorm's affine folded into their first projection
and its router weights into their output projection, one dense FFN of width d_ffn when top_k x G <= 1; and (b) its
input conv (4, 8 or 9 channels). Everything else (attention, ResNets, norms, FFNs outside `target_blocks`) is
shared, held once, and is the MTU model's own tensors (no copy).
"""

from __future__ import annotations

import copy
from typing import Literal, get_args

import torch
from torch import nn

from ..errors import InputError
from ..upcycling.fold import folded_ffns, input_conv, stock_unet
from ..upcycling.layer import MTUFeedForward
from ..upcycling.model import MTUModel

Keep = Literal["folded", "experts"]
# The parameters of a diffusers `FeedForward` that folding writes (`MTUFeedForward.folded_state`'s keys).
FFN_SLOTS = ("net.0.proj.weight", "net.0.proj.bias", "net.2.weight", "net.2.bias")


def check_foldable(model: MTUModel, what: str) -> None:
    """Raises `InputError` in one line where the model's tasks cannot fold into a stock UNet (top_k x G > 1)."""
    config = model.mtu_config
    active = config.top_k or config.num_experts
    if active * config.granularity > 1 + 1e-9:
        raise InputError(f"{what} needs each task to fold into a stock UNet, and this model's {active} active experts "
                         f"x G={config.granularity:g} are wider than the base FFN (top_k x G must be <= 1).")


def _slot(module: nn.Module, key: str) -> tuple[nn.Module, str]:
    """(owning module, attribute) of a dotted parameter name inside `module`."""
    path, _, name = key.rpartition(".")
    return module.get_submodule(path), name


def _flat(ffns: dict[str, dict[str, torch.Tensor]]) -> list[torch.Tensor]:
    """`folded_ffns`' tensors in `_slots` order: per upcycled block, its `FFN_SLOTS`."""
    return [ffn[key].detach().clone() for ffn in ffns.values() for key in FFN_SLOTS]


class TaskSwitchingUNet(nn.Module):
    """A stock `UNet2DConditionModel` (`.unet`) that serves every task of an MTU model; `set_task` switches it.

        switcher = TaskSwitchingUNet(mtu.load_mtu("adapter"))
        switcher.set_task("edit")          # no disk access; `switcher.unet` now computes mtu.fold(model, "edit")
        StableDiffusionInstructPix2PixPipeline(unet=switcher.unet, ...)

    After `set_task(task)` the UNet's output equals `mtu.fold(model, task)`'s bit for bit. A task with its own text
    encoder (`mtu.upcycling.text_encoders`) reads its prompts through it: `switcher.text_encoder` is the active
    task's, or None where the task reads the base's.

    Args:
        model: An `MTUModel` whose tasks fold (top_k x G <= 1). The UNet shares its frozen tensors.
        keep: What is held per task:
            "folded": every task's folded FFN weights and input conv, computed once here (a snapshot). A switch
                re-points the FFN and input conv parameters (no copy, no arithmetic). Memory: shared + tasks x FFN
                weights.
            "experts": the experts, task LayerNorms and routers (the MTU model's); a switch folds the task's FFNs
                into place (one pass over the FFN weights). Memory: shared + experts + one FFN, as the MTU model;
                a later change to the MTU model's weights shows at the next switch.
            The shared weights are the MTU model's frozen tensors in both modes.
        tasks: The tasks to serve (default all of the model's); the first is active at the start.
    """

    def __init__(self, model: MTUModel, keep: Keep = "folded", tasks: list[str] | None = None):
        super().__init__()
        if not isinstance(model, MTUModel):
            raise TypeError(f"`model` must be an MTUModel (mtu.upcycle / mtu.load_mtu), got {type(model).__name__}.")
        if keep not in get_args(Keep):
            raise InputError(f"`keep` must be one of {get_args(Keep)}, got {keep!r}.")
        check_foldable(model, "TaskSwitchingUNet")
        tasks = list(model.task_names if tasks is None else tasks)
        if not tasks:
            raise InputError("`tasks` must name at least one task of the model, got an empty list.")
        self.keep, self.tasks = keep, tasks
        self.task_indices = {task: model.task_index(task) for task in tasks}  # raises on an unknown task
        layers = [(name, module) for name, module in model.mtu_modules() if isinstance(module, MTUFeedForward)]
        conv_name, convs = input_conv(model)
        # "folded" is a snapshot of everything training changes (a copy of each small conv); "experts" is live
        self.input_convs = nn.ModuleDict({task: copy.deepcopy(convs.convs[task]) if keep == "folded" else
                                          convs.convs[task] for task in tasks})
        if keep == "folded":  # per task, its folded FFN tensors of every upcycled block, in `_slots` order
            self.folded = nn.ModuleDict({task: nn.ParameterList(
                nn.Parameter(value, requires_grad=False) for value in _flat(folded_ffns(model, index)))
                for task, index in self.task_indices.items()})
            first = list(self.folded[tasks[0]])
        else:  # the model's experts, task LayerNorms and routers, and its task embeddings
            self.experts = nn.ModuleList(module for _, module in layers)
            self.task_embeddings = model.task_embeddings
            first = _flat(folded_ffns(model, self.task_indices[tasks[0]]))
        slots = iter(first)  # the FFNs of the first task, in the UNet as these very tensors
        ffns = {name: {key: next(slots) for key in FFN_SLOTS} for name, _ in layers}
        self.unet = stock_unet(model, ffns, conv_name, self.input_convs[tasks[0]], share=True)
        self._slots = [_slot(self.unet, f"{name}.{key}") for name, _ in layers for key in FFN_SLOTS]
        self._text_encoders = {task: model.task_text_encoder(task) for task in tasks}  # the model's, not submodules
        self.task: str | None = None
        self.set_task(tasks[0])

    @torch.no_grad()
    def set_task(self, task: str) -> None:
        """Makes `.unet` compute `task`: its input conv and, per upcycled block, its folded FFN."""
        if task not in self.task_indices:
            raise InputError(f"unknown task {task!r}; this TaskSwitchingUNet serves tasks {self.tasks}.")
        if task == self.task:
            return
        if self.keep == "folded":
            for (module, name), value in zip(self._slots, self.folded[task]):
                setattr(module, name, value)
        else:
            index, slots = self.task_indices[task], iter(self._slots)
            for layer in self.experts:
                state = layer.folded_state(index, layer.router(self.task_embeddings))
                for key in FFN_SLOTS:
                    module, name = next(slots)
                    getattr(module, name).copy_(state[key])
        conv = self.input_convs[task]
        self.unet.conv_in = conv
        self.unet.register_to_config(in_channels=conv.in_channels)
        self.task = task

    @property
    def text_encoder(self) -> nn.Module | None:
        """The active task's own text encoder, or None where it reads the base's."""
        return self._text_encoders[self.task]

    def in_channels(self, task: str) -> int:
        """Input channels of `task` (4 latent channels plus its conditioning maps, for SD)."""
        if task not in self.task_indices:
            raise InputError(f"unknown task {task!r}; this TaskSwitchingUNet serves tasks {self.tasks}.")
        return self.input_convs[task].in_channels

    def forward(self, sample: torch.Tensor, timestep, encoder_hidden_states: torch.Tensor, **kwargs):
        """`self.unet(...)` for the active task."""
        return self.unet(sample, timestep, encoder_hidden_states, **kwargs)
