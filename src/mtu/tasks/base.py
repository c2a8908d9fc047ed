"""`Task`: one task as a plug-in, everything per task in one registered object (issue 15).

A task module builds one `Task` and calls `register(task)`; the five built-in tasks are such modules
(`mtu/tasks/t2i.py`, `edit.py`, `sr.py`, `inpaint.py`, `inpaint_mask.py`: the examples to copy). A `Task` wraps the
model's `TaskSpec` (what an adapter saves: name, prompt, image inputs) and adds the parts that are code, so never
saved: the data schemas that feed it, the toy-world pair maker, the evaluation hooks, the sampling defaults per model
family. Everything else looks a task up (`task_plugin(name)`) instead of keeping a table of task names.

Why beside `TaskSpec` rather than fields of it: a `TaskSpec` travels inside every adapter's JSON and is registered
from there when an adapter is loaded in a process that lacks the plug-in; functions do not travel. A task registered
as a bare `TaskSpec` (`mtu.register_task(TaskSpec(...))`, or from an adapter) gets an empty `Task`: it trains from
file sources and samples with the defaults of its guidance kind, and has no toy world.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from ..errors import InputError
from ..upcycling.tasks import TaskSpec, available_tasks, get_task, register_task
from .sampling import TaskDefaults

FAMILIES = ("sd", "sdxl")


@dataclass(frozen=True, eq=False)
class Evaluation:
    """How the toy world scores a task on held-out examples (`mtu.toyworld.evaluate`).

    Args:
        example: `(task, scene, rng, *, index, seed, size, sr_scale) -> evaluate.Example`: the held-out example made
            from `scene` (`rng` is the task's generator, shared by the examples in order).
        score: `(examples, outputs) -> {metric: mean}`, the task's scores.
        record: `(example, output, parsed, record) -> None`: adds the task's per-example fields to `record`
            (`metrics.example_record`; `parsed` is the output's parsed scene or None).
        main_metric: The key of `score` the reports compare against the baseline.
        main_record: The field of `record` whose mean is `main_metric` (its per-example values).
        higher_is_better: The direction of `main_metric`.
        baseline_name: The trivial baseline's name in reports.
        baseline: `(example) -> image`, the trivial baseline's output; None: the base model is the reference (t2i).
        card_fields: The fields of `record` a packaged model's card lists, the main one first; () lists
            `main_record` only.
        seed_index: Index of the task's random draws (`default_rng([seed, seed_index])`). The built-in tasks keep
            the indices they always had, so their held-out examples never change; None (a new task): a stable
            function of the task's name (`stable_index`).
    """

    example: Callable
    score: Callable
    record: Callable
    main_metric: str
    main_record: str
    higher_is_better: bool = True
    baseline_name: str = "base model"
    baseline: Callable | None = None
    card_fields: tuple[str, ...] = ()
    seed_index: int | None = None

    def __post_init__(self):
        object.__setattr__(self, "card_fields", tuple(self.card_fields) or (self.main_record,))


INTENT_VERBS = ("keep", "drop")  # or a word that replaces the matched phrase, e.g. "remove"


@dataclass(frozen=True)
class Intents:
    """How a chat user asks for the task in words (`mtu chat`'s router, `mtu.chat.route`).

    Args:
        phrases: Lower-case words or phrases that ask for the task ("remove", "get rid of"). Each word also finds
            its inflections ("sharp": "sharper", "sharpness"; "blur": "blurry", "blurred"; `mtu.chat.phrases.stem`);
            `a|b` finds either word ("it|image * big": "make it bigger", "the image 2x larger"); a `*` stands for
            zero to four words of any kind ("take * away": "take away the square", "take the square away").
            Typos within one letter of a phrase's words are read as those words.
        verb: What the prompt passed to the model is: "keep" (an edit instruction stays as typed), "drop" (what the
            phrase introduces, t2i: "draw a red circle" -> "a red circle"), or a word put first, before the object
            the request names ("remove": "i want the circle gone" -> "remove the circle", the wording the toy model
            was trained on).
        priority: When phrases of several tasks are found, the highest priority wins (the more specific request:
            "make it sharper" is sr, not an edit "make it ..."); built-ins: edit 0, t2i 1, sr 2, inpaint 3,
            inpaint_mask 4. A user's task defaults to 3.
    """

    phrases: tuple[str, ...]
    verb: str = "keep"
    priority: int = 3

    def __post_init__(self):
        phrases = tuple(self.phrases) if not isinstance(self.phrases, str) else (self.phrases,)
        bad = [p for p in phrases if not isinstance(p, str) or p != p.lower() or set(p.split()) <= {"*"}
               or any("" in part.split("|") for part in p.split())]
        if not phrases or bad:
            raise InputError(f"`phrases` must be non-empty lower-case words or phrases (`a|b` alternatives, `*` "
                             f"gaps, not only gaps), got {bad or self.phrases!r}.")
        if not isinstance(self.verb, str) or not self.verb.strip():
            raise InputError(f"`verb` must be one of {INTENT_VERBS} or a word, got {self.verb!r}.")
        object.__setattr__(self, "phrases", phrases)


@dataclass(frozen=True, eq=False)
class Task:
    """One task as a plug-in.

    Args:
        spec: The model's view of the task (name, prompt, image inputs; saved with every adapter).
        schemas: Names of the data schemas that feed it (`mtu.data.schemas`); the first is the toy world's.
        toy_pair: `(scene, size, rng) -> fields`, the role -> value dict of one toy-world training pair
            (`mtu.toyworld.tasks`); None: the task has no toy world. The "edit" task's also takes `kind_weights`
            (a source's `edit_kind_weights`).
        evaluation: The toy world's scoring of the task; None: not scored there.
        defaults: Sampling defaults per model family ("sd", "sdxl"); a family left out samples like the built-in
            task of the same guidance kind.
        prompt_optional: Whether a call without `prompt` runs with the empty prompt instead of being refused.
        colour: The task's colour in the demo's plots.
        extras: Room for later per-task parts (export notes, ...).
        intents: How a chat user asks for the task (`Intents`); None: `mtu chat` reaches it only by `/name`.
        metrics: Names of the metrics `mtu eval` scores the task with (`mtu.evaluation.metrics`; a plug-in adds
            its own with `mtu.evaluation.register_metric`); (): only the toy world's oracle scores it.
    """

    spec: TaskSpec
    schemas: tuple[str, ...] = ()
    toy_pair: Callable | None = None
    evaluation: Evaluation | None = None
    defaults: Mapping[str, TaskDefaults] = field(default_factory=dict)
    prompt_optional: bool = False
    colour: str = "#333333"
    extras: Mapping[str, object] = field(default_factory=dict)
    intents: Intents | None = None
    metrics: tuple[str, ...] = ()

    def __post_init__(self):
        if not isinstance(self.spec, TaskSpec):
            raise InputError(f"`spec` must be a TaskSpec, got {type(self.spec).__name__}.")
        object.__setattr__(self, "schemas", tuple(self.schemas))
        object.__setattr__(self, "metrics", (self.metrics,) if isinstance(self.metrics, str) else tuple(self.metrics))
        if not all(isinstance(name, str) and name for name in self.metrics):
            raise InputError(f"`metrics` of task {self.name!r} must be metric names (strings), got {self.metrics!r}.")
        unknown = [family for family in self.defaults if family not in FAMILIES]
        if unknown:
            raise InputError(f"`defaults` of task {self.name!r} has families {unknown}; supported: {FAMILIES}.")
        if self.intents is not None and not isinstance(self.intents, Intents):
            raise InputError(f"`intents` of task {self.name!r} must be an mtu.tasks.Intents, got "
                             f"{type(self.intents).__name__}.")

    @property
    def name(self) -> str:
        return self.spec.name


_PLUGINS: dict[str, Task] = {}


def register(task: Task, overwrite: bool = False) -> Task:
    """Registers `task` (and its `TaskSpec`, `mtu.register_task`); what a task module calls once."""
    if not isinstance(task, Task):
        raise InputError(f"`task` must be an mtu.tasks.Task, got {type(task).__name__}.")
    register_task(task.spec, overwrite=overwrite)
    _PLUGINS[task.name] = task
    return task


def task_plugin(name: str) -> Task:
    """The registered task `name` as a `Task`; a task registered as a bare `TaskSpec` gets an empty one."""
    spec = get_task(name)  # loads the built-ins; raises naming the registered tasks
    plugin = _PLUGINS.get(name)
    return plugin if plugin is not None and plugin.spec == spec else Task(spec)


def stable_index(name: str) -> int:
    """A seed index that depends on the task's name only (never on an order of tasks)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "big")


def seed_index(task: Task) -> int:
    """The index of `task`'s random draws in the toy world's evaluation sets."""
    evaluation = task.evaluation
    return evaluation.seed_index if evaluation and evaluation.seed_index is not None else stable_index(task.name)


def scored_tasks() -> tuple[str, ...]:
    """The registered tasks the toy world scores (those with an `Evaluation`), in registration order."""
    return tuple(name for name in available_tasks() if task_plugin(name).evaluation is not None)


class EvaluationField(Mapping):
    """{task: a field of its `Evaluation`} over the registered tasks the toy world scores, looked up when read."""

    def __init__(self, name: str):
        self.name = name

    def __getitem__(self, task: str):
        evaluation = task_plugin(task).evaluation if task in available_tasks() else None
        if evaluation is None:
            raise KeyError(task)
        return getattr(evaluation, self.name)

    def __iter__(self):
        return iter(scored_tasks())

    def __len__(self) -> int:
        return len(scored_tasks())
