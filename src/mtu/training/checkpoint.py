"""Training checkpoints: full state in safetensors + JSON (never pickle), written atomically, pruned after; and
which checkpoint a run resumes from.

A checkpoint folder `checkpoint-0000100/` holds `state.safetensors` (every tensor: trainable weights, optimizer
moments, EMA, RNG states) and `state.json` (everything else, with tensors replaced by references). It is written
under a staging name and renamed into place, so a run killed at any moment leaves either the previous complete
checkpoint or the new one; older ones are pruned only after the new one is complete.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import torch
import yaml

from ..errors import InputError
from ..upcycling.serialization import atomic_save_directory, atomic_save_safetensors, read_safetensors
from .config import TrainConfig, config_differences

PATTERN = re.compile(r"^checkpoint-(\d+)$")
TENSORS, SKELETON = "state.safetensors", "state.json"


def _encode(value, tensors: dict, path: str, stored: dict | None = None):
    """JSON-able skeleton of `value`; tensors and arrays are stored in `tensors` under `path`.

    safetensors refuses tensors that share memory, and optimizers do share: DeepSpeed's ZeRO gives every parameter
    group's state the same `step` tensor. `stored` maps a stored tensor's memory to its path: the same tensor again
    becomes a reference to that path (loaded back as one shared tensor); another view of that memory, a copy.
    """
    stored = {} if stored is None else stored
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu()
        memory = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape),
                  tuple(tensor.stride()), tensor.dtype) if tensor.numel() else None
        if memory in stored:
            return {"__tensor__": stored[memory]}
        if memory is not None and ("storage", memory[0]) in stored:
            tensor = tensor.clone()
        elif memory is not None:
            stored[memory] = stored["storage", memory[0]] = path
        tensors[path] = tensor.contiguous()
        return {"__tensor__": path}
    if isinstance(value, np.ndarray):
        tensors[path] = torch.from_numpy(np.ascontiguousarray(value))
        return {"__ndarray__": path}
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value):
            return {k: _encode(v, tensors, f"{path}.{k}", stored) for k, v in value.items()}
        return {"__items__": [[_encode(k, tensors, f"{path}.k{i}", stored),
                               _encode(v, tensors, f"{path}.{i}", stored)] for i, (k, v) in enumerate(value.items())]}
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v, tensors, f"{path}.{i}", stored) for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_encode(v, tensors, f"{path}.{i}", stored) for i, v in enumerate(value)]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    raise TypeError(f"cannot checkpoint a value of type {type(value).__name__} at {path!r}")


def _decode(node, tensors: dict):
    if isinstance(node, list):
        return [_decode(v, tensors) for v in node]
    if not isinstance(node, dict):
        return node
    if "__tensor__" in node:
        return tensors[node["__tensor__"]]
    if "__ndarray__" in node:
        return tensors[node["__ndarray__"]].numpy()
    if "__tuple__" in node:
        return tuple(_decode(v, tensors) for v in node["__tuple__"])
    if "__items__" in node:
        return {_decode(k, tensors): _decode(v, tensors) for k, v in node["__items__"]}
    return {k: _decode(v, tensors) for k, v in node.items()}


def save_checkpoint(run_dir: Path, step: int, state: dict, keep: int) -> Path:
    """Writes `state` (nested dicts/lists/tuples of tensors, arrays and JSON scalars) as checkpoint `step`."""
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    target = root / f"checkpoint-{step:07d}"
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _encode(state, tensors, "state")

    def write(folder: Path) -> None:
        atomic_save_safetensors(tensors, folder / TENSORS)
        (folder / SKELETON).write_text(json.dumps({"step": step, "state": skeleton}))

    atomic_save_directory(write, target)
    for old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return target


def checkpoint_step(folder) -> int:
    """The step of a `checkpoint-NNNNNNN` folder, from its name."""
    return int(PATTERN.match(Path(folder).name).group(1))


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if PATTERN.match(p.name) and (p / SKELETON).is_file() and (p / TENSORS).is_file()]
    return sorted(found, key=checkpoint_step)


def load_checkpoint(folder: Path) -> tuple[int, dict]:
    """(step, state) of a checkpoint folder; a damaged one (or a pickle in place of its tensors) raises InputError
    naming it."""
    folder = Path(folder)
    if not (folder / SKELETON).is_file() or not (folder / TENSORS).is_file():
        raise FileNotFoundError(f"{str(folder)!r} is not a complete checkpoint (needs {SKELETON} and {TENSORS}).")
    try:
        record = json.loads((folder / SKELETON).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"checkpoint {str(folder)!r} is damaged: {SKELETON} is not valid JSON ({error}).") from error
    tensors = read_safetensors(folder / TENSORS, "training checkpoint")
    return record["step"], _decode(record["state"], tensors)


def unshared_optimizer_state(state: dict) -> dict:
    """An optimizer state dict in which no two parameters share a tensor: a shared `step` (as DeepSpeed ZeRO
    checkpoints held before every parameter got its own) would be incremented once per parameter by torch's Adam.
    Moments and steps that are already separate are kept as they are."""
    seen: set[int] = set()
    per_param = {}
    for index, entry in state["state"].items():
        fresh = {}
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                if value.untyped_storage().data_ptr() in seen and value.numel():
                    value = value.clone()
                seen.add(value.untyped_storage().data_ptr())
            fresh[key] = value
        per_param[index] = fresh
    return {**state, "state": per_param}


# Fields that say where a run lives and how it is watched, not what it computes: a resumed run may change them
# (a run folder moved to another disk or machine, a new logger, checkpoints kept or written more or less often) and
# still end bit for bit where the uninterrupted run would.
RESUMABLE_CHANGES = ("resume", "output_dir", "log_with", "log_every", "checkpoint_every", "keep_checkpoints")


def comparable_config(config: TrainConfig) -> dict:
    """The resolved config as JSON values, without `resume` (which may change between a run and its resumption)."""
    resolved = json.loads(json.dumps(config.to_dict()))
    resolved.pop("resume", None)
    return resolved


def resolve_resume(config: TrainConfig, run_dir: Path) -> Path | None:
    """The checkpoint to resume from, after checking the run's saved config matches; raises naming the fields."""
    checkpoints = list_checkpoints(run_dir)
    if config.resume == "none":
        if checkpoints:
            raise InputError(f"`output_dir` {str(run_dir)!r} already has checkpoints; pass `--resume auto` to "
                             f"continue that run, or choose another output_dir.")
        return None
    if config.resume == "auto":
        if not checkpoints:
            return None
        target = checkpoints[-1]
    else:
        target = Path(config.resume)
        if not target.is_dir():
            raise FileNotFoundError(f"`resume` checkpoint {config.resume!r} does not exist.")
    saved = run_dir / "config.yaml"
    if saved.is_file():
        old, new = yaml.safe_load(saved.read_text()), comparable_config(config)
        for name in RESUMABLE_CHANGES:
            old.pop(name, None)
            new.pop(name, None)
        differing = config_differences(old, new)
        if differing:
            raise InputError(f"cannot resume {str(run_dir)!r} with a changed config; differing fields: "
                             f"{', '.join(differing)}.")
    return target


def zero_optimizer_state(optimizer, params: list[torch.nn.Parameter]) -> dict:
    """A DeepSpeed ZeRO optimizer's state in the layout a plain torch Adam/AdamW has: `params` (the model's
    trainable parameters, in optimizer order) numbered 0..n-1, each with its whole `exp_avg` / `exp_avg_sq`.

    ZeRO keeps flat, partitioned moments; they are gathered per parameter (collective: call on every rank), so that
    such a checkpoint resumes anywhere. Every parameter gets a `step` tensor of its own: ZeRO keeps one step for a
    whole flat group, and a shared tensor, loaded into torch's Adam, is incremented once per parameter at every
    step (the bias corrections then run ahead: a resumed run left the uninterrupted one by 19-31% of its update).
    """
    from deepspeed.utils import safe_get_full_optimizer_state

    base = optimizer.optimizer.optimizer  # accelerate wrapper -> ZeRO optimizer -> torch optimizer
    steps = [state["step"] for state in base.state.values() if "step" in state]
    state = {}
    for index, param in enumerate(params):
        moments = {key: safe_get_full_optimizer_state(param, key) for key in ("exp_avg", "exp_avg_sq")}
        if steps and all(value is not None for value in moments.values()):
            state[index] = {"step": torch.tensor(float(steps[0]), dtype=torch.float32), **moments}
    group = {key: value for key, value in base.param_groups[0].items() if key != "params"}
    return {"state": state, "param_groups": [{**group, "params": list(range(len(params)))}]}
