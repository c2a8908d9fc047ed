"""The upcycling core: config, tasks, router, experts, the MTU layer, the task-routed model frame (`TaskModel`) and
the MTU model on it, save/load and fold."""

from .bases import load_base_unet
from .config import MTUConfig
from .fold import fold
from .input_conv import TaskInputConv
from .layer import MTUFeedForward, TaskRouting
from .model import MTUModel, upcycle
from .router import TaskRouter
from .serialization import load_mtu
from .task_model import TaskModel
from .tasks import TaskSpec, available_tasks, get_task, register_task

__all__ = [
    "MTUConfig", "MTUFeedForward", "MTUModel", "TaskInputConv", "TaskModel", "TaskRouter", "TaskRouting", "TaskSpec",
    "available_tasks", "fold", "get_task", "load_base_unet", "load_mtu", "register_task", "upcycle",
]
