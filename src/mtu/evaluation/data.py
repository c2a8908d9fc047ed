"""What `mtu eval --data` reads: the toy world's held-out set (with its oracle), or any data source of the data layer.

    --data toyworld         the toy world's held-out evaluation set of the task (`mtu.toyworld.evaluate`): the
                            examples every toy-world score is measured on, with the oracle's metrics
    --data source.yaml      one source as `mtu train` and `mtu data validate` read it: a YAML mapping with
                            `format:` (a source dict), or a run file whose `data:` holds one source of the task
    --data PATH             a folder with metadata.jsonl, WebDataset .tar shards, or a Hugging Face dataset
                            (save_to_disk folder, parquet/arrow files), read with the task's first schema

Examples are read one at a time (item `i` of the source, epoch 0), so thousands of images never sit in memory.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError

TOYWORLD = "toyworld"
TOYWORLD_DEFAULT_COUNT = 256  # as `mtu toyworld package --eval-count`
YAML_SUFFIXES = (".yaml", ".yml", ".json")


def image_uint8(image) -> torch.Tensor:
    """A PIL image, or a (3, H, W) tensor in [-1, 1], as uint8 (3, H, W)."""
    if isinstance(image, torch.Tensor):
        return ((image.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.uint8).copy()).permute(2, 0, 1)


@dataclass
class EvalExample:
    """One example: what the pipeline is called with and what the metrics compare its output to.

    Args:
        index: Its index in the source (the name of its image on disk).
        key: Its name in the source, for reports.
        prompt: The prompt (the instruction for edit and inpaint), or None.
        image: The pipeline's input image (PIL, or a (3, R, R) tensor in [-1, 1]), or None.
        target: The reference image, uint8 (3, H, W); the output is generated at its size.
        mask: Where the edit acts, bool (1, H, W), or None where unknown.
        input_caption, output_caption: Captions of the input and of the wanted output, or None.
        toy: The toy world's `evaluate.Example` (for the oracle), or None.
    """

    index: int
    key: str
    prompt: str | None
    image: object
    target: torch.Tensor
    mask: torch.Tensor | None = None
    input_caption: str | None = None
    output_caption: str | None = None
    toy: object = None

    @property
    def input_uint8(self) -> torch.Tensor | None:
        return None if self.image is None else image_uint8(self.image)


@dataclass
class EvalData:
    """An evaluation's examples: `read(index)` gives example `index`, or None when the source cannot read it (its
    key is then added to `failures`). `describe` goes into the results and decides whether a run may resume."""

    describe: dict
    length: int
    read: Callable[[int], EvalExample | None]
    oracle: bool = False
    failures: list = field(default_factory=list)


def _toy_example(example, index: int) -> EvalExample:
    from ..toyworld.scene import caption
    from ..toyworld.tasks import removal_mask

    edit = example.edit
    mask = None
    if edit is not None and edit.kind == "remove":
        mask = torch.from_numpy(np.asarray(removal_mask(edit, example.target.size[0])) > 127)[None]  # (1, H, W)
    return EvalExample(index, f"toyworld-test-{index}", example.prompt, example.image, image_uint8(example.target),
                       mask, caption(edit.before) if edit else None, caption(edit.after) if edit else None,
                       example)


def toyworld_data(task: str, count: int) -> EvalData:
    """The toy world's held-out examples of `task` (the oracle scores them too)."""
    from ..toyworld.evaluate import evaluation_set

    examples = evaluation_set(task, count)
    return EvalData({"kind": TOYWORLD, "split": "test", "count": count}, count,
                    lambda index: _toy_example(examples[index], index), oracle=True)


def _source_example(dataset, failures: list, index: int) -> EvalExample | None:
    item = dataset.get(index, 0)
    if item is None:  # unreadable: the data layer logged why
        failures.append(dataset.key(index))
        return None
    mask = item["mask"] > 0.5 if "mask" in item else None
    return EvalExample(index, item["key"], item["prompt"] or None, item.get("condition"), image_uint8(item["target"]),
                       mask, item.get("input_caption"), item.get("output_caption"))


def _infer_format(path: Path) -> str:
    from ..data.sources import METADATA_FILE

    if path.is_dir() and (path / METADATA_FILE).is_file():
        return "folder"
    if path.suffix == ".tar" or (path.is_dir() and any(path.glob("*.tar"))):
        return "webdataset"
    return "hf"


def _source_dict(value: str, task: str) -> dict:
    """The source dict `--data` names (see the module docstring)."""
    from ..plugins import load_plugins
    from ..tasks.base import task_plugin
    from ..training.config import read_config_file, resolve_config_paths

    path = Path(value).expanduser()
    if path.is_file() and path.suffix in YAML_SUFFIXES:
        tree = resolve_config_paths(read_config_file(path, flag="--data"), path.parent)
        load_plugins(tree.get("plugins") or [], field="--data")
        if "format" in tree:
            return tree
        sources = [entry for entry in tree.get("data") or [] if isinstance(entry, dict) and entry.get("task") == task]
        if len(sources) != 1:
            raise InputError(f"{value!r} must be a source (a mapping with `format:`) or a run file with one `data:` "
                             f"source of task {task!r}; it has {len(sources)}.", field="--data")
        return sources[0]
    schemas = [name for name in task_plugin(task).schemas]
    if not schemas:
        raise InputError(f"task {task!r} names no data schema; give --data a source YAML with `schema:`.",
                         field="--data")
    return {"format": _infer_format(path), "path": str(path), "task": task, "schema": schemas[0]}


def source_data(value: str, task: str, count: int | None) -> EvalData:
    """The first `count` (default all) examples of the source `value` names."""
    from ..data.dataset import build_dataset
    from ..data.registry import source_from_dict

    entry = _source_dict(value, task)
    if entry.get("task", task) != task:
        raise InputError(f"the source in {value!r} is for task {entry['task']!r}, not `--task` {task!r}.",
                         field="--data")
    try:
        config = source_from_dict({**entry, "task": task})
        dataset = build_dataset(config)
    except InputError as error:
        raise error.within("--data") from None
    length = len(dataset) if count is None else min(count, len(dataset))
    failures = []
    return EvalData({"kind": "source", "source": config.to_dict(), "count": length}, length,
                    lambda index: _source_example(dataset, failures, index), failures=failures)


def open_eval_data(value, task: str, count: int | None) -> EvalData:
    """`--data` as `EvalData` (see the module docstring); raises `InputError` naming `--data`."""
    if not isinstance(value, (str, Path)) or not str(value):
        raise InputError(f"must be {TOYWORLD!r}, a source YAML or a data folder/file, got {value!r}.", field="--data")
    if str(value) == TOYWORLD and not Path(TOYWORLD).exists():
        return toyworld_data(task, count or TOYWORLD_DEFAULT_COUNT)
    if not Path(str(value)).expanduser().exists():
        raise InputError(f"{str(value)!r} does not exist; give {TOYWORLD!r} (the toy world's held-out set), a source "
                         f"YAML, or a data folder or file.", field="--data")
    return source_data(str(value), task, count)
