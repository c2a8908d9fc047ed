"""What a run trains: MTU (the paper) or a baseline (full fine-tuning; LoRA, IA3 via peft; Tables 2-3).

Every method is a `TaskModel`: the UNet with task-specific input convolutions (a `TaskInputConv`), so single- and
multi-task baselines take the same inputs as MTU; the model is always called as `model(sample, t, text, task=...)`.
The baselines are their own model types (`FullFineTuneModel`, `TaskAdapterModel`), each saying which parameters
it trains; a PEFT baseline's are those peft's tuner layers declare as adapter weights.

The PEFT baselines of Table 3 are *task-specific adapters* ("a small fraction of parameters ... within
task-specific adapters", Sec. 7): `lora` / `ia3` give every task its own peft adapter, named after the task, on
the same layers, and each sample runs through its own task's adapter (`TaskAdapterModel`). `lora_shared` /
`ia3_shared` train one adapter (peft's "default") shared by all tasks: what `lora` / `ia3` trained before issue 12.
A LoRA baseline's trainable parameters are matched to MTU's over all its adapters together (`matched_lora_rank`).
"""

from __future__ import annotations

import copy
import json
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from diffusers import UNet2DConditionModel
from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput
from torch import nn

from ..errors import InputError
from ..upcycling import MTUConfig, load_mtu, upcycle
from ..upcycling.bases import base_location, base_unet_config, find_recorded_base
from ..upcycling.input_conv import TaskInputConv
from ..upcycling.serialization import atomic_save_directory, check_finite, read_safetensors
from ..upcycling.task_model import TaskModel
from ..upcycling.tasks import get_task
from ..upcycling.text_encoders import task_copies
from .config import ModelConfig

FFN_TARGETS = [r".*\.ff\.net\.0\.proj", r".*\.ff\.net\.2"]
ATTENTION_TARGETS = [r".*\.attn[12]\.to_[kv]"]

# method -> (peft method, one adapter per task?)
PEFT_METHODS = {"lora": ("lora", True), "ia3": ("ia3", True), "lora_shared": ("lora", False),
                "ia3_shared": ("ia3", False)}
SHARED_ADAPTER = "default"  # the adapter name of a shared baseline (peft's default: older saved weights use it)
BASELINE_WEIGHTS, BASELINE_RECORD = "trainable.safetensors", "method.json"  # a trained baseline's folder
BASELINE_MODEL_FIELDS = ("base", "variant", "lora_rank", "lora_alpha", "ia3_on_attention", "trainable")  # what rebuilding one needs


class BaselineModel(TaskModel):
    """A baseline of Tables 2-3: the base UNet with one input conv per task, as MTU has (so every method takes the
    same inputs), and no experts. Each kind says which parameters it trains (`trained_parameters`).

    Args:
        unet: The base UNet (modified in place: its `conv_in` becomes a `TaskInputConv`).
        tasks: The task names.
        config: The run's model section; a trained baseline's folder records the fields that rebuild it.
    """

    def __init__(self, unet: UNet2DConditionModel, tasks: list[str], config: ModelConfig):
        specs = [get_task(name) for name in tasks]
        unet.conv_in = TaskInputConv(unet.conv_in, specs)
        info = {"name_or_path": base_location(config.base), "fingerprint": None, "unet_config": base_unet_config(unet)}
        super().__init__(unet, specs, info)
        self.baseline_config = config

    def trained_parameters(self) -> Iterator[nn.Parameter]:
        """The parameters this method trains."""
        raise NotImplementedError

    def freeze_all_but_trained(self) -> None:
        self.requires_grad_(False)
        for param in self.trained_parameters():
            param.requires_grad_(True)

    def save_pretrained(self, save_directory, state_dict: dict[str, torch.Tensor] | None = None) -> None:
        """Writes the baseline's folder (`save_baseline`): its trained tensors and method.json."""
        save_baseline(self, save_directory, state_dict)

    def _merge_into(self, unet: UNet2DConditionModel, task: str) -> None:
        """Makes `unet` (a copy of this model's) compute `task` with stock layers only; the full fine-tune's
        already does."""

    @torch.no_grad()
    def fold(self, task: str) -> UNet2DConditionModel:
        """A stock `UNet2DConditionModel` computing this baseline's output for `task`: the task's input conv as
        `conv_in` and, for a LoRA / IA3 baseline, the task's adapter merged into the weights it adapts (peft's
        `merge`). It loads with `UNet2DConditionModel.from_pretrained`, no mtu or peft needed."""
        conv = self.unet.conv_in.convs[self.task_names[self.task_index(task)]]
        unet = copy.deepcopy(self.unet)
        self._merge_into(unet, task)
        unet.conv_in = copy.deepcopy(conv)
        config = dict(unet.config)
        config["in_channels"] = conv.in_channels
        with torch.device("meta"):
            folded = UNet2DConditionModel.from_config(config)
        folded.load_state_dict(unet.state_dict(), strict=True, assign=True)
        return folded.train(self.training)


# The attribute of a diffusers `BasicTransformerBlock` holding each part `ModelConfig.trainable` can name.
TRANSFORMER_PARTS = {"ffn": "ff", "self_attn": "attn1", "cross_attn": "attn2"}


class FullFineTuneModel(BaselineModel):
    """`full`: every UNet weight and every task's input conv train; with `trainable` (Table 1) only those parts of
    every transformer block (and the task input convs)."""

    def trained_parameters(self) -> Iterator[nn.Parameter]:
        parts = self.baseline_config.trainable
        if parts is None:
            yield from self.unet.parameters()
            return
        from diffusers.models.attention import BasicTransformerBlock

        yield from self.unet.conv_in.parameters()
        for block in self.unet.modules():
            if isinstance(block, BasicTransformerBlock):
                for part in parts:
                    module = getattr(block, TRANSFORMER_PARTS[part], None)
                    if module is not None:  # a block without cross-attention has attn2 None
                        yield from module.parameters()


class TaskAdapterModel(BaselineModel):
    """LoRA / IA3 through peft: every task's input conv and peft adapters; each sample runs through its task's.

    `task_adapters` maps every task to the peft adapter its samples use: the task's own name for a per-task
    baseline (`lora`, `ia3`), "default" for all tasks of a shared one (`lora_shared`, `ia3_shared`). A batch whose
    samples need different adapters is split into one group per adapter and the UNet runs once on each group
    (exact, since no UNet layer mixes samples; only such mixed batches pay for extra, smaller forwards). The
    adapter is selected inside `route`, so gradient checkpointing recomputes a block with the adapter it ran with.
    What trains is what peft's tuner layers declare as adapter weights (`adapter_layer_names`), never a name match.
    """

    def __init__(self, unet: UNet2DConditionModel, tasks: list[str], config: ModelConfig, peft_config,
                 task_adapters: dict[str, str]):
        from peft import inject_adapter_in_model

        super().__init__(unet, tasks, config)
        self.task_adapters = dict(task_adapters)
        with warnings.catch_warnings():  # peft warns that a model gets more than one adapter: here, that is the point
            warnings.filterwarnings("ignore", message=".*multiple adapters.*")
            for adapter in dict.fromkeys(self.task_adapters.values()):
                inject_adapter_in_model(peft_config, unet, adapter_name=adapter)

    def _merge_into(self, unet: UNet2DConditionModel, task: str) -> None:
        """Merges `task`'s adapter into the layers it adapts and puts peft's base layers back in their place."""
        from peft.tuners.tuners_utils import BaseTunerLayer
        from peft.utils import _get_submodules

        adapter = self.task_adapters[task]
        names = [name for name, module in unet.named_modules() if isinstance(module, BaseTunerLayer)]
        for name in names:
            parent, layer, attribute = _get_submodules(unet, name)
            if adapter in layer.active_adapters or adapter in getattr(layer, layer.adapter_layer_names[0]):
                layer.merge(adapter_names=[adapter])
            setattr(parent, attribute, layer.get_base_layer())

    def _tuner_layers(self) -> list[nn.Module]:
        from peft.tuners.tuners_utils import BaseTunerLayer

        return [module for module in self.unet.modules() if isinstance(module, BaseTunerLayer)]

    def trained_parameters(self) -> Iterator[nn.Parameter]:
        yield from self.unet.conv_in.parameters()
        adapters = set(self.task_adapters.values())
        for layer in self._tuner_layers():
            for attribute in layer.adapter_layer_names:  # where peft keeps each adapter's weights in this layer
                weights = getattr(layer, attribute)
                for adapter in adapters & set(weights.keys()):
                    item = weights[adapter]  # a module (LoRA's A, B) or a parameter (IA3's vector)
                    yield from item.parameters() if isinstance(item, nn.Module) else (item,)

    @contextmanager
    def _routing_hooks(self, routing):
        adapters = {self.task_adapters[self.task_names[index]] for index, _ in routing.groups}
        if len(adapters) != 1:
            raise RuntimeError(f"the tasks of this batch use different adapters ({sorted(adapters)}): call the model "
                               f"itself, which runs each adapter's samples apart; `route` takes one adapter at a time.")
        (adapter,) = adapters
        layers = self._tuner_layers()
        previous = [layer._active_adapter for layer in layers]
        # What peft's `set_adapter` sets, without its side effect of changing which adapters require grad (every
        # task's adapter stays trainable; one absent from a batch just gets no gradient).
        for layer in layers:
            layer._active_adapter = [adapter]
        try:
            with super()._routing_hooks(routing):
                yield routing
        finally:
            for layer, value in zip(layers, previous):
                layer._active_adapter = value

    def forward(self, sample: torch.Tensor, timestep, encoder_hidden_states: torch.Tensor, task, **kwargs):
        batch = sample.shape[0]
        self.make_routing(task, batch)  # checks the task names and their count
        names = [task] * batch if isinstance(task, str) else list(task)
        groups: dict[str, list[int]] = {}
        for index, name in enumerate(names):
            groups.setdefault(self.task_adapters[name], []).append(index)
        if len(groups) == 1:
            return super().forward(sample, timestep, encoder_hidden_states, task, **kwargs)
        return_dict = kwargs.pop("return_dict", True)
        outputs, order = [], []
        for indices in groups.values():
            index = torch.tensor(indices, device=sample.device)
            tasks = [names[i] for i in indices]
            # A mixed batch is zero-padded to its widest task; this group reads the channels its tasks have.
            width = max(self.task_in_channels(name) for name in tasks)
            part = super().forward(sample[index, :width], _rows(timestep, index, batch),
                                   _rows(encoder_hidden_states, index, batch),
                                   tasks[0] if len(set(tasks)) == 1 else tasks, return_dict=False,
                                   **_rows(kwargs, index, batch))[0]
            outputs.append(part)
            order += indices
        merged = torch.cat(outputs)[torch.argsort(torch.tensor(order, device=sample.device))]
        return UNet2DConditionOutput(sample=merged) if return_dict else (merged,)


def _rows(value, index: torch.Tensor, batch: int):
    """`value` (a UNet argument: tensor, or dict / list / tuple of them) with its per-sample rows `index` taken;
    what has no batch dimension (a scalar timestep, floats) is kept as is."""
    if isinstance(value, torch.Tensor):
        return value[index.to(value.device)] if value.dim() > 0 and value.shape[0] == batch else value
    if isinstance(value, dict):
        return {key: _rows(item, index, batch) for key, item in value.items()}
    if isinstance(value, list):
        return [_rows(item, index, batch) for item in value]
    if isinstance(value, tuple) and not hasattr(value, "_fields"):
        return tuple(_rows(item, index, batch) for item in value)
    return value


def _regex_targets(patterns: list[str]) -> str:
    return "(" + "|".join(patterns) + ")$"


def _peft_config(kind: str, config: ModelConfig):
    from peft import IA3Config, LoraConfig

    if kind == "lora":
        return LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha or config.lora_rank,
                          target_modules=_regex_targets(FFN_TARGETS), init_lora_weights=True)
    targets = FFN_TARGETS + (ATTENTION_TARGETS if config.ia3_on_attention else [])
    return IA3Config(target_modules=_regex_targets(targets), feedforward_modules=_regex_targets([FFN_TARGETS[1]]))


def build_model(unet: UNet2DConditionModel, config: ModelConfig, tasks: list[str], *,
                text_encoder: torch.nn.Module | None = None) -> TaskModel:
    """The trainable model for `config.method`; frozen parts have requires_grad False. `text_encoder`: the base's,
    which `config.task_text_encoders` copies (read from `config.base` when not given)."""
    if config.method == "mtu":
        if config.adapter:
            model = load_mtu(config.adapter, base=unet)  # checked against the adapter's fingerprints
            # What this run trained on (the same weights): where the trained adapter will find its base.
            model.base_info.update(name_or_path=base_location(config.base))
            model.base_info.pop("variant", None)
            if config.variant is not None:
                model.base_info["variant"] = config.variant
        else:
            model = upcycle(unet, MTUConfig(tasks=tasks, **config.mtu), base_name_or_path=config.base,
                            base_variant=config.variant)
        new = [task for task in config.task_text_encoders if task not in model.text_encoders]
        if new:  # an adapter continued from keeps its own
            if text_encoder is None:
                from .components import load_text_encoder

                text_encoder = load_text_encoder(config.base, config.variant)
            model.set_task_text_encoders(task_copies(text_encoder, new))
        return model
    if config.method == "full":
        model = FullFineTuneModel(unet, tasks, config)
    elif config.method in PEFT_METHODS:
        kind, per_task = PEFT_METHODS[config.method]
        model = TaskAdapterModel(unet, tasks, config, _peft_config(kind, config),
                                 {task: task if per_task else SHARED_ADAPTER for task in tasks})
    else:
        raise InputError(f"`model.method` must be one of mtu, full, {', '.join(PEFT_METHODS)}, got "
                         f"{config.method!r}.")
    model.freeze_all_but_trained()
    return model


def trainable_parameters(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """Name -> parameter of everything the optimizer updates, in a stable order."""
    return {name: param for name, param in model.named_parameters() if param.requires_grad}


# -- matching a LoRA baseline's trainable parameters to MTU's ------------------------------------------------------
def lora_trainable_count(unet: UNet2DConditionModel, tasks: list[str], rank: int, per_task: bool = True) -> int:
    """Trainable parameters of a LoRA baseline of `rank` over the base `unet` (left untouched) for `tasks`,
    without building it: the task input convs, plus rank x (in + out features) for each FFN linear layer in each
    adapter (one per task, or one shared)."""
    pattern = re.compile(_regex_targets(FFN_TARGETS))
    widths = sum(module.in_features + module.out_features for name, module in unet.named_modules()
                 if isinstance(module, nn.Linear) and pattern.fullmatch(name))
    convs = TaskInputConv(copy.deepcopy(unet.conv_in), [get_task(name) for name in tasks])
    adapters = len(tasks) if per_task else 1
    return sum(param.numel() for param in convs.parameters()) + adapters * rank * widths


def matched_lora_rank(unet: UNet2DConditionModel, tasks: list[str], target: int, per_task: bool = True) -> int:
    """The LoRA rank (>= 1) whose baseline's trainable parameters, all task adapters and task input convs
    together, come closest to `target` (MTU's trainable count; ties go to the lower rank). Per task, the rank is
    about the shared adapter's divided by the number of tasks: the comparison holds the whole multi-task model's
    trainable budget fixed, as MTU's 158M (SD1.5) is its budget for all tasks together."""
    one = lora_trainable_count(unet, tasks, 1, per_task)
    per_rank = lora_trainable_count(unet, tasks, 2, per_task) - one
    below = max(1, (target - (one - per_rank)) // per_rank)
    return min((below, below + 1), key=lambda rank: (abs(one + (rank - 1) * per_rank - target), rank))


# -- a trained baseline's folder -------------------------------------------------------------------------------------
def save_baseline(model: BaselineModel, directory, state_dict: dict[str, torch.Tensor] | None = None,
                  unconditional_text=None) -> Path:
    """Writes a baseline (`full`, `lora`, `ia3`, `lora_shared`, `ia3_shared`) to `directory`, replacing it
    atomically: `trainable.safetensors` (its trainable tensors: every task's adapter and input conv, or
    `state_dict`, e.g. EMA or gathered weights, under the same names) and `method.json` (method, tasks, the
    task -> adapter map, the model fields `load_baseline` rebuilds it from, how dropped text was encoded)."""
    from safetensors.torch import save_file

    config: ModelConfig = model.baseline_config
    names = list(trainable_parameters(model))
    tensors = state_dict if state_dict is not None else {name: param.detach() for name, param in
                                                          model.named_parameters() if name in names}
    if set(tensors) != set(names):
        raise InputError(f"`state_dict` must hold exactly the baseline's trainable tensors; missing "
                         f"{sorted(set(names) - set(tensors))[:3]}, unknown {sorted(set(tensors) - set(names))[:3]}.")
    record = {"method": config.method, "tasks": model.task_names,
              "unconditional_text": unconditional_text if unconditional_text is not None else
              getattr(model, "unconditional_text", None),
              "model": {field: getattr(config, field) for field in BASELINE_MODEL_FIELDS}}
    record["model"]["base"] = base_location(config.base)  # absolute for a local folder: loads from anywhere
    if isinstance(model, TaskAdapterModel):
        record["adapters"] = model.task_adapters

    def write(folder: Path) -> None:
        save_file({name: tensors[name].detach().cpu().contiguous() for name in names}, str(folder / BASELINE_WEIGHTS))
        (folder / BASELINE_RECORD).write_text(json.dumps(record, indent=1))

    atomic_save_directory(write, directory)
    return Path(directory)


def read_baseline_record(directory) -> dict:
    """method.json of a trained baseline, in today's terms: a `lora` / `ia3` folder written before per-task
    adapters (no "adapters" entry) is the shared variant it was, and its model fields come from the run's
    config.yaml next to it when method.json does not hold them."""
    from .config import read_yaml

    directory = Path(directory).expanduser()
    path = directory / BASELINE_RECORD
    if not path.is_file():
        raise FileNotFoundError(f"{str(directory)!r} is not a trained baseline's folder: it has no {BASELINE_RECORD}.")
    try:
        record = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"{path} is not valid JSON ({error}); the baseline's folder is damaged.") from error
    if not isinstance(record, dict) or not isinstance(record.get("tasks"), list):
        raise InputError(f"{path} is not a baseline record: expected {{\"method\", \"tasks\": [...], ...}}.")
    method = record.get("method")
    if method in ("lora", "ia3") and "adapters" not in record:
        record["method"] = f"{method}_shared"  # one adapter for all tasks, as these methods trained then
    if "model" not in record:
        run_config = directory.parent / "config.yaml"
        if not run_config.is_file():
            raise FileNotFoundError(f"{path} does not record the model fields {BASELINE_MODEL_FIELDS} (written "
                                    f"before they were kept) and {run_config} is missing; it cannot be rebuilt.")
        fields = read_yaml(run_config.read_text()).get("model", {})
        record["model"] = {field: fields.get(field, getattr(ModelConfig, field, None)) for field in
                           BASELINE_MODEL_FIELDS}
    return record


def load_baseline(directory, base=None, torch_dtype: torch.dtype | None = None, *,
                  variant: str | None = None) -> BaselineModel:
    """A trained baseline from its folder (`save_baseline`, or a run's final/), frozen, in eval mode.

    Args:
        directory: The folder with trainable.safetensors and method.json.
        base: The base UNet (a `UNet2DConditionModel`, modified in place) or where to load it from
            (`mtu.load_base_unet`); default the base the folder records (found as `find_recorded_base` says).
        torch_dtype: dtype to cast the loaded model to.
        variant: The base's weights variant (e.g. "fp16"); default the one the folder records, for its base.
    """
    from ..upcycling import load_base_unet

    directory = Path(directory).expanduser()
    record = read_baseline_record(directory)
    weights = directory / BASELINE_WEIGHTS
    tensors = read_safetensors(weights, "trained baseline weights")  # its own files are checked before the base
    check_finite(tensors, weights)
    fields = {"variant": None, **record["model"]}
    if base is None:
        if not fields["base"]:
            raise InputError(f"{directory / BASELINE_RECORD} records no base; pass `base=` (CLI: --base).")
        base, variant = find_recorded_base(fields["base"], directory), variant or fields["variant"]
    if isinstance(base, nn.Module):
        unet, fields["base"] = base, fields["base"] or "unknown"
    else:
        unet = load_base_unet(str(base), variant=variant)
        fields.update(base=str(base), variant=variant)
    model = build_model(unet, ModelConfig(method=record["method"], **fields), list(record["tasks"]))
    params = dict(model.named_parameters())
    missing = [name for name, param in params.items() if param.requires_grad and name not in tensors]
    unknown = [name for name in tensors if name not in params]
    if missing or unknown:
        raise InputError(f"{weights} does not fit a {record['method']!r} baseline for tasks "
                         f"{record['tasks']}: missing {missing[:3]} ({len(missing)}), unknown {unknown[:3]} "
                         f"({len(unknown)}).")
    for name, tensor in tensors.items():
        if tensor.shape != params[name].shape:
            raise InputError(f"{weights}: tensor {name!r} has shape {tuple(tensor.shape)}, the baseline over this "
                             f"base expects {tuple(params[name].shape)} (weights of another base or rank?).")
    with torch.no_grad():
        for name, tensor in tensors.items():
            params[name].copy_(tensor)
    model.requires_grad_(False)
    model.unconditional_text = record.get("unconditional_text")
    if torch_dtype is not None:
        model.to(torch_dtype)
    return model.eval()
