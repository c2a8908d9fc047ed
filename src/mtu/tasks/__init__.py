"""Tasks as plug-ins: `Task` (everything per task in one registered object) and the five built-in task modules.

    base.py          Task, Evaluation, Intents (chat), `register`, `task_plugin` (look a task up), `seed_index`
    sampling.py      TaskDefaults (sampling defaults, per model family)
    t2i.py, edit.py, sr.py, inpaint.py, inpaint_mask.py   the built-in tasks, one module each: the examples to copy

The built-in modules are imported by name on the first look-up (`mtu.upcycling.tasks.BUILTIN_TASK_MODULES`), never
here: they use the data layer and the toy world, which themselves look tasks up.
"""

from .base import Evaluation, Intents, Task, register, seed_index, stable_index, task_plugin
from .sampling import TaskDefaults

__all__ = ["Evaluation", "Intents", "Task", "TaskDefaults", "register", "seed_index", "stable_index", "task_plugin"]
