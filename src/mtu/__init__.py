"""mtu: Multi-Task Upcycling of text-to-image diffusion models (Chavhan et al., ICML 2025)."""

__version__ = "0.1.0"

from .errors import InputError  # noqa: E402
from .upcycling import (  # noqa: E402
    MTUConfig,
    MTUFeedForward,
    MTUModel,
    TaskRouter,
    TaskSpec,
    available_tasks,
    fold,
    get_task,
    load_base_unet,
    load_mtu,
    register_task,
    upcycle,
)

__all__ = [
    "InputError", "MTUConfig", "MTUFeedForward", "MTUModel", "TaskRouter", "TaskSpec", "__version__", "available_tasks", "fold",
    "get_task", "load_base_unet", "load_mtu", "register_task", "upcycle",
]
