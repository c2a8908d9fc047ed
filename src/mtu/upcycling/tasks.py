"""Task registry: which tasks exist and what each feeds the UNet.

A task declares its conditioning inputs; the number of UNet input channels follows from them (Sec. 3: image
conditions are VAE latents concatenated to the noisy latents along the channel axis, as in InstructPix2Pix).
Users add their own tasks with `register_task` without editing the package.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..errors import InputError
from ..registry import Registry

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


# The built-in tasks: one plug-in module each (`mtu.tasks.t2i`, ...), imported by name on the first look-up, in this
# order (so this model-level registry never imports the data and toy-world parts the plug-ins use). A module
# registers its `mtu.tasks.Task` (which registers the `TaskSpec` here). Installed packages announce theirs in the
# entry-point group `mtu.tasks` (naming the module), and a run's `plugins:` or `--plugin` imports any other.
BUILTIN_TASK_MODULES = ("mtu.tasks.t2i", "mtu.tasks.edit", "mtu.tasks.sr", "mtu.tasks.inpaint",
                        "mtu.tasks.inpaint_mask")
ENTRY_POINT_GROUP = "mtu.tasks"

# The tasks' specs by name (`mtu.registry.Registry`, the mechanism of the schema and format registries too), and the
# plug-in module that registered each task (`task_origin`).
TASK_REGISTRY = Registry("task", ENTRY_POINT_GROUP, BUILTIN_TASK_MODULES)
_REGISTRY: dict[str, TaskSpec] = TASK_REGISTRY.items
_ORIGINS: dict[str, str] = TASK_REGISTRY.origins


def record_origin(names, module: str) -> None:
    """Notes that plug-in `module` registered the tasks `names` (an adapter saves it, to name it when missing)."""
    TASK_REGISTRY.note_origin(names, module)


def task_origin(name: str) -> str | None:
    """The plug-in module that registered task `name`; None for a built-in task or one registered in code."""
    return TASK_REGISTRY.origins.get(name)


def register_task(spec: TaskSpec, overwrite: bool = False) -> TaskSpec:
    """Adds a task to the registry, e.g. `register_task(TaskSpec("colorize", image_inputs=("image",)))`."""
    if not isinstance(spec, TaskSpec):
        raise InputError(f"`spec` must be a TaskSpec, got {type(spec).__name__}.")
    TASK_REGISTRY.load()
    TASK_REGISTRY.put(spec.name, spec, overwrite=overwrite)
    return spec


def get_task(name: str) -> TaskSpec:
    """Returns the registered task called `name`, or raises naming the known tasks."""
    spec = TASK_REGISTRY.get(name)
    if spec is None:
        raise InputError(f"unknown task {name!r}; registered tasks: {', '.join(available_tasks())}.")
    return spec


def available_tasks() -> list[str]:
    return list(TASK_REGISTRY.names())
