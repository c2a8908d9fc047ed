"""`upcycle` and `MTUModel`: a diffusers UNet with every selected FFN turned into task-routed experts (Sec. 5)."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext

import torch
import torch.utils.checkpoint
from diffusers import UNet2DConditionModel
from diffusers.models.attention import BasicTransformerBlock
from torch import nn

from .config import MTUConfig
from .input_conv import TaskInputConv
from .layer import MTUFeedForward, TaskRouting, _dense_parts
from .router import init_linear_
from .tasks import TaskSpec, get_task

TaskArg = str | Sequence[str]


def find_blocks(unet: nn.Module, patterns: list[str] | None) -> list[tuple[str, BasicTransformerBlock]]:
    """The transformer blocks to upcycle, in module order; raises if there are none or a pattern matches none."""
    blocks = [(name, module) for name, module in unet.named_modules() if isinstance(module, BasicTransformerBlock)]
    if not blocks:
        raise ValueError(
            f"the base {type(unet).__name__} has no transformer blocks (diffusers BasicTransformerBlock) with an "
            f"FFN to upcycle; MTU needs a UNet with attention blocks, such as Stable Diffusion 1.x/2.x or SDXL."
        )
    if patterns is None:
        return blocks
    selected = []
    for pattern in patterns:
        matched = [(n, b) for n, b in blocks if fnmatch.fnmatchcase(n, pattern) or fnmatch.fnmatchcase(n, pattern + ".*")]
        if not matched:
            examples = ", ".join(n for n, _ in blocks[:3])
            raise ValueError(f"`target_blocks` entry {pattern!r} matches no transformer block; names look like: "
                             f"{examples}.")
        selected += [item for item in matched if item not in selected]
    order = {name: i for i, (name, _) in enumerate(blocks)}
    return sorted(selected, key=lambda item: order[item[0]])


class MTUModel(nn.Module):
    """An upcycled UNet plus its task embeddings; call it like the UNet with one more argument, `task`.

    `task` is a task name for the whole batch, or one name per sample (a batch may mix tasks; each sample gets
    exactly its single-task output). Build one with `mtu.upcycle` or `mtu.load_mtu`.
    """

    # The units FSDP shards one by one (accelerate's transformer-based auto-wrap reads this, as for diffusers'
    # UNet); every Stable Diffusion UNet has both.
    _no_split_modules = ["BasicTransformerBlock", "ResnetBlock2D"]

    def __init__(self, unet: UNet2DConditionModel, config: MTUConfig, task_specs: list[TaskSpec], base_info: dict,
                 task_embeddings: torch.Tensor):
        super().__init__()
        self.unet = unet
        self.mtu_config = config
        self.task_specs = task_specs
        self.base_info = base_info
        self.task_embeddings = nn.Parameter(task_embeddings)  # e_tau, one row per task (Sec. 5, "Router")
        self._active_routing: TaskRouting | None = None  # set only inside `route`, for checkpoint recomputation

    @property
    def device(self) -> torch.device:
        return self.task_embeddings.device

    @property
    def dtype(self) -> torch.dtype:
        """The UNet's dtype (pipelines cast their inputs to it)."""
        return self.unet.dtype

    @property
    def task_names(self) -> list[str]:
        return [spec.name for spec in self.task_specs]

    def task_index(self, task: str) -> int:
        if task not in self.task_names:
            raise ValueError(f"unknown task {task!r}; this model was upcycled for tasks {self.task_names}.")
        return self.task_names.index(task)

    def task_in_channels(self, task: str) -> int:
        """UNet input channels the task expects (4 latent channels plus its conditioning maps, for SD)."""
        return self.task_specs[self.task_index(task)].in_channels(self.unet.conv_in.latent_channels)

    def mtu_modules(self) -> Iterator[tuple[str, nn.Module]]:
        """(name in the UNet, module) of every module MTU added: the MTU FFNs and the task input convs."""
        for name, module in self.unet.named_modules():
            if isinstance(module, (MTUFeedForward, TaskInputConv)):
                yield name, module

    def mtu_named_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """Every tensor MTU owns (the trainable ones), named as in `state_dict()`; what an adapter file holds."""
        yield "task_embeddings", self.task_embeddings
        for module_name, module in self.mtu_modules():
            for name, param in module.named_parameters():
                yield f"unet.{module_name}.{name}", param

    def make_routing(self, task: TaskArg, batch_size: int | None = None, device=None) -> TaskRouting:
        """Groups the batch by task; one group with no index list when the whole batch is one task."""
        if isinstance(task, str):
            return TaskRouting(self.task_embeddings, [(self.task_index(task), None)], batch_size or 0)
        if isinstance(task, torch.Tensor) or not isinstance(task, Sequence):
            raise TypeError(f"`task` must be a task name or a list of names, got {type(task).__name__}.")
        indices = [self.task_index(name) for name in task]
        if batch_size is not None and len(indices) != batch_size:
            raise ValueError(f"`task` lists {len(indices)} tasks for a batch of {batch_size} samples.")
        present = list(dict.fromkeys(indices))
        if len(present) == 1:
            return TaskRouting(self.task_embeddings, [(present[0], None)], len(indices))
        groups = [(t, torch.tensor([i for i, x in enumerate(indices) if x == t], device=device)) for t in present]
        return TaskRouting(self.task_embeddings, groups, len(indices))

    @contextmanager
    def _routing_hooks(self, routing: TaskRouting):
        """Hands `routing` to every MTU module's forward (poly-style forward pre-hooks, always removed)."""

        def inject(module, args, kwargs):
            return args, {**kwargs, "routing": routing}

        handles = [module.register_forward_pre_hook(inject, with_kwargs=True) for _, module in self.mtu_modules()]
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

    @torch.no_grad()
    def expert_weights(self, task: str) -> dict[str, torch.Tensor]:
        """Router weights (N,) of `task` in every upcycled block, e.g. for the paper's Fig. 5 heatmap."""
        index = self.task_index(task)
        return {name: module.router(self.task_embeddings)[index].float().cpu()
                for name, module in self.mtu_modules() if isinstance(module, MTUFeedForward)}

    def save_pretrained(self, save_directory, state_dict: dict[str, torch.Tensor] | None = None) -> None:
        """Writes `mtu_config.json` and `mtu_model.safetensors` (MTU-owned tensors only, written atomically).

        `state_dict` (name -> tensor, the names of `mtu_named_parameters`) replaces the model's own tensors, e.g.
        EMA weights or tensors gathered from FSDP shards.
        """
        from .serialization import save_adapter

        save_adapter(self, save_directory, state_dict)

    def fold(self, task: str) -> UNet2DConditionModel:
        """A stock `UNet2DConditionModel` computing this model's output for `task`; see `mtu.fold`."""
        from .fold import fold

        return fold(self, task)


def _check_blocks(blocks, config: MTUConfig) -> None:
    """Every block's FFN can be cut with this config; raises before any weight is touched."""
    for name, block in blocks:
        _, proj, _, gated, _, _ = _dense_parts(block, name)
        ffn_width = proj.out_features // (2 if gated else 1)
        if config.expert_width(ffn_width) is None:
            MTUFeedForward.from_block(block, config, 1, name)  # raises the detailed width error


def base_unet_config(unet: UNet2DConditionModel) -> dict:
    """The architecture part of a UNet's config (no private `_` keys), JSON-normalised for comparison."""
    import json

    return json.loads(json.dumps({k: v for k, v in unet.config.items() if not k.startswith("_")}))


def upcycle(unet: UNet2DConditionModel, config: MTUConfig | None = None, *, fingerprint: bool | str = True,
            base_name_or_path: str | None = None) -> MTUModel:
    """Turns `unet` (modified in place) into an `MTUModel` (Sec. 5).

    In every selected `BasicTransformerBlock`, `norm3` + `ff` become an `MTUFeedForward` (task LayerNorms, N
    experts, router); `conv_in` becomes one input conv per task. Everything else is frozen.

    Args:
        unet: A diffusers `UNet2DConditionModel` (weights on any device, or on "meta" to count shapes only).
        config: An `MTUConfig`; defaults to `MTUConfig()` (t2i, edit, sr, inpaint; N=4, G=1/4).
        fingerprint: True to hash the base weights (recorded so an adapter refuses another base), False to skip,
            or a precomputed fingerprint string.
        base_name_or_path: Where the base comes from; defaults to the path or hub id it was loaded from.
    """
    from .serialization import weights_fingerprint

    config = config if config is not None else MTUConfig()
    if not isinstance(unet, UNet2DConditionModel):
        raise TypeError(f"`unet` must be a diffusers UNet2DConditionModel, got {type(unet).__name__}.")
    if not isinstance(config, MTUConfig):
        raise TypeError(f"`config` must be an MTUConfig, got {type(config).__name__}.")
    if isinstance(unet.conv_in, TaskInputConv):
        raise ValueError("`unet` is already upcycled; load the base model again to upcycle it anew.")
    blocks = find_blocks(unet, config.target_blocks)
    _check_blocks(blocks, config)
    specs = [get_task(name) for name in config.tasks]
    if fingerprint is True:
        fingerprint = None if unet.device.type == "meta" else weights_fingerprint(unet)
    base_info = {
        "name_or_path": base_name_or_path or unet.config.get("_name_or_path"),
        "fingerprint": fingerprint or None,
        "unet_config": base_unet_config(unet),
    }
    generator = torch.Generator().manual_seed(config.seed)
    layers = [MTUFeedForward.from_block(block, config, len(specs), name, generator) for name, block in blocks]
    for (_, block), layer in zip(blocks, layers):
        block.ff, block.norm3 = layer, nn.Identity()  # the MTU layer owns the LayerNorm now
    unet.conv_in = TaskInputConv(unet.conv_in, specs)
    weight = unet.conv_in.convs[specs[0].name].weight
    task_embeddings = torch.empty(len(specs), config.task_embedding_size, device=weight.device, dtype=weight.dtype)
    if not weight.is_meta:
        task_embeddings.copy_(torch.randn(task_embeddings.shape, generator=generator))
        for layer in layers:
            init_linear_(layer.router.hidden, generator)
    model = MTUModel(unet, config, specs, base_info, task_embeddings)
    model.requires_grad_(False)
    for _, param in model.mtu_named_parameters():
        param.requires_grad_(True)
    return model
