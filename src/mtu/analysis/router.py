"""Which experts each task uses, layer by layer (Sec. 7, Fig. 5), and how much two tasks share them.

Routing in MTU is per task and input-independent: each upcycled layer's router maps the task embedding e_tau (a
learned vector per task) to N expert weights, w^l = softmax(g(e_tau; theta_r^l)) (Eq. 1); no token, timestep or
prompt enters it. So a task's weights are one fixed (layers x N) table, read here from the adapter file alone (task
embeddings and routers; no base model, no data), computed by the model's own `TaskRouter`. With `top_k`, the model
keeps each task's k largest weights and renormalises them: `weights` are those effective weights, `softmax` the
dense ones before the cut (equal when top_k is None or N).

Sharing between tasks a and b is the mean over layers of sum_e min(w_a,e, w_b,e): 1 when both put the same weight on
every expert, 0 when they use disjoint experts, 1/N between a one-expert task and a uniform one.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from ..errors import InputError
from ..upcycling.router import TaskRouter
from .deviation import forward_order

SHARING_DEFINITION = "mean over layers of sum_e min(w_a,e, w_b,e) over the effective (top-k) weights"


@dataclass
class RouterResult:
    """Per task, the expert weights of every upcycled layer.

    Args:
        source: The adapter analysed.
        blocks: The upcycled transformer blocks in forward order: down, mid, up (layer l is `blocks[l - 1]`).
        tasks: The model's tasks.
        top_k: The model's top_k (None: all experts).
        weights: {task: (layers, N) effective weights, as the model uses them}.
        softmax: {task: (layers, N) dense softmax over the router logits, before any top-k cut}.
    """

    source: str
    blocks: list[str]
    tasks: list[str]
    top_k: int | None
    weights: dict[str, torch.Tensor]
    softmax: dict[str, torch.Tensor]

    @property
    def num_experts(self) -> int:
        return self.weights[self.tasks[0]].shape[1]

    def sharing(self) -> list[list[float]]:
        """Task x task expert sharing (`SHARING_DEFINITION`), in the order of `tasks`."""
        stacked = torch.stack([self.weights[task].double() for task in self.tasks])  # (T, layers, N)
        overlap = torch.minimum(stacked[:, None], stacked[None, :]).sum(-1).mean(-1)  # (T, T)
        return overlap.tolist()

    def task_independent_layers(self, tolerance: float = 1e-6) -> list[int]:
        """Layers (1-based) whose router gives every task the same weights: there the router does not tell tasks
        apart (e.g. a router whose hidden ReLU units are inactive for every task outputs its bias alone)."""
        stacked = torch.stack([self.weights[task] for task in self.tasks])  # (T, layers, N)
        spread = (stacked - stacked[:1]).abs().amax(dim=(0, 2))  # (layers,)
        return [index + 1 for index, value in enumerate(spread.tolist()) if value <= tolerance]

    def to_dict(self) -> dict:
        return {
            "analysis": "router", "source": self.source,
            "routing": "per task and input-independent: w^l = softmax(g(e_tau; theta_r^l)) depends only on the "
                       "task's embedding (Eq. 1); no token, timestep or prompt enters it",
            "tasks": self.tasks, "num_experts": self.num_experts, "top_k": self.top_k, "blocks": self.blocks,
            "weights": {task: self.weights[task].tolist() for task in self.tasks},
            "softmax": {task: self.softmax[task].tolist() for task in self.tasks},
            "sharing_definition": SHARING_DEFINITION, "sharing": self.sharing(),
            "task_independent_layers": self.task_independent_layers(),
        }


def _without_cut(router: TaskRouter) -> TaskRouter:
    """The same router (sharing its parameters) without the top-k cut: its dense softmax."""
    dense = copy.copy(router)
    dense.top_k = None
    return dense


def _router_tensors(directory) -> tuple[dict, dict[str, torch.Tensor], list[str]]:
    """(the adapter's record, its task embeddings and router tensors, the upcycled blocks' FFN names in order);
    the record and the tensors' shapes are checked against each other first."""
    from ..upcycling.serialization import (
        WEIGHTS_NAME,
        adapter_directory,
        adapter_shapes,
        check_adapter_shapes,
        check_finite,
        expected_shapes,
        open_safetensors,
        read_adapter_config,
    )

    folder = adapter_directory(directory)
    record = read_adapter_config(folder)
    check_adapter_shapes(record, adapter_shapes(folder), folder / WEIGHTS_NAME)
    layers = forward_order([name.removesuffix(".router.out.bias") for name in expected_shapes(record)
                            if name.endswith(".router.out.bias")])
    with open_safetensors(folder / WEIGHTS_NAME, "MTU adapter weights") as handle:
        tensors = {name: handle.get_tensor(name) for name in handle.keys()
                   if name == "task_embeddings" or ".router." in name}
    check_finite(tensors, folder / WEIGHTS_NAME)
    return record, tensors, layers


def _weights_from_file(directory) -> RouterResult:
    record, tensors, layers = _router_tensors(directory)
    config = record["config"]
    embeddings = tensors["task_embeddings"].float()
    dense, effective = [], []
    for layer in layers:
        router = TaskRouter(config.task_embedding_size, config.router_hidden_size, config.num_experts, config.top_k)
        router.load_state_dict({key: tensors[f"{layer}.router.{key}"].float() for key in router.state_dict()})
        effective.append(router(embeddings))
        dense.append(_without_cut(router)(embeddings))
    return _result(str(directory), [_block_name(layer) for layer in layers], config.tasks, config.top_k,
                   effective, dense)


def _weights_from_model(model) -> RouterResult:
    from ..upcycling.layer import MTUFeedForward

    modules = {name: module for name, module in model.mtu_modules() if isinstance(module, MTUFeedForward)}
    layers = [(name, modules[name]) for name in forward_order(list(modules))]
    embeddings = model.task_embeddings.detach()
    dense, effective = [], []
    for _, module in layers:
        router = module.router
        effective.append(router(embeddings).float())
        dense.append(_without_cut(router)(embeddings).float())
    return _result(type(model).__name__, [_block_name("unet." + name) for name, _ in layers], model.task_names,
                   model.mtu_config.top_k, effective, dense)


def _block_name(layer: str) -> str:
    """`unet.<block>.ff` -> `<block>`."""
    return layer.removeprefix("unet.").removesuffix(".ff")


def _result(source, blocks, tasks, top_k, effective: list[torch.Tensor], dense: list[torch.Tensor]) -> RouterResult:
    """Regroups per-layer (T, N) router outputs into per-task (layers, N) tables."""
    by_layer, dense_by_layer = torch.stack(effective).detach(), torch.stack(dense).detach()  # (layers, T, N)
    return RouterResult(source, blocks, list(tasks), top_k,
                        {task: by_layer[:, index].clone() for index, task in enumerate(tasks)},
                        {task: dense_by_layer[:, index].clone() for index, task in enumerate(tasks)})


@torch.no_grad()
def router_weights(adapter) -> RouterResult:
    """The expert weights every task gets in every upcycled layer (Fig. 5), and the tasks' expert sharing.

    Args:
        adapter: An MTU adapter folder, a shipped adapter's short name ("toyworld"), or an `MTUModel` in memory.
            A folder is read alone: the routers need neither the base model nor any input.
    """
    from ..upcycling import MTUModel

    if isinstance(adapter, MTUModel):
        return _weights_from_model(adapter)
    if isinstance(adapter, torch.nn.Module):
        raise InputError(f"must be an MTU adapter folder or an MTUModel, got a {type(adapter).__name__} (a baseline "
                         f"has no router).", field="adapter")
    return _weights_from_file(adapter)


def router_figures(result: RouterResult) -> dict:
    """{file name: draw(path)}: each task's expert weights per layer (Fig. 5) and the task x task sharing."""
    from .figures import heatmap, heatmap_panels

    layers = [str(number) for number in range(1, len(result.blocks) + 1)]
    experts = [f"E{number}" for number in range(1, result.num_experts + 1)]
    panels = {task: result.weights[task].tolist() for task in result.tasks}
    return {
        "router_weights.png": lambda path: heatmap_panels(
            path, panels, rows=layers, cols=experts, xlabel="expert", ylabel="upcycled block (layer)",
            colorbar="router weight", vmin=0.0, vmax=1.0),
        "router_sharing.png": lambda path: heatmap(
            path, result.sharing(), rows=result.tasks, cols=result.tasks, title="expert sharing between tasks",
            xlabel="task", ylabel="task", colorbar="sharing (1 = same experts)", vmin=0.0, vmax=1.0),
    }
