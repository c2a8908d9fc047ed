"""`upcycle` and `MTUModel`: a diffusers UNet with every selected FFN turned into task-routed experts (Sec. 5).

`MTUModel` is a `TaskModel` (one input conv per task, called with `task=`) whose FFNs are `MTUFeedForward`s, routed
by learned task embeddings.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator

import torch
from diffusers import UNet2DConditionModel
from diffusers.models.attention import BasicTransformerBlock
from torch import nn

from ..errors import InputError
from .bases import base_identity, base_location, base_unet_config
from .config import MTUConfig
from .files import save_adapter
from .fold import fold
from .input_conv import TaskInputConv
from .layer import MTUFeedForward, _dense_parts
from .router import init_linear_
from .task_model import TaskArg, TaskModel
from .tasks import TaskSpec, get_task
from .text_encoders import check_encoder_tasks


def find_blocks(unet: nn.Module, patterns: list[str] | None) -> list[tuple[str, BasicTransformerBlock]]:
    """The transformer blocks to upcycle, in module order; raises if there are none or a pattern matches none."""
    blocks = [(name, module) for name, module in unet.named_modules() if isinstance(module, BasicTransformerBlock)]
    if not blocks:
        raise InputError(
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
            raise InputError(f"`target_blocks` entry {pattern!r} matches no transformer block; names look like: "
                             f"{examples}.")
        selected += [item for item in matched if item not in selected]
    order = {name: i for i, (name, _) in enumerate(blocks)}
    return sorted(selected, key=lambda item: order[item[0]])


class MTUModel(TaskModel):
    """An upcycled UNet plus its task embeddings; call it like the UNet with one more argument, `task`.

    `task` is a task name for the whole batch, or one name per sample (a batch may mix tasks; each sample gets
    exactly its single-task output). Build one with `mtu.upcycle` or `mtu.load_mtu`.
    """

    task_module_types = (MTUFeedForward, TaskInputConv)
    made_as = "upcycled"

    def __init__(self, unet: UNet2DConditionModel, config: MTUConfig, task_specs: list[TaskSpec], base_info: dict,
                 task_embeddings: torch.Tensor):
        super().__init__(unet, task_specs, base_info)
        self.mtu_config = config
        self.task_embeddings = nn.Parameter(task_embeddings)  # e_tau, one row per task (Sec. 5, "Router")
        # Task text encoders (opt-in, `mtu.upcycling.text_encoders`): task -> its own copy of the base's encoder.
        self.text_encoders = nn.ModuleDict()

    @property
    def device(self) -> torch.device:
        return self.task_embeddings.device

    def _routing_embeddings(self) -> torch.Tensor:
        return self.task_embeddings

    def mtu_modules(self) -> Iterator[tuple[str, nn.Module]]:
        """(name in the UNet, module) of every module MTU added: the MTU FFNs and the task input convs."""
        return self.task_modules()

    def mtu_named_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """Every tensor MTU adds to the UNet (the trainable ones), named as in `state_dict()`; what the adapter's
        weights file holds. Task text encoders (`text_encoders`) are trainable too and are saved apart, each in its
        own folder (`mtu.upcycling.text_encoders`)."""
        yield "task_embeddings", self.task_embeddings
        for module_name, module in self.mtu_modules():
            for name, param in module.named_parameters():
                yield f"unet.{module_name}.{name}", param

    def set_task_text_encoders(self, encoders: dict[str, nn.Module]) -> None:
        """Gives each named task its own text encoder (trainable, like the task's other MTU parts); see
        `mtu.upcycling.text_encoders`."""
        check_encoder_tasks(list(encoders), self.task_names, "task_text_encoders")
        for task, encoder in encoders.items():
            self.text_encoders[task] = encoder.requires_grad_(True)

    def task_text_encoder(self, task: str) -> nn.Module | None:
        """`task`'s own text encoder, or None when the task reads the base's."""
        self.task_index(task)
        return self.text_encoders[task] if task in self.text_encoders else None

    def task_text_states(self, encoder_hidden_states: torch.Tensor, text_input_ids: torch.Tensor,
                         task: TaskArg) -> torch.Tensor:
        """`encoder_hidden_states` (the base encoder's) with the rows of tasks that have their own text encoder
        encoded again by it from `text_input_ids` (B, L); with gradients to those encoders when enabled."""
        names = [task] * len(text_input_ids) if isinstance(task, str) else list(task)
        for own, encoder in self.text_encoders.items():
            rows = [index for index, name in enumerate(names) if name == own]
            if rows:
                index = torch.tensor(rows, device=encoder_hidden_states.device)
                states = encoder(text_input_ids[index.to(text_input_ids.device)])[0]
                states = states.to(encoder_hidden_states.dtype)
                encoder_hidden_states = encoder_hidden_states.index_copy(0, index, states)
        return encoder_hidden_states

    def forward(self, sample: torch.Tensor, timestep, encoder_hidden_states: torch.Tensor, task: TaskArg,
                text_input_ids: torch.Tensor | None = None, **kwargs):
        """The UNet's output for `task`. `text_input_ids`: the prompts' token ids, given in training when tasks have
        their own text encoders (`task_text_states`; inside the forward, so DDP and FSDP see those encoders)."""
        if text_input_ids is not None and len(self.text_encoders):
            encoder_hidden_states = self.task_text_states(encoder_hidden_states, text_input_ids, task)
        return super().forward(sample, timestep, encoder_hidden_states, task, **kwargs)

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
        save_adapter(self, save_directory, state_dict)

    def fold(self, task: str) -> UNet2DConditionModel:
        """A stock `UNet2DConditionModel` computing this model's output for `task`; see `mtu.fold`."""
        return fold(self, task)


def _check_blocks(blocks, config: MTUConfig) -> None:
    """Every block's FFN can be cut with this config; raises before any weight is touched."""
    for name, block in blocks:
        _, proj, _, gated, _, _ = _dense_parts(block, name)
        ffn_width = proj.out_features // (2 if gated else 1)
        if config.expert_width(ffn_width) is None:
            MTUFeedForward.from_block(block, config, 1, name)  # raises the detailed width error


IDENTITY_KEYS = ("fingerprint", "fingerprint_precisions", "fingerprints")  # of an adapter's "base" entry


def _identity(unet: UNet2DConditionModel, fingerprint) -> dict:
    """The base entry's fingerprint keys: computed (True), none (False; also on the meta device) or as recorded."""
    if fingerprint is True:
        return {"fingerprint": None} if unet.device.type == "meta" else base_identity(unet)
    if isinstance(fingerprint, dict):
        return {"fingerprint": None, **{key: fingerprint[key] for key in IDENTITY_KEYS if fingerprint.get(key)}}
    return {"fingerprint": fingerprint or None}


def upcycle(unet: UNet2DConditionModel, config: MTUConfig | None = None, *, fingerprint: bool | str | dict = True,
            base_name_or_path: str | None = None, base_variant: str | None = None) -> MTUModel:
    """Turns `unet` (modified in place) into an `MTUModel` (Sec. 5).

    In every selected `BasicTransformerBlock`, `norm3` + `ff` become an `MTUFeedForward` (task LayerNorms, N
    experts, router); `conv_in` becomes one input conv per task. Everything else is frozen.

    Args:
        unet: A diffusers `UNet2DConditionModel` (weights on any device, or on "meta" to count shapes only).
        config: An `MTUConfig`; defaults to `MTUConfig()` (t2i, edit, sr, inpaint; N=4, G=1/4).
        fingerprint: True to fingerprint the base weights (recorded so an adapter refuses another base; see
            `mtu.upcycling.bases.base_identity`), False to skip, or one recorded before (an adapter's "base" entry,
            or an old adapter's fingerprint string).
        base_name_or_path: Where the base comes from; defaults to the path or hub id it was loaded from. Recorded
            as `mtu.upcycling.bases.base_location` says: a local path made absolute, so the adapter loads from any
            directory.
        base_variant: The weights variant the base was loaded with (e.g. "fp16"), recorded so that loading the
            adapter reads the same files.
    """
    config = config if config is not None else MTUConfig()
    if not isinstance(unet, UNet2DConditionModel):
        raise TypeError(f"`unet` must be a diffusers UNet2DConditionModel, got {type(unet).__name__}.")
    if not isinstance(config, MTUConfig):
        raise TypeError(f"`config` must be an MTUConfig, got {type(config).__name__}.")
    if isinstance(unet.conv_in, TaskInputConv):
        raise InputError("`unet` is already upcycled; load the base model again to upcycle it anew.")
    blocks = find_blocks(unet, config.target_blocks)
    _check_blocks(blocks, config)
    specs = [get_task(name) for name in config.tasks]
    base_info = {"name_or_path": base_location(base_name_or_path or unet.config.get("_name_or_path")),
                 **_identity(unet, fingerprint), "unet_config": base_unet_config(unet)}
    if base_variant is not None:
        base_info["variant"] = base_variant
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
