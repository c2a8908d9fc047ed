"""The sections of a training run's config (`model`, its `mtu`, `optim`, the `data` sources) and the checks every
run field goes through.

Each check raises `InputError` whose `field` names the field relative to the object checked (`lr`); a section's
errors reach the user under their full path (`optim.lr`, `model.mtu.num_experts`) through `InputError.within`, as a
data source's do (`data[2].schema`). Numbers must be finite where they enter: `.nan` and `.inf` are refused here,
not discovered in a NaN loss. An unknown key is an error naming the nearest valid key (`fields_from_dict`).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, get_args

from ..data.config import DataSourceConfig
from ..data.registry import fields_from_dict
from ..errors import InputError
from ..upcycling.config import InitMode, MTUConfig, check_expert_fields

Method = Literal["mtu", "full", "lora", "ia3", "lora_shared", "ia3_shared"]
# What a `full` fine-tune may restrict itself to (Table 1: fine-tune only these parts of every transformer block).
TrainableModule = Literal["ffn", "self_attn", "cross_attn"]
Optimizer = Literal["adam", "adamw"]
Schedule = Literal["constant", "constant_with_warmup", "linear", "cosine"]


def bad_value(name: str, expected: str, value) -> InputError:
    return InputError(f"must be {expected}, got {value!r}.", field=name)


def check_choice(name: str, value, literal) -> None:
    if value not in get_args(literal):
        raise bad_value(name, f"one of {get_args(literal)}", value)


def check_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise bad_value(name, f"an integer >= {minimum}", value)


def check_number(name: str, value, bounds: str, accept: Callable[[float], bool], optional: bool = False) -> None:
    """A finite number (not a bool) for which `accept` holds, or None when `optional`; `bounds` says which."""
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not accept(value):
        raise bad_value(name, f"a finite number {bounds}" + (", or null" if optional else ""), value)


def check_bool(name: str, value) -> None:
    if not isinstance(value, bool):
        raise bad_value(name, "true or false", value)


def check_text(name: str, value, what: str, optional: bool = False) -> None:
    if optional and value is None:
        return
    if not isinstance(value, str) or not value:
        raise bad_value(name, what + (", or null" if optional else ""), value)


def section_from(name: str, cls, value):
    """`value` (a `cls`, or a mapping of its fields) as a `cls`; its errors name their field under `name`."""
    if isinstance(value, cls):
        return value
    if not isinstance(value, dict):
        raise bad_value(name, f"a mapping of {cls.__name__} fields", value)
    try:
        return cls.from_dict(value)
    except InputError as error:
        raise error.within(name) from None


def _source_from(index: int, entry):
    """Data source `index` as its format's typed config (`DataSourceConfig.from_dict` picks the class)."""
    if dataclasses.is_dataclass(entry) and not isinstance(entry, type) and hasattr(entry, "task"):
        return entry  # a typed source config, checked when it was built
    try:
        return DataSourceConfig.from_dict(entry)
    except InputError as error:
        raise error.within(f"data[{index}]") from None


def sources_from(data) -> list:
    """`data` (a list of source dicts or typed source configs) as typed configs that share one `resolution`."""
    if not isinstance(data, (list, tuple)):
        raise InputError(f"must be a list of sources (YAML items `- task: ...`), got a {type(data).__name__}: "
                         f"{data!r}.", field="data")
    if not data:
        raise InputError("must list at least one source, got none.", field="data")
    sources = [_source_from(index, entry) for index, entry in enumerate(data)]
    resolutions = [source.resolution for source in sources]
    for index, resolution in enumerate(resolutions):
        if resolution != resolutions[0]:
            raise InputError(f"all sources must share one `resolution` (tasks are batched together), got "
                             f"{sorted(set(resolutions))}.", field=f"data[{index}].resolution")
    return sources


def task_weights_from(weights, tasks: list[str]) -> dict[str, float]:
    """`task_loss_weights` checked against the run's tasks: an unknown task is an error, never ignored."""
    if not isinstance(weights, dict):
        raise bad_value("task_loss_weights", "a mapping task -> weight such as {edit: 2.0}", weights)
    for task, weight in weights.items():
        if task not in tasks:
            close = difflib.get_close_matches(str(task), tasks, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise InputError(f"not a task of this run; {hint}its tasks (those of `data`): {', '.join(tasks)}.",
                             field=f"task_loss_weights.{task}")
        check_number(f"task_loss_weights.{task}", weight, ">= 0", lambda value: value >= 0)
    return dict(weights)


@dataclass
class MTUSection:
    """`model.mtu`: the `MTUConfig` fields other than `tasks` (a run's tasks are those of its `data` sources).

    Args:
        num_experts: N, experts per FFN.
        granularity: G = d_expert / d_ffn; None stays None here and means 1/N when the model is built, so G follows
            the N that a preset or an override sets.
        top_k: Experts kept per task; None uses all N.
        router_hidden_size: Hidden width of each layer's router.
        task_embedding_size: d_task, width of the per-task embedding.
        init: "preserve" or "shard" (see `MTUConfig`).
        target_blocks: Blocks to upcycle (names or fnmatch patterns); None for all.
        seed: Seed of the new parameters.

    See `MTUConfig` for what each means; the defaults are its defaults. It unpacks as keyword arguments:
    `MTUConfig(tasks=tasks, **section)`.
    """

    num_experts: int = MTUConfig.num_experts
    granularity: float | None = MTUConfig.granularity
    top_k: int | None = MTUConfig.top_k
    router_hidden_size: int = MTUConfig.router_hidden_size
    task_embedding_size: int = MTUConfig.task_embedding_size
    init: InitMode = MTUConfig.init
    target_blocks: list[str] | None = MTUConfig.target_blocks
    seed: int = MTUConfig.seed

    def __post_init__(self):
        check_expert_fields(self)

    def keys(self) -> list[str]:
        return [item.name for item in dataclasses.fields(self)]

    def __getitem__(self, name: str):
        if name not in self.keys():
            raise KeyError(name)
        return getattr(self, name)

    def mtu_config(self, tasks: list[str]) -> MTUConfig:
        """The full `MTUConfig` of a model with these tasks."""
        return MTUConfig(tasks=list(tasks), **self.to_dict())

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> MTUSection:
        if isinstance(data, dict) and "tasks" in data:
            raise InputError("is not set here: the tasks are those of the `data` sources.", field="tasks")
        return cls(**fields_from_dict(cls, data))


@dataclass
class ModelConfig:
    """What to train.

    Args:
        base: Base text-to-image pipeline: a diffusers folder (in a run file, a relative path is relative to the
            file's folder), a shipped base's short name ("toyworld-base"), or a hub id when online.
        variant: The base's weights variant, e.g. "fp16" for a folder holding only
            `*.fp16.safetensors` weights; null reads the plain weights.
        method: "mtu" (the paper), or a baseline: "full" fine-tuning; "lora" / "ia3" through peft with one adapter
            per task, each sample through its task's (Table 3's task-specific adapters); "lora_shared" /
            "ia3_shared" with one adapter shared by all tasks (what "lora" / "ia3" trained before issue 12).
        mtu: The MTU model's shape (`MTUSection`: `MTUConfig` fields other than `tasks`), e.g. {num_experts: 4}.
        adapter: Start from this MTU adapter folder instead of upcycling the base anew (in a run file, relative to
            the file's folder).
        lora_rank: LoRA rank of each adapter (methods "lora", "lora_shared"), on the FFN layers; to match MTU's
            trainable parameters over all task adapters, see `mtu.training.methods.matched_lora_rank`.
        lora_alpha: LoRA alpha; default the rank.
        ia3_on_attention: IA3 also on attention (the paper applies it to the whole block; FFN-only did poorly).
        trainable: For method "full": train only these parts of every transformer block, any of "ffn",
            "self_attn", "cross_attn" (Table 1's experiment); the task input convs always train. null trains the
            whole UNet.
        task_text_encoders: Tasks that get their own trainable copy of the base's text encoder (method "mtu",
            SD 1.x/2.x bases; `mtu.upcycling.text_encoders`), at `optim.text_encoder_lr`. Ours: the paper keeps the
            text encoder frozen, which suits a base whose encoder has read the task's words; the toy world's
            never read instructions (docs/DIAGNOSIS.md, "Seventeenth round"). An adapter continued from
            (`adapter`) keeps and trains its own.
    """

    base: str = ""
    variant: str | None = None
    method: Method = "mtu"
    mtu: MTUSection = field(default_factory=MTUSection)
    adapter: str | None = None
    lora_rank: int = 8
    lora_alpha: float | None = None
    ia3_on_attention: bool = True
    trainable: list[str] | None = None
    task_text_encoders: list[str] = field(default_factory=list)

    def __post_init__(self):
        check_text("base", self.base, "a diffusers pipeline folder or hub id")
        check_text("variant", self.variant, "a weights variant such as 'fp16'", optional=True)
        check_choice("method", self.method, Method)
        self.mtu = section_from("mtu", MTUSection, self.mtu)
        check_text("adapter", self.adapter, "an MTU adapter folder", optional=True)
        check_int("lora_rank", self.lora_rank, 1)
        check_number("lora_alpha", self.lora_alpha, "> 0", lambda value: value > 0, optional=True)
        check_bool("ia3_on_attention", self.ia3_on_attention)
        if self.trainable is not None:
            choices = get_args(TrainableModule)
            if not isinstance(self.trainable, (list, tuple)) or not self.trainable or any(
                    item not in choices for item in self.trainable):
                raise bad_value("trainable", f"a non-empty list of {choices}, or null", self.trainable)
            if self.method != "full":
                raise InputError(f"selects what a `full` fine-tune trains; method {self.method!r} trains its own "
                                 f"parameters (remove `trainable`).", field="trainable")
            self.trainable = list(dict.fromkeys(self.trainable))
        if not isinstance(self.task_text_encoders, (list, tuple)) or not all(
                isinstance(task, str) for task in self.task_text_encoders):
            raise bad_value("task_text_encoders", "a list of task names", self.task_text_encoders)
        self.task_text_encoders = list(self.task_text_encoders)
        if self.task_text_encoders and self.method != "mtu":
            raise InputError(f"gives tasks their own text encoder in an MTU model; method {self.method!r} does not "
                             f"take it (remove `task_text_encoders`).", field="task_text_encoders")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        return cls(**fields_from_dict(cls, data))


@dataclass
class OptimConfig:
    """Optimizer and learning-rate schedule (only trainable weights are optimized, kept in fp32).

    Args:
        optimizer: "adam" or "adamw".
        lr: Peak learning rate.
        weight_decay: Decoupled for adamw, L2 for adam.
        betas: Adam betas, each in [0, 1).
        eps: Adam epsilon.
        schedule: LR schedule after warm-up.
        warmup_steps: Linear warm-up steps.
        max_grad_norm: Gradient clipping norm; 0 disables. Ours: the paper does not mention clipping.
        router_lr: Peak learning rate of the MTU routers and task embeddings (same schedule); null = `lr`. Ours:
            the paper trains everything at 1e-4. At a much larger `lr` (the toy world's 2e-3) the routers' ReLU
            units all die within a few hundred steps, and every task then gets the same expert weights
            (docs/DIAGNOSIS.md, "The routers die").
        text_encoder_lr: Peak learning rate of the task text encoders (`model.task_text_encoders`; same schedule);
            null = `lr`.
    """

    optimizer: Optimizer = "adam"
    lr: float = 1e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    schedule: Schedule = "constant_with_warmup"
    warmup_steps: int = 0
    max_grad_norm: float = 1.0
    router_lr: float | None = None
    text_encoder_lr: float | None = None

    def __post_init__(self):
        check_choice("optimizer", self.optimizer, Optimizer)
        check_number("router_lr", self.router_lr, "> 0", lambda value: value > 0, optional=True)
        check_number("text_encoder_lr", self.text_encoder_lr, "> 0", lambda value: value > 0, optional=True)
        check_number("lr", self.lr, "> 0", lambda value: value > 0)
        check_number("weight_decay", self.weight_decay, ">= 0", lambda value: value >= 0)
        if not isinstance(self.betas, (list, tuple)) or len(self.betas) != 2:
            raise bad_value("betas", "a pair of numbers in [0, 1), e.g. [0.9, 0.999]", self.betas)
        for index, beta in enumerate(self.betas):
            check_number(f"betas[{index}]", beta, "in [0, 1)", lambda value: 0 <= value < 1)
        self.betas = tuple(self.betas)
        check_number("eps", self.eps, "> 0", lambda value: value > 0)
        check_choice("schedule", self.schedule, Schedule)
        check_int("warmup_steps", self.warmup_steps, 0)
        check_number("max_grad_norm", self.max_grad_norm, ">= 0 (0 disables clipping)", lambda value: value >= 0)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> OptimConfig:
        return cls(**fields_from_dict(cls, data))
