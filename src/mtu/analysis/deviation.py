"""How far fine-tuning moves each part of every transformer block from the base (Sec. 4, Fig. 2 and Fig. 6).

For each block and each component (self-attention Q, K, V, out; cross-attention Q, K, V, out; the FFN's two linears,
GEGLU's projection included) Phi = ||theta_f - theta_p||_F over the component's weights and biases. Within a block
the components are ranked, 1 = moved most (the paper's figure counts the other way round: there a higher rank means
a larger deviation), and the ranks are averaged over the fine-tunes (Fig. 2). The raw distances per block are
Fig. 6. `conv_in` is not compared: it is the one layer whose shape differs between tasks.

The Frobenius norm grows with a component's size (the FFN has three times the parameters of an attention layer in
Stable Diffusion), so `measure="rms"` (||delta||_F / sqrt(numel)) and `"relative"` (||delta||_F / ||theta_p||_F) are
offered to separate "moved most" from "is largest".
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

import torch
from torch import nn

from ..errors import InputError

Measure = Literal["frobenius", "rms", "relative"]
COMPONENTS = ("sa.q", "sa.k", "sa.v", "sa.out", "ca.q", "ca.k", "ca.v", "ca.out", "ffn")
GROUPS = {"SA": COMPONENTS[:4], "CA": COMPONENTS[4:8], "FFN": COMPONENTS[8:]}
RANK_CONVENTION = "1 = moved most within the block; tied components share the mean of their ranks"
MEASURE_DEFINITIONS = {
    "frobenius": "||theta_f - theta_p||_F over the component's weights and biases (the paper's Phi)",
    "rms": "||theta_f - theta_p||_F / sqrt(numel): the root-mean-square change per parameter",
    "relative": "||theta_f - theta_p||_F / ||theta_p||_F",
}


UNET_STAGES = ("down_blocks", "mid_block", "up_blocks")  # the order a UNet's forward runs them in


def forward_order(names: list[str]) -> list[str]:
    """Transformer block names in the order the UNet's forward reaches them (down, mid, up: layer depth, as the
    paper's figures count layers). diffusers registers `mid_block` after `up_blocks`, so module order is not it.
    Names may carry a `unet.` prefix; the sort is stable, so each stage keeps its module order."""
    stage = {name: index for index, name in enumerate(UNET_STAGES)}
    return sorted(names, key=lambda name: stage.get(name.removeprefix("unet.").split(".")[0], len(UNET_STAGES)))


def transformer_blocks(unet: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, block) of every diffusers `BasicTransformerBlock`, in forward order (`forward_order`)."""
    from diffusers.models.attention import BasicTransformerBlock

    blocks = {name: module for name, module in unet.named_modules() if isinstance(module, BasicTransformerBlock)}
    return [(name, blocks[name]) for name in forward_order(list(blocks))]


def block_components(block: nn.Module, name: str) -> dict[str, list[nn.Module]]:
    """Component -> its linear layers in one block (a block without cross-attention has no `ca.*`)."""
    attentions = {"sa": block.attn1, "ca": getattr(block, "attn2", None)}
    parts = {}
    for prefix, attention in attentions.items():
        if attention is None:
            continue
        for short, layer in (("q", attention.to_q), ("k", attention.to_k), ("v", attention.to_v),
                             ("out", attention.to_out[0])):
            parts[f"{prefix}.{short}"] = [layer]
    ff = getattr(block, "ff", None)
    net = getattr(ff, "net", None)
    if net is None or not hasattr(net[0], "proj") or not isinstance(net[2], nn.Linear):
        raise InputError(f"block {name!r} has no diffusers FeedForward (ff.net[0].proj, ff.net[2]); deviation compares "
                         f"stock diffusers UNets (an upcycled MTU model is not one: see `mtu analyze router`).")
    parts["ffn"] = [net[0].proj, net[2]]
    return parts


def _squares(layers: list[nn.Module]) -> tuple[list[torch.Tensor], int, float]:
    """(the layers' parameters in float64, their number of elements, their squared Frobenius norm)."""
    tensors = [param.detach().to(torch.float64) for layer in layers for param in layer.parameters()]
    return tensors, sum(t.numel() for t in tensors), float(sum((t * t).sum() for t in tensors))


def component_sums(base: nn.Module, finetuned: nn.Module, label: str) -> dict[str, dict[str, dict]]:
    """{block: {component: {"squared_distance", "numel", "base_squared_norm"}}} of `finetuned` against `base`.

    Raises InputError when the fine-tune's blocks or shapes are not the base's, or it holds non-finite weights.
    """
    base_blocks, tuned_blocks = transformer_blocks(base), dict(transformer_blocks(finetuned))
    if not base_blocks:
        raise InputError("the base has no transformer blocks (diffusers BasicTransformerBlock) to compare.",
                         field="--base")
    sums = {}
    for name, block in base_blocks:
        if name not in tuned_blocks:
            raise InputError(f"{label!r} has no transformer block {name!r}; deviation needs fine-tunes of the "
                             f"base's architecture (only conv_in may differ).", field="--finetuned")
        tuned = block_components(tuned_blocks[name], name)
        sums[name] = {}
        for component, layers in block_components(block, name).items():
            base_tensors, numel, base_square = _squares(layers)
            tuned_tensors, _, _ = _squares(tuned.get(component, []))
            shapes = [tuple(t.shape) for t in base_tensors], [tuple(t.shape) for t in tuned_tensors]
            if shapes[0] != shapes[1]:
                raise InputError(f"{label!r}: {name} {component} has shapes {shapes[1]}, the base {shapes[0]}; "
                                 f"deviation needs fine-tunes of the base's architecture (only conv_in may differ).",
                                 field="--finetuned")
            square = float(sum(((t - b) ** 2).sum() for t, b in zip(tuned_tensors, base_tensors)))
            if not math.isfinite(square):
                raise InputError(f"{label!r}: {name} {component} holds NaN or infinite weights; the fine-tune is "
                                 f"damaged and is refused.", field="--finetuned")
            sums[name][component] = {"squared_distance": square, "numel": numel, "base_squared_norm": base_square}
    if all(entry["squared_distance"] == 0 for block in sums.values() for entry in block.values()):
        raise InputError(f"{label!r} equals the base in every compared weight: it is not a fine-tune of it (the "
                         f"base given twice?), and there is nothing to rank.", field="--finetuned")
    return sums


def distance(entries: list[dict], measure: Measure) -> float:
    """The deviation of the union of `entries` (component sums) under `measure`."""
    square = sum(e["squared_distance"] for e in entries)
    if measure == "frobenius":
        return math.sqrt(square)
    if measure == "rms":
        return math.sqrt(square / sum(e["numel"] for e in entries))
    if measure == "relative":
        norm = sum(e["base_squared_norm"] for e in entries)
        if norm == 0:
            raise InputError("is 'relative', but a compared component's base weights are all zero (the ratio is "
                             "undefined); use 'frobenius' or 'rms'.", field="measure")
        return math.sqrt(square / norm)
    raise InputError(f"must be one of {get_args(Measure)}, got {measure!r}.", field="measure")


def rank_descending(values: dict[str, float]) -> dict[str, float]:
    """Rank 1 for the largest value; ties share the mean of the ranks they span."""
    order = sorted(values, key=lambda key: -values[key])
    ranks, start = {}, 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for key in order[start:end + 1]:
            ranks[key] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def _mean(tables: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    return {block: {key: sum(t[block][key] for t in tables) / len(tables) for key in tables[0][block]}
            for block in tables[0]}


@dataclass
class FineTuneDeviation:
    """One fine-tune's deviation from the base.

    Args:
        label: Its name in figures and tables.
        source: Where it was loaded from.
        sums: `component_sums`: per block and component, the squared distance, numel and the base's squared norm.
    """

    label: str
    source: str
    sums: dict[str, dict[str, dict]]

    def distances(self, measure: Measure, groups: bool = False) -> dict[str, dict[str, float]]:
        """{block: {component (or SA/CA/FFN with `groups`): deviation}}."""
        if not groups:
            return {b: {c: distance([e], measure) for c, e in parts.items()} for b, parts in self.sums.items()}
        return {b: {g: distance([parts[c] for c in members if c in parts], measure)
                    for g, members in GROUPS.items() if any(c in parts for c in members)}
                for b, parts in self.sums.items()}

    def ranks(self, measure: Measure, groups: bool = False) -> dict[str, dict[str, float]]:
        return {block: rank_descending(values) for block, values in self.distances(measure, groups).items()}


@dataclass
class DeviationResult:
    """The deviation analysis over several fine-tunes of one base (`weight_deviation`)."""

    base: str
    measure: Measure
    finetunes: list[FineTuneDeviation] = field(default_factory=list)

    @property
    def blocks(self) -> list[str]:
        return list(self.finetunes[0].sums)

    def mean_ranks(self, groups: bool = False) -> dict[str, dict[str, float]]:
        """{block: {component: rank averaged over the fine-tunes}} (Fig. 2)."""
        return _mean([tune.ranks(self.measure, groups) for tune in self.finetunes])

    def overall_ranks(self, groups: bool = False) -> dict[str, float]:
        """{component: mean rank over blocks and fine-tunes}."""
        table = self.mean_ranks(groups)
        keys = dict.fromkeys(key for ranks in table.values() for key in ranks)
        return {key: sum(r[key] for r in table.values() if key in r) / sum(key in r for r in table.values())
                for key in keys}

    def to_dict(self) -> dict:
        """Everything the figures show, and what it is computed from."""
        first = self.finetunes[0].sums
        return {
            "analysis": "deviation", "base": self.base, "measure": self.measure,
            "measure_definition": MEASURE_DEFINITIONS[self.measure], "rank_convention": RANK_CONVENTION,
            "components": list(COMPONENTS), "groups": {g: list(m) for g, m in GROUPS.items()}, "blocks": self.blocks,
            "numel": {b: {c: e["numel"] for c, e in parts.items()} for b, parts in first.items()},
            "mean_ranks": self.mean_ranks(), "mean_group_ranks": self.mean_ranks(groups=True),
            "overall_ranks": self.overall_ranks(), "overall_group_ranks": self.overall_ranks(groups=True),
            "finetunes": [{"label": t.label, "source": t.source,
                           "distances": t.distances(self.measure), "ranks": t.ranks(self.measure),
                           "group_distances": t.distances(self.measure, groups=True),
                           "group_ranks": t.ranks(self.measure, groups=True)} for t in self.finetunes],
        }


def _label(source, given: str | None, taken: set[str]) -> str:
    """A fine-tune's label: given, else its folder's name (a run's final/ is named after the run)."""
    path = Path(str(source))
    label = given or (path.parent.name if path.name == "final" else path.name) or str(source)
    unique, number = label, 2
    while unique in taken:
        unique, number = f"{label}-{number}", number + 1
    return unique


def _trained_full_folder(path: Path) -> Path | None:
    """The trained baseline folder (method.json) at `path` or in a run folder's final/, or None."""
    from ..training.methods import BASELINE_RECORD

    for folder in (path, path / "final"):
        if (folder / BASELINE_RECORD).is_file():
            return folder
    return None


def check_finetuned(source) -> tuple[str, object]:
    """What a fine-tune `source` is, checked before any weights load: ("module", its UNet), ("trained", the folder
    of a `method: full` run's weights) or ("diffusers", what `mtu.load_base_unet` loads). Refuses an MTU adapter
    and a run of another method."""
    from ..training.methods import read_baseline_record
    from ..upcycling.files import CONFIG_NAME

    if isinstance(source, nn.Module):
        return "module", getattr(source, "unet", source)
    path = Path(str(source)).expanduser()
    if path.is_dir() and (path / CONFIG_NAME).is_file():
        raise InputError(f"{str(source)!r} is an MTU adapter; deviation compares full fine-tunes (diffusers UNet or "
                         f"pipeline folders, or a `method: full` run). For an adapter, see `mtu analyze router`.",
                         field="--finetuned")
    folder = _trained_full_folder(path) if path.is_dir() else None
    if folder is None:
        return "diffusers", str(source)
    method = read_baseline_record(folder)["method"]
    if method != "full":
        raise InputError(f"{str(source)!r} is a {method!r} run; deviation compares full fine-tunes (`method: full`, "
                         f"or diffusers UNet/pipeline folders), whose every weight trained.", field="--finetuned")
    return "trained", folder


def load_finetuned(checked: tuple[str, object], base_unet: nn.Module) -> nn.Module:
    """The fine-tuned UNet that `check_finetuned` found: a diffusers pipeline or UNet folder (or anything
    `mtu.load_base_unet` loads), or what `mtu train` writes for `method: full` (a final/ folder)."""
    from ..training.methods import load_baseline
    from ..upcycling import load_base_unet

    kind, value = checked
    if kind == "module":
        return value
    if kind == "diffusers":
        return load_base_unet(value)
    # Every UNet weight of a full fine-tune is in its own file: the base only lends the frame they are loaded into.
    return load_baseline(value, base=copy.deepcopy(base_unet)).unet


def weight_deviation(base, finetuned: list, *, labels: list[str] | None = None,
                     measure: Measure = "frobenius") -> DeviationResult:
    """Compares fine-tunes of `base` with it, block by block (Fig. 2 and Fig. 6).

    Args:
        base: The pre-trained UNet, or where to load it from (`mtu.load_base_unet`: a folder, "toyworld-base", ...).
        finetuned: Fine-tunes of it: UNets (or models holding one in `.unet`), diffusers UNet/pipeline folders, or
            `mtu train` outputs of `method: full` (a run's final/ folder, or the run folder).
        labels: Their names (default: their folders' names).
        measure: How a component's deviation is measured (`MEASURE_DEFINITIONS`); ranks follow it.
    """
    from ..upcycling import load_base_unet

    if measure not in get_args(Measure):
        raise InputError(f"must be one of {get_args(Measure)}, got {measure!r}.", field="measure")
    if isinstance(finetuned, (str, Path, nn.Module)) or not finetuned:
        raise InputError(f"must be a non-empty list of fine-tunes, got {finetuned!r}.", field="finetuned")
    if labels is not None and len(labels) != len(finetuned):
        raise InputError(f"gives {len(labels)} labels for {len(finetuned)} fine-tunes.", field="labels")
    checked = [check_finetuned(source) for source in finetuned]  # every refusal before any weights load
    base_unet = base if isinstance(base, nn.Module) else load_base_unet(str(base))
    result = DeviationResult(base=str(base) if not isinstance(base, nn.Module) else type(base).__name__,
                             measure=measure)
    taken: set[str] = set()
    for number, source in enumerate(finetuned):
        label = _label(source if not isinstance(source, nn.Module) else f"finetune{number}",
                       labels[number] if labels else None, taken)
        taken.add(label)
        with torch.no_grad():
            sums = component_sums(base_unet, load_finetuned(checked[number], base_unet), label)
        result.finetunes.append(FineTuneDeviation(label, str(source) if not isinstance(source, nn.Module) else label,
                                                  sums))
        result.finetunes[-1].distances(measure)  # refuses a measure undefined on these weights, before any output
    return result


COMPONENT_LABELS = {"sa.q": "SA Q", "sa.k": "SA K", "sa.v": "SA V", "sa.out": "SA out", "ca.q": "CA Q",
                    "ca.k": "CA K", "ca.v": "CA V", "ca.out": "CA out", "ffn": "FFN"}


def deviation_figures(result: DeviationResult) -> dict:
    """{file name: draw(path)}: the mean ranks (Fig. 2) and the SA/CA/FFN distances per block (Fig. 6)."""
    from .figures import heatmap, line_panels

    blocks, ranks = result.blocks, result.mean_ranks()
    components = [c for c in COMPONENTS if any(c in ranks[b] for b in blocks)]
    values = [[ranks[b].get(c) for b in blocks] for c in components]
    layers = [str(number) for number in range(1, len(blocks) + 1)]
    title = f"{result.measure} deviation: mean rank over {len(result.finetunes)} fine-tune(s)\n(1 = moved most)"
    panels = {tune.label: {group: [d[b][group] for b in blocks] for group in GROUPS}
              for tune in result.finetunes for d in [tune.distances(result.measure, groups=True)]}
    return {
        "deviation_ranks.png": lambda path: heatmap(
            path, values, rows=[COMPONENT_LABELS[c] for c in components], cols=layers, title=title,
            xlabel="transformer block (layer depth)", ylabel="component", colorbar="mean rank", fmt=".1f",
            vmin=1, vmax=len(components), cmap="viridis_r"),
        "deviation_distances.png": lambda path: line_panels(
            path, panels, xlabel="transformer block (layer depth)", ylabel=f"{result.measure} deviation"),
    }
