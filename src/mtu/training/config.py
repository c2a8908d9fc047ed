"""`TrainConfig`: a training run is a YAML file plus `--section.field value` overrides (torchtitan style).

The resolved config (presets and overrides applied) is saved as `config.yaml` in the run folder; resuming
with a different one is refused, naming the fields that differ. Every field, nested sections (`config_sections`) and
data sources included, is checked when the config is built, before any model or accelerator: an error is an
`InputError` naming the field's full path and the value (`optim.lr: must be a finite number > 0, got inf.`).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from ..data.registry import fields_from_dict
from ..errors import InputError
from ..plugins import load_plugins
from ..upcycling.text_encoders import check_encoder_tasks
from .config_sections import (
    Method,
    ModelConfig,
    MTUSection,
    OptimConfig,
    Optimizer,
    Schedule,
    bad_value,
    check_bool,
    check_choice,
    check_int,
    check_number,
    check_text,
    section_from,
    sources_from,
    task_weights_from,
)

__all__ = [
    "PRESETS",
    "PRESET_SOURCES",
    "MTUSection",
    "Method",
    "ModelConfig",
    "OptimConfig",
    "Optimizer",
    "Schedule",
    "TrainConfig",
    "apply_preset",
    "config_differences",
    "config_from_dict",
    "load_train_config",
    "parse_overrides",
    "read_config_file",
    "read_yaml",
    "resolve_config_paths",
]

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
    """YAML 1.1 reads `1e-4` as a string; learning rates are written that way, so read it as a float. A key given
    twice in one mapping is an error (plain YAML keeps the last one without a word)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                if (key_node.tag, key_node.value) in seen:
                    raise yaml.constructor.ConstructorError(None, None, f"key {key_node.value!r} is given twice",
                                                            key_node.start_mark)
                seen.add((key_node.tag, key_node.value))
        return super().construct_mapping(node, deep)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[0-9][0-9_]*[eE][-+]?[0-9]+|\.[0-9_]+"
               r"(?:[eE][-+]?[0-9]+)?|\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."),
)


def read_yaml(text: str):
    return yaml.load(text, Loader=_Loader)


def _yaml_problem(error: yaml.YAMLError) -> str:
    """"line 3, column 7: <what is wrong>" (lines and columns from 1), from a PyYAML error."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark is not None else problem


def read_config_file(path: str | Path, flag: str = "--config") -> dict:
    """The mapping a YAML run file holds (empty for an empty file).

    Raises:
        FileNotFoundError: when there is no such file.
        InputError: (field `flag`) when it is not UTF-8 text, not valid YAML (naming the line) or not a mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"`{flag}` file {str(path)!r} does not exist.")
    try:
        tree = read_yaml(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as error:
        raise InputError(f"{str(path)!r} is not UTF-8 text (byte {error.start} is {error.object[error.start]:#04x}).",
                         field=flag) from None
    except yaml.YAMLError as error:
        raise InputError(f"{str(path)!r} is not valid YAML: {_yaml_problem(error)}.", field=flag) from None
    if tree is None:
        return {}
    if not isinstance(tree, dict):
        raise InputError(f"{str(path)!r} must hold a mapping of run fields (`model:`, `data:`, ...), got a "
                         f"{type(tree).__name__}.", field=flag)
    return tree


@dataclass
class TrainConfig:
    """One training run.

    Args:
        output_dir: Run folder: config.yaml, checkpoints/, logs/, validation/, final/. Paths written in a run file
            (this, `cache_dir`, `resume`, `model.base`, `model.adapter`, file sources' `path`) are relative to the
            file's folder; those given on the command line, to the current directory (`resolve_config_paths`).
        model: What to train (`ModelConfig`).
        data: Data sources, one or more per task, each its format's typed config (`DataSourceConfig` for
            "folder", "hf", "webdataset"; a registered format's own class, e.g. "toyworld"), given as dicts and
            parsed by `DataSourceConfig.from_dict`; all share one `resolution`. Their tasks, in order of first
            appearance (`tasks`), are the model's tasks.
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
        task_loss_weights: Per-task loss weights in Eq. 2 (default 1), for tasks of `data` only.
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
        plugins: Modules that register the run's own tasks, schemas or source formats (`mtu.plugins`): module
            paths such as "my_package.my_task", or .py files (relative to the run file's folder). They are
            imported before any other field is checked, so `data` may name their tasks.
    """

    output_dir: str = "runs/mtu"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: list = field(default_factory=list)
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
    plugins: list[str] = field(default_factory=list)

    def __post_init__(self):
        self.plugins = load_plugins(self.plugins)  # first: the sources below may name a plug-in's task
        self.model = section_from("model", ModelConfig, self.model)
        self.optim = section_from("optim", OptimConfig, self.optim)
        self.data = sources_from(self.data)
        check_text("output_dir", self.output_dir, "a folder name")
        if self.preset is not None and (not isinstance(self.preset, str) or self.preset not in PRESETS):
            raise bad_value("preset", f"one of {sorted(PRESETS)} or null", self.preset)
        for name in ("max_steps", "batch_size", "gradient_accumulation_steps", "keep_checkpoints", "log_every",
                     "max_nonfinite_steps"):
            check_int(name, getattr(self, name), 1)
        for name in ("checkpoint_every", "validate_every", "num_workers", "seed"):
            check_int(name, getattr(self, name), 0)
        check_choice("mixed_precision", self.mixed_precision, Precision)
        check_choice("task_sampling", self.task_sampling, Sampling)
        check_choice("log_with", self.log_with, Logger)
        check_bool("gradient_checkpointing", self.gradient_checkpointing)
        check_number("ema_decay", self.ema_decay, "in (0, 1)", lambda value: 0 < value < 1, optional=True)
        check_number("conditioning_dropout", self.conditioning_dropout, "in [0, 1/3]",
                     lambda value: 0 <= value <= 1 / 3)
        check_number("snr_gamma", self.snr_gamma, "> 0", lambda value: value > 0, optional=True)
        self.task_loss_weights = task_weights_from(self.task_loss_weights, self.tasks)
        try:
            check_encoder_tasks(self.model.task_text_encoders, self.tasks, "task_text_encoders")
        except InputError as error:
            raise error.within("model") from None
        check_text("resume", self.resume, "'none', 'auto' or a checkpoint folder")
        check_text("cache_dir", self.cache_dir, "a cache folder made by `mtu cache`", optional=True)

    @property
    def tasks(self) -> list[str]:
        """The run's tasks, those of its data sources in order of first appearance (the model's tasks)."""
        return list(dict.fromkeys(source.task for source in self.data))

    def to_dict(self) -> dict:
        tree = dataclasses.asdict(self)
        tree["data"] = [source.to_dict() for source in self.data]
        return tree


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    node = tree
    parts = dotted.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise InputError(f"`{part}` is not a section, so it has no fields.", field=f"--{dotted}")
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
            raise InputError(f"override {item!r} must look like --section.field value.")
        key, separator, value = item[2:].partition("=")
        if not separator:
            if index + 1 >= len(items):
                raise InputError("has no value; give one as `--field value` or `--field=value`.", field=f"--{key}")
            value, index = items[index + 1], index + 1
        try:
            parsed = read_yaml(value)
        except yaml.YAMLError as error:
            raise InputError(f"value {value!r} is not valid YAML: {_yaml_problem(error)}.", field=f"--{key}") \
                from None
        _set_dotted(tree, key.replace("-", "_"), parsed)
        index += 1
    return tree


# -- paths in a run file --------------------------------------------------------------------------------------------
FILE_FORMATS = ("folder", "hf", "webdataset")  # the source formats whose `path` is a path ("hf": or a hub id)


def _path_from(value, folder: Path, *, hub: bool = False, shipped: str | None = None):
    """`value` (a path as written in a file in `folder`) made absolute against `folder`. Kept as written when it
    exists nowhere beside the file and is, where `hub`, a hub id (`looks_like_hub_id` there) or `random:<arch>`,
    or a shipped short name of kind `shipped`. Non-strings are left for the field checks."""
    from ..shipped import short_names
    from ..upcycling.bases import RANDOM_PREFIX, looks_like_hub_id

    if not isinstance(value, str) or not value:
        return value
    path = Path(value).expanduser()
    if path.is_absolute():
        return str(path)
    beside = folder / path
    if not beside.exists():
        if hub and (looks_like_hub_id(value, folder) or value.startswith(RANDOM_PREFIX)):
            return value
        if shipped is not None and value in short_names(shipped):
            return value
    return str(beside.resolve())


def resolve_config_paths(tree: dict, folder) -> dict:
    """A run tree's paths made absolute against `folder` (the run file's folder): `output_dir`, `cache_dir`,
    `resume` (a checkpoint folder), `model.base`, `model.adapter`, and the `path` of "folder", "hf" and
    "webdataset" sources. Hub ids, shipped short names and `random:<arch>` are kept (`_path_from`)."""
    folder = Path(folder).resolve()
    tree = copy.deepcopy(tree)
    for key in ("output_dir", "cache_dir"):
        if key in tree:
            tree[key] = _path_from(tree[key], folder)
    if isinstance(tree.get("plugins"), list):  # a plug-in given as a .py file; module paths are kept
        tree["plugins"] = [_path_from(item, folder) if isinstance(item, str) and item.endswith(".py") else item
                           for item in tree["plugins"]]
    if tree.get("resume") not in (None, "none", "auto"):
        tree["resume"] = _path_from(tree["resume"], folder)
    model = tree.get("model")
    if isinstance(model, dict):
        if "base" in model:
            model["base"] = _path_from(model["base"], folder, hub=True, shipped="base")
        if "adapter" in model:
            model["adapter"] = _path_from(model["adapter"], folder, shipped="adapter")
    data = tree.get("data")
    for source in data if isinstance(data, list) else []:
        if isinstance(source, dict) and source.get("format") in FILE_FORMATS and "path" in source:
            source["path"] = _path_from(source["path"], folder, hub=source["format"] == "hf")
    return tree


def load_train_config(path: str | Path | None = None, overrides: list[str] | dict | None = None) -> TrainConfig:
    """Reads a YAML run file, applies the overrides over it and the preset under both, and validates every field
    (sections and data sources included) before anything is built; a bad value raises `InputError` naming its
    full path, e.g. `optim.lr` or `data[2].schema`.

    Relative paths in the file are relative to the file's folder (`resolve_config_paths`); those in `overrides`
    (the command line's) stay relative to the current directory.
    """
    user = resolve_config_paths(read_config_file(path), Path(path).parent) if path is not None else {}
    tree = _merge(user, overrides if isinstance(overrides, dict) else parse_overrides(overrides or []))
    return config_from_dict(apply_preset(tree))


def apply_preset(tree: dict) -> dict:
    """`tree` with its preset's values under it: every field `tree` sets (even to null) keeps its value."""
    preset = tree.get("preset")
    if not isinstance(preset, str) or preset not in PRESETS:  # an unknown one is refused by TrainConfig
        return tree
    defaults = copy.deepcopy(PRESETS[preset])
    source_defaults = defaults.pop("data")
    tree = _merge(defaults, tree)
    if isinstance(tree.get("data"), list):
        tree["data"] = [_merge(source_defaults, source) if isinstance(source, dict) else source
                        for source in tree["data"]]
    return tree


def config_from_dict(tree: dict) -> TrainConfig:
    """A `TrainConfig` from its dict form (a run file's mapping with the preset applied, or `to_dict()`); an
    unknown key anywhere is an error naming the nearest valid one."""
    return TrainConfig(**fields_from_dict(TrainConfig, tree))


def _resolved(tree: dict) -> dict:
    """`tree` as the config it resolves to (defaults written out, as JSON values), or as it is if it does not
    resolve (then the fields are compared as written)."""
    try:
        resolved = config_from_dict(tree).to_dict()
    except InputError:
        return tree
    # A run saved before issue 14 holds the run file's relative paths, which meant the current directory then.
    return json.loads(json.dumps(resolve_config_paths(resolved, Path.cwd())))


def _differences(old, new, prefix: str) -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        return [name for key in sorted(set(old) | set(new), key=str)
                for name in _differences(old.get(key), new.get(key), f"{prefix}.{key}" if prefix else str(key))]
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new) and old != new:
        return [name for index, (a, b) in enumerate(zip(old, new)) for name in _differences(a, b, f"{prefix}[{index}]")]
    return [] if old == new else [prefix]


def config_differences(old: dict, new: dict) -> list[str]:
    """Full paths of the fields whose values differ between two config dicts (`optim.lr`, `data[1].resolution`).

    Both are compared as the configs they resolve to, so a default written out on one side only is no difference
    (a run saved before the sections were typed holds only the `model.mtu` and source fields it set); a top-level
    key absent from both (e.g. `resume`, left out on purpose) is not compared.
    """
    keys = set(old) | set(new)
    old_resolved, new_resolved = _resolved(old), _resolved(new)
    return [name for key in sorted(keys)
            for name in _differences(old_resolved.get(key), new_resolved.get(key), key)]
