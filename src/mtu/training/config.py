"""`TrainConfig`: a training run is a YAML file plus `--section.field value` overrides (torchtitan style).

The resolved config (presets and overrides applied) is saved as `config.yaml` in the run folder; resuming
with a different one is refused, naming the fields that differ.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import yaml

from ..configuration import check_counts, known_fields

Method = Literal["mtu", "full", "lora", "ia3", "lora_shared", "ia3_shared"]
Optimizer = Literal["adam", "adamw"]
Schedule = Literal["constant", "constant_with_warmup", "linear", "cosine"]
Precision = Literal["no", "fp16", "bf16"]
Sampling = Literal["stratified", "weighted"]
Logger = Literal["tensorboard", "wandb", "none"]

# The paper's recipe per base model (Appendix A.2; N from Table 2), as a config tree merged *under* the run file:
# a value the run file or an override gives wins, field by field. `data` is not a list here: its fields are set on
# every data source that does not set them. PRESET_SOURCES says, per field, whether the value is the paper's,
# derived from its numbers, or ours where it is silent; docs/PRESETS.md is the table with the paper's words.
PAPER_TRAIN_SAMPLES = {"t2i": 118_287, "edit": 281_709, "sr": 23_744, "inpaint": 90_089}  # Table 6, train splits
PAPER_EPOCHS, PAPER_GPUS, PAPER_BATCH_PER_GPU = 100, 8, 16  # A.2: "8x A100 GPUs for 100 epochs ... 16 per GPU"
# The trainer counts optimizer steps, not epochs: 100 epochs of the four train splits at a global batch of 8 x 16.
PAPER_STEPS = math.ceil(PAPER_EPOCHS * sum(PAPER_TRAIN_SAMPLES.values()) / (PAPER_GPUS * PAPER_BATCH_PER_GPU))


def _paper_recipe(num_experts: int, optim: dict) -> dict:
    return {
        "model": {"mtu": {"num_experts": num_experts, "granularity": None, "top_k": None}},
        "data": {"resolution": 512},
        "batch_size": PAPER_BATCH_PER_GPU,
        "gradient_accumulation_steps": 1,
        "max_steps": PAPER_STEPS,
        # betas, eps, schedule, warm-up and clipping: the paper is silent; these are our defaults, kept explicit.
        "optim": {**optim, "betas": [0.9, 0.999], "eps": 1e-8, "schedule": "constant_with_warmup", "warmup_steps": 0,
                  "max_grad_norm": 1.0},
    }


PRESETS: dict[str, dict] = {
    "sd15": _paper_recipe(4, {"optimizer": "adam", "lr": 1e-4, "weight_decay": 0.0}),
    "sdxl": _paper_recipe(1, {"optimizer": "adamw", "lr": 5e-5, "weight_decay": 0.01}),
}

# Where each preset value comes from: "paper" (stated in the paper), "derived" (computed from the paper's numbers)
# or "ours" (the paper is silent; our default, kept explicit so the preset spells out the whole run).
PRESET_SOURCES: dict[str, dict[str, str]] = {
    name: {
        "model.mtu.num_experts": "paper", "model.mtu.granularity": "paper", "model.mtu.top_k": "paper",
        "data.resolution": "paper", "batch_size": "paper", "gradient_accumulation_steps": "ours",
        "max_steps": "derived", "optim.optimizer": "paper", "optim.lr": "paper",
        "optim.weight_decay": "paper" if name == "sdxl" else "ours",  # A.2 gives a weight decay for SDXL only
        "optim.betas": "ours", "optim.eps": "ours", "optim.schedule": "ours", "optim.warmup_steps": "ours",
        "optim.max_grad_norm": "ours",
    }
    for name in PRESETS
}


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads `1e-4` as a string; learning rates are written that way, so read it as a float."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[0-9][0-9_]*[eE][-+]?[0-9]+|\.[0-9_]+"
               r"(?:[eE][-+]?[0-9]+)?|\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."),
)


def read_yaml(text: str):
    return yaml.load(text, Loader=_Loader)


def _check_choice(owner: str, name: str, value, literal) -> None:
    if value not in get_args(literal):
        raise ValueError(f"`{owner}.{name}` must be one of {get_args(literal)}, got {value!r}.")


def _check_positive(owner: str, name: str, value, allow_zero: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"`{owner}.{name}` must be a number {bound}, got {value!r}.")


@dataclass
class ModelConfig:
    """What to train.

    Args:
        base: Base text-to-image pipeline: a diffusers folder, or a hub id when online.
        method: "mtu" (the paper), or a baseline: "full" fine-tuning; "lora" / "ia3" through peft with one adapter
            per task, each sample through its task's (Table 3's task-specific adapters); "lora_shared" /
            "ia3_shared" with one adapter shared by all tasks (what "lora" / "ia3" trained before issue 12).
        mtu: `MTUConfig` fields other than `tasks` (tasks come from `data`), e.g. {num_experts: 4}.
        adapter: Start from this MTU adapter folder instead of upcycling the base anew.
        lora_rank: LoRA rank of each adapter (methods "lora", "lora_shared"), on the FFN layers; to match MTU's
            trainable parameters over all task adapters, see `mtu.training.methods.matched_lora_rank`.
        lora_alpha: LoRA alpha; default the rank.
        ia3_on_attention: IA3 also on attention (the paper applies it to the whole block; FFN-only did poorly).
    """

    base: str = ""
    method: Method = "mtu"
    mtu: dict = field(default_factory=dict)
    adapter: str | None = None
    lora_rank: int = 8
    lora_alpha: float | None = None
    ia3_on_attention: bool = True

    def __post_init__(self):
        if not isinstance(self.base, str) or not self.base:
            raise ValueError(f"`model.base` must name a diffusers pipeline folder or hub id, got {self.base!r}.")
        _check_choice("model", "method", self.method, Method)
        if "tasks" in self.mtu:
            raise ValueError("`model.mtu.tasks` is not set here: the tasks are those of the `data` sources.")
        if not isinstance(self.lora_rank, int) or self.lora_rank < 1:
            raise ValueError(f"`model.lora_rank` must be an integer >= 1, got {self.lora_rank!r}.")


@dataclass
class OptimConfig:
    """Optimizer and learning-rate schedule (only trainable weights are optimized, kept in fp32).

    Args:
        optimizer: "adam" or "adamw".
        lr: Peak learning rate.
        weight_decay: Decoupled for adamw, L2 for adam.
        betas: Adam betas.
        eps: Adam epsilon.
        schedule: LR schedule after warm-up.
        warmup_steps: Linear warm-up steps.
        max_grad_norm: Gradient clipping norm; 0 disables. Ours: the paper does not mention clipping.
    """

    optimizer: Optimizer = "adam"
    lr: float = 1e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    schedule: Schedule = "constant_with_warmup"
    warmup_steps: int = 0
    max_grad_norm: float = 1.0

    def __post_init__(self):
        _check_choice("optim", "optimizer", self.optimizer, Optimizer)
        _check_choice("optim", "schedule", self.schedule, Schedule)
        _check_positive("optim", "lr", self.lr)
        _check_positive("optim", "weight_decay", self.weight_decay, allow_zero=True)
        _check_positive("optim", "max_grad_norm", self.max_grad_norm, allow_zero=True)
        _check_positive("optim", "warmup_steps", self.warmup_steps, allow_zero=True)
        self.betas = tuple(self.betas)


@dataclass
class TrainConfig:
    """One training run.

    Args:
        output_dir: Run folder: config.yaml, checkpoints/, logs/, validation/, final/.
        model: What to train (`ModelConfig`).
        data: Data sources, one or more per task (`mtu.data.DataSourceConfig` fields); their tasks, in order of
            first appearance, are the model's tasks.
        optim: Optimizer and schedule (`OptimConfig`).
        preset: "sd15" or "sdxl": the paper's recipe for that base (Appendix A.2, Table 2: experts, batch per
            process, resolution, steps for 100 epochs, optimizer), filling every field the run file leaves unset
            (`PRESETS`, docs/PRESETS.md); or None.
        max_steps: Optimizer steps.
        batch_size: Samples per process per micro-step.
        gradient_accumulation_steps: Micro-steps per optimizer step.
        mixed_precision: "no", "fp16" or "bf16" for the frozen parts and activations; trainable weights stay fp32.
        gradient_checkpointing: Recompute transformer blocks in backward to save memory.
        ema_decay: EMA of the trainable weights; None disables.
        seed: Seeds everything: batches, noise, timesteps, dropout (each a function of seed and step).
        task_sampling: "weighted" (each sample's source drawn by the sources' `weight`s, the mixing ratios) or
            "stratified" (tasks take turns, so every process's share of >= T samples holds all T tasks).
        task_loss_weights: Per-task loss weights in Eq. 2 (default 1).
        conditioning_dropout: Classifier-free guidance training (InstructPix2Pix): each of "drop text", "drop
            image", "drop both" happens with this probability.
        snr_gamma: Min-SNR-gamma loss weighting (diffusers' `--snr_gamma`; 5 is the value its authors suggest; the
            paper does not mention it); None: off.
        checkpoint_every: Steps between checkpoints (0: only at the end).
        keep_checkpoints: Most recent checkpoints kept.
        resume: "none", "auto" (latest checkpoint in output_dir, if any) or a checkpoint folder.
        max_nonfinite_steps: Consecutive steps with a non-finite loss (skipped) before the run stops.
        log_with: "tensorboard", "wandb" or "none".
        log_every: Steps between log lines.
        validate_every: Steps between validation images (0: never).
        num_workers: DataLoader worker processes.
        cache_dir: Latent/text-embedding cache made by `mtu cache` (None: encode on the fly).
    """

    output_dir: str = "runs/mtu"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: list[dict] = field(default_factory=list)
    optim: OptimConfig = field(default_factory=OptimConfig)
    preset: str | None = None
    max_steps: int = 1000
    batch_size: int = 4
    gradient_accumulation_steps: int = 1
    mixed_precision: Precision = "no"
    gradient_checkpointing: bool = False
    ema_decay: float | None = None
    seed: int = 0
    task_sampling: Sampling = "weighted"
    task_loss_weights: dict[str, float] = field(default_factory=dict)
    conditioning_dropout: float = 0.05
    snr_gamma: float | None = None
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    resume: str = "none"
    max_nonfinite_steps: int = 20
    log_with: Logger = "tensorboard"
    log_every: int = 10
    validate_every: int = 0
    num_workers: int = 0
    cache_dir: str | None = None

    def __post_init__(self):
        if isinstance(self.model, dict):
            self.model = ModelConfig(**self.model)
        if isinstance(self.optim, dict):
            self.optim = OptimConfig(**self.optim)
        if not self.data:
            raise ValueError("`data` must list at least one source, got none.")
        check_counts(self, ("max_steps", "batch_size", "gradient_accumulation_steps", "keep_checkpoints", "log_every",
                            "max_nonfinite_steps"))
        for name in ("checkpoint_every", "validate_every", "num_workers"):
            _check_positive("train", name, getattr(self, name), allow_zero=True)
        _check_choice("train", "mixed_precision", self.mixed_precision, Precision)
        _check_choice("train", "task_sampling", self.task_sampling, Sampling)
        _check_choice("train", "log_with", self.log_with, Logger)
        if not 0 <= self.conditioning_dropout <= 1 / 3:
            raise ValueError(f"`conditioning_dropout` must be in [0, 1/3], got {self.conditioning_dropout!r}.")
        gamma = self.snr_gamma
        if gamma is not None and (isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not gamma > 0):
            raise ValueError(f"`snr_gamma` must be None or a number > 0, got {self.snr_gamma!r}.")
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            raise ValueError(f"`ema_decay` must be None or in (0, 1), got {self.ema_decay!r}.")
        if self.preset is not None and self.preset not in PRESETS:
            raise ValueError(f"`preset` must be one of {sorted(PRESETS)} or null, got {self.preset!r}.")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    node = tree
    parts = dotted.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ValueError(f"override `--{dotted}`: `{part}` is not a section.")
    node[parts[-1]] = value


def _merge(defaults: dict, user: dict) -> dict:
    merged = dict(defaults)
    for key, value in user.items():
        merged[key] = _merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) \
            else value
    return merged


def parse_overrides(items: list[str]) -> dict:
    """["--optim.lr", "2e-4", "--max_steps=10"] -> nested dict; values parsed as YAML scalars/lists."""
    tree: dict = {}
    index = 0
    while index < len(items):
        item = items[index]
        if not item.startswith("--"):
            raise ValueError(f"override {item!r} must look like --section.field value")
        key, separator, value = item[2:].partition("=")
        if not separator:
            if index + 1 >= len(items):
                raise ValueError(f"override `--{key}` has no value")
            value, index = items[index + 1], index + 1
        _set_dotted(tree, key.replace("-", "_"), read_yaml(value))
        index += 1
    return tree


def load_train_config(path: str | Path | None = None, overrides: list[str] | dict | None = None) -> TrainConfig:
    """Reads a YAML run file, applies the overrides over it and the preset under both, and validates."""
    user = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"`--config` file {str(path)!r} does not exist.")
        user = read_yaml(path.read_text()) or {}
        if not isinstance(user, dict):
            raise ValueError(f"`--config` file {str(path)!r} must hold a mapping, got {type(user).__name__}.")
    tree = _merge(user, overrides if isinstance(overrides, dict) else parse_overrides(overrides or []))
    return config_from_dict(apply_preset(tree))


def apply_preset(tree: dict) -> dict:
    """`tree` with its preset's values under it: every field `tree` sets (even to null) keeps its value."""
    preset = tree.get("preset")
    if preset is None or preset not in PRESETS:  # an unknown name is refused by TrainConfig, naming the presets
        return tree
    defaults = copy.deepcopy(PRESETS[preset])
    source_defaults = defaults.pop("data")
    tree = _merge(defaults, tree)
    if isinstance(tree.get("data"), list):
        tree["data"] = [_merge(source_defaults, source) if isinstance(source, dict) else source
                        for source in tree["data"]]
    return tree


def config_from_dict(tree: dict) -> TrainConfig:
    sections = {"model": ModelConfig, "optim": OptimConfig}
    values = known_fields(TrainConfig, tree)
    for key, section in sections.items():
        if isinstance(values.get(key), dict):
            values[key] = section(**known_fields(section, values[key], owner=f"TrainConfig.{key}"))
    return TrainConfig(**values)


def config_differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Dotted names of the fields whose values differ between two resolved config dicts."""
    differing = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            differing += config_differences(a, b, f"{prefix}{key}.")
        elif a != b:
            differing.append(f"{prefix}{key}")
    return differing
