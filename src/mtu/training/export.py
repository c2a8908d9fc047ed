"""A training checkpoint as a usable model: what `mtu generate --model runs/x/checkpoints/checkpoint-0001000` and
`MTUPipeline.from_base(base, model_from_checkpoint(folder))` run.

A checkpoint (`checkpoint.save_checkpoint`) holds the run's whole state; the run folder above it holds the
resolved `config.yaml`. Rebuilding the model is what the trainer does at its start (the base, then the method's
model for the run's tasks), and the checkpoint's trainable tensors (its EMA copies where the run keeps an EMA, as
`Trainer.export` writes `final/`) are copied in. `export_checkpoint` writes the same folder `final/` would be.
"""

from __future__ import annotations

from pathlib import Path

import torch
import yaml

from ..errors import InputError
from ..upcycling.serialization import check_finite
from ..upcycling.task_model import TaskModel
from .checkpoint import PATTERN, SKELETON, TENSORS, load_checkpoint
from .config import TrainConfig, config_from_dict

RUN_CONFIG = "config.yaml"  # the resolved config a run writes into its folder (`Trainer.__init__`)


def is_checkpoint_folder(path) -> bool:
    """True for a `checkpoint-NNNNNNN` folder that `mtu train` wrote (its state files are there)."""
    path = Path(path).expanduser()
    return bool(PATTERN.match(path.name)) and (path / SKELETON).is_file() and (path / TENSORS).is_file()


def run_final_folder(path: Path, argument: str) -> Path:
    """A run folder (`mtu train`'s output_dir, with config.yaml) stands for its `final/`, once the run has one;
    any other path is returned as it is. `argument` names the flag in the error for an unfinished run."""
    if (path / RUN_CONFIG).is_file() and not (path / "mtu_config.json").is_file():
        if not (path / "final").is_dir():
            raise InputError(f"`{argument}` {str(path)!r} is a training run without final/ (not finished?); give one "
                             f"of its checkpoints, {str(path / 'checkpoints' / 'checkpoint-N')!r}.")
        return path / "final"
    return path


def checkpoint_run_config(folder) -> TrainConfig:
    """The resolved config of the run a checkpoint folder belongs to (`RUN/checkpoints/checkpoint-N` -> RUN)."""
    folder = Path(folder).expanduser()
    path = folder.parent.parent / RUN_CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(folder)!r} has no run config: {str(path)!r} is missing (a checkpoint "
                                f"is read inside its run folder, RUN/checkpoints/checkpoint-N, beside RUN/{RUN_CONFIG}).")
    with open(path) as handle:
        return config_from_dict(yaml.safe_load(handle))


def _trained_tensors(state: dict, names: list[str], ema: bool, folder: Path) -> dict[str, torch.Tensor]:
    """The checkpoint's trainable tensors by name: the EMA copies when `ema` and the run kept an EMA."""
    trainable = state["trainable"]
    missing = [name for name in names if name not in trainable]
    if missing:
        raise InputError(f"checkpoint {str(folder)!r} holds no weights for {len(missing)} of the model's trainable "
                         f"tensors (e.g. {missing[0]!r}); its run config does not describe the model it was written by.")
    if not (ema and state.get("ema")):
        return {name: trainable[name] for name in names}
    shadow = state["ema"]["shadow_params"]
    order = list(trainable)  # the trainer's parameter order, which its EMA's list follows
    if len(shadow) != len(order):
        raise InputError(f"checkpoint {str(folder)!r} holds {len(shadow)} EMA tensors for {len(order)} weights.")
    by_name = dict(zip(order, shadow))
    return {name: by_name[name] for name in names}


@torch.no_grad()
def model_from_checkpoint(folder, *, ema: bool = True, base=None, variant: str | None = None) -> TaskModel:
    """The trained model of a checkpoint folder, in eval mode with frozen weights.

    Args:
        folder: `RUN/checkpoints/checkpoint-NNNNNNN` as `mtu train` wrote it.
        ema: Use the EMA weights when the run keeps an EMA (what `final/` holds); False for the last step's.
        base: The base (a folder, hub id or `UNet2DConditionModel`) instead of the run config's `model.base`.
        variant: The base's weights variant; default the run config's `model.variant`.
    """
    from ..upcycling.bases import load_base_unet
    from .methods import build_model, trainable_parameters

    folder = Path(folder).expanduser()
    if not is_checkpoint_folder(folder):
        raise InputError(f"{str(folder)!r} is not a training checkpoint (a checkpoint-NNNNNNN folder holding "
                         f"{SKELETON} and {TENSORS}).")
    config = checkpoint_run_config(folder)
    _, state = load_checkpoint(folder)
    unet = base if isinstance(base, torch.nn.Module) else load_base_unet(
        str(base or config.model.base), variant=variant or config.model.variant)
    model = build_model(unet, config.model, config.tasks)
    params = trainable_parameters(model)
    tensors = _trained_tensors(state, list(params), ema, folder)
    check_finite(tensors, folder)
    for name, param in params.items():
        if tuple(tensors[name].shape) != tuple(param.shape):
            raise InputError(f"checkpoint {str(folder)!r}: tensor {name!r} has shape {tuple(tensors[name].shape)}, "
                             f"the run's model expects {tuple(param.shape)}.")
        param.copy_(tensors[name])
    # How dropped text was encoded is left as the model has it (an adapter the run continued from records it):
    # unset, the pipelines decide from the base as the trainer did (SDXL: its `force_zeros_for_empty_prompt`).
    model.requires_grad_(False)
    return model.eval()


def export_checkpoint(folder, out, *, ema: bool = True) -> Path:
    """Writes a checkpoint's model to `out` as the run's `final/` would be: an MTU adapter folder (method `mtu`)
    or a baseline folder (`trainable.safetensors` + `method.json`), atomically. Returns `out`."""
    from .methods import save_baseline

    model = model_from_checkpoint(folder, ema=ema)
    out = Path(out).expanduser()
    if getattr(model, "mtu_config", None) is not None:
        model.save_pretrained(out)
    else:
        save_baseline(model, out)
    return out
