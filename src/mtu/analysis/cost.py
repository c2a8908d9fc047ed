"""Parameters, trainable parameters and FLOPs of the base, MTU adapters and baselines: Table 2's cost columns.

Every model is built on the meta device from its recorded architecture (shapes only: no weights are read, so SDXL
costs nothing to analyse). FLOPs are counted by `torch.utils.flop_counter.FlopCounterMode` for one UNet forward of
batch 1 at the base's sample size: 2 FLOPs per multiply-accumulate of matrix multiplications, convolutions and
attention; elementwise work (norms, activations, softmax, additions) is not counted.

Rows: the base; one single-task full fine-tune per task (the base with that task's input conv, every weight
trained: Table 2's single-task rows); each MTU adapter per task, routed (as trained) and, where it folds
(active experts x G <= 1), folded into a stock UNet; each trained baseline (`method.json`) per task.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from diffusers import UNet2DConditionModel

from ..errors import InputError
from ..inspection import count_flops, unet_inputs

FLOP_CONVENTION = ("FLOPs = 2 x multiply-accumulates of matmuls, convolutions and attention, as "
                   "torch.utils.flop_counter.FlopCounterMode counts them; elementwise operations not counted; one "
                   "UNet forward, batch 1")


@dataclass
class CostRow:
    """One model serving one task (task None: the base as it is)."""

    model: str
    kind: str
    task: str | None
    parameters: int
    trainable_parameters: int | None
    flops: int


@dataclass
class CostResult:
    """The cost table (`cost_table`)."""

    base: str
    sample_size: list[int]
    text_length: int
    rows: list[CostRow] = field(default_factory=list)
    routing_overhead_bounds: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        base_flops = self.rows[0].flops
        rows = [asdict(row) | {"flops_vs_base": row.flops / base_flops} for row in self.rows]
        return {"analysis": "cost", "base": self.base, "flop_convention": FLOP_CONVENTION,
                "latent_size": self.sample_size, "text_length": self.text_length, "rows": rows,
                "routing_overhead_bounds": self.routing_overhead_bounds}

    def table(self) -> str:
        """The rows as a plain-text table."""
        lines = [f"{'model':<28}{'kind':<24}{'task':<10}{'params':>14}{'trainable':>14}{'GFLOPs':>12}{'x base':>8}"]
        for row in self.rows:
            trainable = "-" if row.trainable_parameters is None else f"{row.trainable_parameters:,}"
            lines.append(f"{row.model[:27]:<28}{row.kind:<24}{row.task or '-':<10}{row.parameters:>14,}"
                         f"{trainable:>14}{row.flops / 1e9:>12.4f}{row.flops / self.rows[0].flops:>8.4f}")
        return "\n".join(lines)


def _parameters(module: torch.nn.Module) -> int:
    return sum(param.numel() for param in module.parameters())


def _trainable(module: torch.nn.Module) -> int:
    return sum(param.numel() for param in module.parameters() if param.requires_grad)


def _meta_unet(unet_config: dict, **overrides) -> UNet2DConditionModel:
    with torch.device("meta"):
        return UNet2DConditionModel.from_config({**unet_config, **overrides})


def base_unet_config_of(spec) -> dict:
    """The diffusers config of the base UNet `spec` names (as `mtu.load_base_unet` takes it), read without weights."""
    from ..architectures import unet_config
    from ..upcycling.bases import RANDOM_PREFIX, check_base_spec

    kind, location = check_base_spec(str(spec))
    if kind == "random":  # random:<arch>[:<seed>], checked by check_base_spec
        config = unet_config(location.removeprefix(RANDOM_PREFIX).split(":")[0])
    elif kind in ("shipped", "pipeline", "unet", "hub"):
        subfolder = None if kind == "unet" else "unet"
        try:
            config = dict(UNet2DConditionModel.load_config(location, subfolder=subfolder))
        except OSError as error:  # diffusers' error for a hub repo it cannot reach or read
            raise InputError(f"could not read the UNet config of base {str(spec)!r} "
                             f"({' '.join(str(error).split())}).", field="--base") from error
    else:
        raise InputError(f"base {str(spec)!r} is a single-file checkpoint; give the diffusers folder of its "
                         f"architecture instead (only the architecture is needed).", field="--base")
    return {key: value for key, value in config.items() if not key.startswith("_")}


def routing_overhead_bound(model) -> int:
    """An upper bound on the FLOPs an MTU model spends beyond the dense FFNs' matmuls in one forward of one task.

    Per upcycled layer: the router on all T task embeddings, 2 T (d_task h + h N); folding the task LayerNorm bias
    into the k active experts' first projection, 2 k U D; mixing the experts' output biases, 2 k D. With
    active experts x G = 1 the experts' matmuls are exactly the dense FFN's, so the routed model's FLOPs lie in
    [base, base + this bound] (the paper's equal-FLOPs claim).
    """
    from ..upcycling.layer import MTUFeedForward

    config, tasks = model.mtu_config, len(model.task_names)
    bound = 0
    for _, layer in model.mtu_modules():
        if isinstance(layer, MTUFeedForward):
            active, units = layer.top_k or layer.num_experts, layer.w_in.shape[1]
            router = 2 * tasks * (config.task_embedding_size * config.router_hidden_size
                                  + config.router_hidden_size * layer.num_experts)
            bound += router + 2 * active * units * layer.dim + 2 * active * layer.dim
    return bound


class _Counter:
    """Counts FLOPs at one latent size and text length on the meta device (on CPU, FlopCounterMode misses attention:
    the CPU kernel of scaled_dot_product_attention has no FLOP formula). A stock UNet's count depends only on its
    input channels, so the base, the single-task fine-tunes and folded models share it."""

    def __init__(self, unet_config: dict, size: list[int], text_length: int):
        self.unet_config, self.size, self.text_length = unet_config, size, text_length
        self._stock: dict[int, tuple[int, int]] = {}

    def inputs(self, channels: int) -> dict:
        return unet_inputs(self.unet_config, tuple(self.size), channels, device="meta", text_length=self.text_length)

    def stock(self, channels: int) -> tuple[int, int]:
        """(parameters, FLOPs) of the stock UNet with `channels` input channels."""
        if channels not in self._stock:
            unet = _meta_unet(self.unet_config, in_channels=channels)
            self._stock[channels] = _parameters(unet), count_flops(unet, self.inputs(channels))
        return self._stock[channels]

    def task_model(self, model, task: str) -> int:
        return count_flops(model, self.inputs(model.task_in_channels(task)), task=task)


def _mtu_rows(label: str, record: dict, counter: _Counter) -> tuple[list[CostRow], int]:
    """Per task: the routed MTU model and, where it folds, the folded stock UNet; and the routing overhead bound."""
    from ..upcycling import upcycle

    config = record["config"]
    model = upcycle(_meta_unet(record["base"]["unet_config"]), config, fingerprint=False)
    total, trainable = _parameters(model), sum(p.numel() for _, p in model.mtu_named_parameters())
    # Folding gives a stock UNet of the base's architecture with the task's input conv (`mtu.fold`).
    foldable = (config.top_k or config.num_experts) * config.granularity <= 1 + 1e-9
    rows = []
    for task in config.tasks:
        rows.append(CostRow(label, "mtu", task, total, trainable, counter.task_model(model, task)))
        if foldable:
            parameters, flops = counter.stock(model.task_in_channels(task))
            rows.append(CostRow(label, "mtu folded", task, parameters, None, flops))
    return rows, routing_overhead_bound(model)


def _baseline_rows(label: str, record: dict, counter: _Counter) -> list[CostRow]:
    from ..training.config import ModelConfig
    from ..training.methods import build_model

    fields = {**record["model"], "base": record["model"].get("base") or "unknown"}
    model = build_model(_meta_unet(counter.unet_config), ModelConfig(method=record["method"], **fields),
                        record["tasks"])
    total, trainable = _parameters(model), _trainable(model)
    return [CostRow(label, record["method"], task, total, trainable, counter.task_model(model, task))
            for task in model.task_names]


def _read_model(source) -> tuple[str, dict, str]:
    """("mtu" or "baseline", its record, its label) of an adapter folder / short name, a trained baseline's folder,
    or a run folder holding either in final/."""
    from ..training.methods import BASELINE_RECORD, read_baseline_record
    from ..upcycling.files import CONFIG_NAME
    from ..upcycling.serialization import adapter_directory, read_adapter_config

    path = Path(str(source)).expanduser()
    if path.is_dir() and not (path / CONFIG_NAME).is_file() and not (path / BASELINE_RECORD).is_file() \
            and (path / "final").is_dir():
        path = path / "final"  # a run folder
    label = path.parent.name if path.name == "final" else path.name
    if path.is_dir() and (path / BASELINE_RECORD).is_file():
        return "baseline", read_baseline_record(path) | {"folder": str(path)}, label
    if path.is_dir() and not (path / CONFIG_NAME).is_file():
        raise InputError(f"{str(source)!r} is neither an MTU adapter ({CONFIG_NAME}) nor a trained baseline "
                         f"({BASELINE_RECORD}), nor a run folder holding one in final/.", field="MODEL")
    folder = adapter_directory(path if path.exists() else source)
    return "mtu", read_adapter_config(folder), label


def _latent_size(unet_config: dict, sample_size: int | None) -> list[int]:
    size = sample_size if sample_size is not None else unet_config.get("sample_size")
    size = [size, size] if isinstance(size, int) else list(size or [])
    if len(size) != 2 or not all(isinstance(s, int) and s >= 1 for s in size):
        raise InputError(f"must be a latent size >= 1 (the base records sample_size "
                         f"{unet_config.get('sample_size')!r}), got {sample_size!r}.", field="sample_size")
    return size


def cost_table(models: list, *, base=None, sample_size: int | None = None, text_length: int = 77) -> CostResult:
    """Parameters, trainable parameters and FLOPs of the base and of each model, per task (Table 2's columns).

    Args:
        models: MTU adapter folders (or a shipped adapter's short name, "toyworld"), trained baselines' folders
            (a run's final/ with method.json), or run folders holding either; may be empty with `base`.
        base: The base (as `mtu.load_base_unet` takes it); default the one the first model records. Only its
            architecture is read.
        sample_size: Latent height = width for the FLOPs; default the base's `sample_size` (64 for SD1.5 at 512 px).
        text_length: Tokens of the text condition (77: CLIP's).
    """
    if isinstance(models, (str, Path)):
        raise InputError(f"must be a list of model folders, got {models!r}.", field="models")
    if isinstance(text_length, bool) or not isinstance(text_length, int) or text_length < 1:
        raise InputError(f"must be an integer >= 1, got {text_length!r}.", field="text_length")
    entries = [_read_model(source) for source in models]
    if base is None and not entries:
        raise InputError("give at least one model, or a base.", field="models")
    if base is not None:
        unet_config, base_name = base_unet_config_of(base), str(base)
    elif entries[0][0] == "mtu":
        unet_config, base_name = entries[0][1]["base"]["unet_config"], entries[0][1]["base"].get("name_or_path")
    else:
        from ..upcycling.bases import find_recorded_base

        base_name = entries[0][1]["model"].get("base")
        if not base_name:
            raise InputError(f"{entries[0][2]!r} records no base; pass `base=` (CLI: --base).", field="--base")
        unet_config = base_unet_config_of(find_recorded_base(base_name, entries[0][1]["folder"]))
    for kind, record, label in entries:
        if kind == "mtu" and record["base"]["unet_config"] != unet_config:
            raise InputError(f"{label!r} was made for another base architecture than {base_name!r}; compare models "
                             f"of one base at a time.", field="models")
    counter = _Counter(unet_config, _latent_size(unet_config, sample_size), text_length)
    result = CostResult(str(base_name), counter.size, text_length)
    parameters, flops = counter.stock(unet_config["in_channels"])
    result.rows.append(CostRow("base", "base", None, parameters, None, flops))
    result.rows += _single_task_rows(entries, counter)
    for kind, record, label in entries:
        if kind == "mtu":
            rows, bound = _mtu_rows(label, record, counter)
            result.rows += rows
            result.routing_overhead_bounds[label] = bound
        else:
            result.rows += _baseline_rows(label, record, counter)
    return result


def _single_task_rows(entries, counter: _Counter) -> list[CostRow]:
    """One full fine-tune of the base per task the models cover: the stock UNet with the task's input channels."""
    from ..upcycling.tasks import get_task

    tasks = dict.fromkeys(task for kind, record, _ in entries
                          for task in (record["config"].tasks if kind == "mtu" else record["tasks"]))
    rows = []
    for task in tasks:
        parameters, flops = counter.stock(get_task(task).in_channels(counter.unet_config["in_channels"]))
        rows.append(CostRow(f"single-task {task}", "single-task fine-tune", task, parameters, parameters, flops))
    return rows


def cost_figures(result: CostResult) -> dict:
    """{file name: draw(path)}: parameters, trainable parameters and GFLOPs per row."""
    from .figures import bar_panels

    labels = [f"{row.model} ({row.kind}{', ' + row.task if row.task else ''})" for row in result.rows]
    panels = {"parameters (M)": [row.parameters / 1e6 for row in result.rows],
              "trainable parameters (M)": [None if row.trainable_parameters is None else
                                           row.trainable_parameters / 1e6 for row in result.rows],
              f"GFLOPs (latents {result.sample_size[0]}x{result.sample_size[1]})": [row.flops / 1e9
                                                                                  for row in result.rows]}
    return {"cost.png": lambda path: bar_panels(path, labels, panels)}
