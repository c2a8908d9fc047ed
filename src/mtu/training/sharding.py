"""Full tensors out of sharded ones and back, so checkpoints and adapters look the same under FSDP2 as without it.

Under FSDP2 (`accelerate launch --use_fsdp --fsdp_version 2`) parameters, their gradients, optimizer moments and
EMA copies are `DTensor` shards. A checkpoint or adapter holds whole tensors, so a run can be resumed with any
number of processes, or with none of this. Gathering a shard (`full_tensor`) is a collective: every rank must
call `gather_full` together. Everything else passes through unchanged, so one process and DDP runs are unaffected.
"""

from __future__ import annotations

import torch


def _dtensor_type():
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # torch without distributed support
        return None
    return DTensor


def is_sharded(value) -> bool:
    kind = _dtensor_type()
    return kind is not None and isinstance(value, kind)


def gather_full(value):
    """`value` (nested dicts, lists and tuples) with every DTensor replaced by its whole tensor (collective)."""
    if is_sharded(value):
        return value.detach().full_tensor()
    if isinstance(value, dict):
        return {k: gather_full(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(gather_full(v) for v in value)
    return value


def shard_like(full: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """`full` laid out as `like`: sharded the same way when `like` is a DTensor, else on its device and dtype."""
    if is_sharded(like):
        from torch.distributed.tensor import distribute_tensor

        full = full.detach().to(like.device_mesh.device_type, like.dtype)
        return distribute_tensor(full, like.device_mesh, like.placements)
    return full.detach().to(like.device, like.dtype)


def reshard_optimizer_state(optimizer: torch.optim.Optimizer) -> None:
    """After `optimizer.load_state_dict` of whole tensors: re-shard each parameter's moments like the parameter."""
    for param, state in optimizer.state.items():
        if not is_sharded(param):
            continue
        for key, value in list(state.items()):
            if isinstance(value, torch.Tensor) and not is_sharded(value) and value.shape == param.shape:
                state[key] = shard_like(value, param)
