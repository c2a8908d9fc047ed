"""Task-specific input convolutions psi_tau (Sec. 5, "Task-specific input layers")."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import InputError
from .layer import TaskRouting
from .tasks import TaskSpec


class TaskInputConv(nn.Module):
    """One `conv_in` per task, each with that task's input channels.

    Each copy starts from the pre-trained `conv_in` on the first (latent) channels and zeros on the extra
    conditioning channels, as InstructPix2Pix initialises its 8-channel input layer.
    """

    def __init__(self, base: nn.Conv2d, specs: list[TaskSpec]):
        super().__init__()
        self.latent_channels = base.in_channels
        self.task_names = [spec.name for spec in specs]
        self.channels = [spec.in_channels(self.latent_channels) for spec in specs]
        self.convs = nn.ModuleDict()
        for spec, channels in zip(specs, self.channels):
            conv = nn.Conv2d(channels, base.out_channels, base.kernel_size, base.stride, base.padding,
                             base.dilation, base.groups, base.bias is not None, base.padding_mode,
                             device=base.weight.device, dtype=base.weight.dtype)
            with torch.no_grad():
                conv.weight.zero_()
                conv.weight[:, : self.latent_channels].copy_(base.weight)
                if base.bias is not None:
                    conv.bias.copy_(base.bias)
            self.convs[spec.name] = conv

    def _check_channels(self, sample: torch.Tensor, expected: int, what: str) -> None:
        if sample.shape[1] != expected:
            raise InputError(f"{what} expects `sample` with {expected} channels, got {sample.shape[1]} "
                             f"(shape {tuple(sample.shape)}).")

    def forward(self, sample: torch.Tensor, *args, routing: TaskRouting | None = None, **kwargs):
        if routing is None:
            raise RuntimeError("task input conv called without a task; call the MTUModel with `task=`.")
        if len(routing.groups) == 1 and routing.groups[0][1] is None:
            task = routing.groups[0][0]
            self._check_channels(sample, self.channels[task], f"task {self.task_names[task]!r}")
            return self.convs[self.task_names[task]](sample)
        # Mixed batch: samples are zero-padded to the widest task present; each task reads its own channels.
        widest = max(self.channels[task] for task, _ in routing.groups)
        self._check_channels(sample, widest, f"a batch of tasks {[self.task_names[t] for t, _ in routing.groups]}")
        outputs = []
        for task, index in routing.groups:
            conv = self.convs[self.task_names[task]]
            outputs.append((index, conv(sample[index, : self.channels[task]])))
        first = outputs[0][1]
        output = first.new_empty((sample.shape[0],) + first.shape[1:])
        for index, value in outputs:
            output[index] = value
        return output
