"""Task registry: which tasks exist and what each feeds the UNet.

A task declares its conditioning inputs; the number of UNet input channels follows from them (Sec. 3: image
conditions are VAE latents concatenated to the noisy latents along the channel axis, as in InstructPix2Pix).
Users add their own tasks with `register_task` without editing the package.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from importlib import import_module, metadata

from ..errors import InputError

# Each conditioning input and the channels it adds, in units of "latent" (the VAE's latent channels) or fixed.
_INPUT_CHANNELS = {"image": "latent", "masked_image": "latent", "mask": 1}


@dataclass(frozen=True)
class TaskSpec:
    """One task the upcycled model can be trained on and asked for.

    Args:
        name: Short identifier used everywhere (configs, CLI, pipeline's `task=`).
        description: One line for reports and `mtu inspect`.
        uses_prompt: Whether the task is text-conditioned; `sr` is not (it is trained with the empty prompt).
        image_inputs: Conditioning maps concatenated after the noisy latents, in order. Each is one of
            `"image"` (latents of a conditioning image), `"masked_image"` (latents of the masked image) or `"mask"`
            (one channel).
    """

    name: str
    description: str = ""
    uses_prompt: bool = True
    image_inputs: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise InputError(f"`name` must be a Python identifier such as 'colorize', got {self.name!r}.")
        object.__setattr__(self, "image_inputs", tuple(self.image_inputs))
        for item in self.image_inputs:
            if item not in _INPUT_CHANNELS:
                raise InputError(
                    f"`image_inputs` of task {self.name!r} has {item!r}; supported: {sorted(_INPUT_CHANNELS)}."
                )

    def in_channels(self, latent_channels: int = 4) -> int:
        """UNet input channels for this task: noisy latents plus every conditioning map."""
        channels = latent_channels
        for item in self.image_inputs:
            size = _INPUT_CHANNELS[item]
            channels += latent_channels if size == "latent" else size
        return channels

    def to_dict(self) -> dict:
        return {**asdict(self), "image_inputs": list(self.image_inputs)}

    @classmethod
    def from_dict(cls, data: dict) -> "TaskSpec":
        return cls(**{**data, "image_inputs": tuple(data.get("image_inputs", ()))})


# The built-in tasks: one plug-in module each (`mtu.tasks.t2i`, ...), imported on the first look-up, in this order.
# A module registers its `mtu.tasks.Task` (which registers the `TaskSpec` here). Installed packages announce theirs in
# the entry-point group `mtu.tasks` (a module path), and a run's `plugins:` or `--plugin` imports any other.
BUILTIN_TASK_MODULES = ("mtu.tasks.t2i", "mtu.tasks.edit", "mtu.tasks.sr", "mtu.tasks.inpaint",
                        "mtu.tasks.inpaint_mask")
ENTRY_POINT_GROUP = "mtu.tasks"

_REGISTRY: dict[str, TaskSpec] = {}
_ORIGINS: dict[str, str] = {}  # task -> the plug-in module that registered it (`mtu.plugins.load_plugins`)
_LOADED = False


def _load_builtins() -> None:
    """Imports the built-in task modules and those of the `mtu.tasks` entry-point group, once. By module name
    (importlib), so this model-level registry never imports the data and toy-world parts the plug-ins use."""
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    for module in BUILTIN_TASK_MODULES:
        import_module(module)
    for entry_point in metadata.entry_points(group=ENTRY_POINT_GROUP):
        module = entry_point.value.split(":")[0]
        before = set(_REGISTRY)
        import_module(module)
        record_origin(set(_REGISTRY) - before, module)


def record_origin(names, module: str) -> None:
    """Notes that plug-in `module` registered the tasks `names` (an adapter saves it, to name it when missing)."""
    for name in names:
        _ORIGINS.setdefault(name, module)


def task_origin(name: str) -> str | None:
    """The plug-in module that registered task `name`; None for a built-in task or one registered in code."""
    return _ORIGINS.get(name)


def register_task(spec: TaskSpec, overwrite: bool = False) -> TaskSpec:
    """Adds a task to the registry, e.g. `register_task(TaskSpec("colorize", image_inputs=("image",)))`."""
    if not isinstance(spec, TaskSpec):
        raise InputError(f"`spec` must be a TaskSpec, got {type(spec).__name__}.")
    _load_builtins()
    existing = _REGISTRY.get(spec.name)
    if existing is not None and existing != spec and not overwrite:
        raise InputError(
            f"task {spec.name!r} is already registered as {existing}; pass `overwrite=True` to replace it."
        )
    _REGISTRY[spec.name] = spec
    return spec


def get_task(name: str) -> TaskSpec:
    """Returns the registered task called `name`, or raises naming the known tasks."""
    _load_builtins()
    if name not in _REGISTRY:
        raise InputError(f"unknown task {name!r}; registered tasks: {', '.join(available_tasks())}.")
    return _REGISTRY[name]


def available_tasks() -> list[str]:
    _load_builtins()
    return list(_REGISTRY)
