"""`TaskModel`: a diffusers UNet with one input conv per task, called with one more argument, `task`.

It is the frame every method trains in: MTU (`MTUModel`, which adds task-routed experts) and the baselines of
Tables 2-3 (`mtu.training.methods`: full fine-tuning, LoRA, IA3). The task reaches the modules that depend on it
(the task input convs, and MTU's experts) through forward pre-hooks installed by `route` and always removed.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext

import torch
import torch.utils.checkpoint
from diffusers import UNet2DConditionModel
from torch import nn

from ..errors import InputError
from .input_conv import TaskInputConv
from .layer import TaskRouting
from .tasks import TaskSpec

TaskArg = str | Sequence[str]


class TaskModel(nn.Module):
    """`unet` (whose `conv_in` is a `TaskInputConv`) called as `model(sample, t, text, task=...)`.

    `task` is a task name for the whole batch, or one name per sample (a batch may mix tasks; each sample gets
    exactly its single-task output).

    Args:
        unet: The UNet, its `conv_in` already a `TaskInputConv` over `task_specs`.
        task_specs: The tasks, in the order of their index.
        base_info: Where the base comes from and what it is: {"name_or_path", "fingerprint", "unet_config"}.
    """

    # The units FSDP shards one by one (accelerate's transformer-based auto-wrap reads this, as for diffusers'
    # UNet); every Stable Diffusion UNet has both.
    _no_split_modules = ["BasicTransformerBlock", "ResnetBlock2D"]
    # The module types that take the current task (`routing=`) in their forward.
    task_module_types: tuple[type[nn.Module], ...] = (TaskInputConv,)
    made_as = "built"  # how errors say the model got its tasks

    def __init__(self, unet: UNet2DConditionModel, task_specs: list[TaskSpec], base_info: dict):
        super().__init__()
        assert isinstance(unet.conv_in, TaskInputConv), "the UNet's conv_in must be a TaskInputConv"
        self.unet = unet
        self.task_specs = task_specs
        self.base_info = base_info
        self._active_routing: TaskRouting | None = None  # set only inside `route`, for checkpoint recomputation

    @property
    def device(self) -> torch.device:
        return self.unet.conv_in.convs[self.task_names[0]].weight.device

    @property
    def dtype(self) -> torch.dtype:
        """The UNet's dtype (pipelines cast their inputs to it)."""
        return self.unet.dtype

    @property
    def task_names(self) -> list[str]:
        return [spec.name for spec in self.task_specs]

    def task_index(self, task: str) -> int:
        if task not in self.task_names:
            raise InputError(f"unknown task {task!r}; this model was {self.made_as} for tasks {self.task_names}.")
        return self.task_names.index(task)

    def task_in_channels(self, task: str) -> int:
        """UNet input channels the task expects (4 latent channels plus its conditioning maps, for SD)."""
        return self.task_specs[self.task_index(task)].in_channels(self.unet.conv_in.latent_channels)

    def task_modules(self) -> Iterator[tuple[str, nn.Module]]:
        """(name in the UNet, module) of every module that takes the current task (`task_module_types`)."""
        for name, module in self.unet.named_modules():
            if isinstance(module, self.task_module_types):
                yield name, module

    def _routing_embeddings(self) -> torch.Tensor | None:
        """What `TaskRouting.task_embeddings` carries to the task modules: none here (MTU's router reads them)."""
        return None

    def make_routing(self, task: TaskArg, batch_size: int | None = None, device=None) -> TaskRouting:
        """Groups the batch by task; one group with no index list when the whole batch is one task."""
        embeddings = self._routing_embeddings()
        if isinstance(task, str):
            return TaskRouting(embeddings, [(self.task_index(task), None)], batch_size or 0)
        if isinstance(task, torch.Tensor) or not isinstance(task, Sequence):
            raise InputError(f"`task` must be a task name or a list of names, got {type(task).__name__}.")
        indices = [self.task_index(name) for name in task]
        if batch_size is not None and len(indices) != batch_size:
            raise InputError(f"`task` lists {len(indices)} tasks for a batch of {batch_size} samples.")
        present = list(dict.fromkeys(indices))
        if len(present) == 1:
            return TaskRouting(embeddings, [(present[0], None)], len(indices))
        groups = [(t, torch.tensor([i for i, x in enumerate(indices) if x == t], device=device)) for t in present]
        return TaskRouting(embeddings, groups, len(indices))

    @contextmanager
    def _routing_hooks(self, routing: TaskRouting):
        """Hands `routing` to every task module's forward (poly-style forward pre-hooks, always removed)."""

        def inject(module, args, kwargs):
            return args, {**kwargs, "routing": routing}

        handles = [module.register_forward_pre_hook(inject, with_kwargs=True) for _, module in self.task_modules()]
        try:
            yield routing
        finally:
            for handle in handles:
                handle.remove()

    @contextmanager
    def route(self, task: TaskArg, batch_size: int | None = None, device=None):
        """Within the block, calls to `self.unet` run as `task` (one name, or one per sample)."""
        routing = self.make_routing(task, batch_size, device)
        outer, self._active_routing = self._active_routing, routing
        try:
            with self._routing_hooks(routing):
                yield routing
        finally:
            self._active_routing = outer

    def enable_gradient_checkpointing(self) -> None:
        """diffusers' per-block activation checkpointing, with each block's task routing re-installed while it
        is recomputed during backward (which runs after `route` has exited)."""

        def checkpoint(module, *args):
            routing = self._active_routing
            context = (lambda: (nullcontext(), self._routing_hooks(routing))) if routing is not None else None
            kwargs = {"context_fn": context} if context is not None else {}
            return torch.utils.checkpoint.checkpoint(module.__call__, *args, use_reentrant=False, **kwargs)

        self.unet.enable_gradient_checkpointing(gradient_checkpointing_func=checkpoint)

    def forward(self, sample: torch.Tensor, timestep, encoder_hidden_states: torch.Tensor, task: TaskArg, **kwargs):
        with self.route(task, batch_size=sample.shape[0], device=sample.device):
            return self.unet(sample, timestep, encoder_hidden_states, **kwargs)

    def fold(self, task: str) -> UNet2DConditionModel:
        """A stock `UNet2DConditionModel` computing this model's output for `task`, where the method has one."""
        raise NotImplementedError(f"{type(self).__name__} does not say how to fold a task")
