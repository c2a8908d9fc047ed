"""`mtu cache`: VAE latents (and optionally text embeddings) of a run's data, encoded once and reused.

The VAE encode dominates step time on large runs; every epoch of a run otherwise encodes the same images again.
Per source and cached epoch, `source-{i}/epoch-{e}.safetensors` holds the target latent distribution (mean,
std: training still draws a fresh latent sample each step), the task's conditioning channels, and a validity flag
(unreadable samples are 0); `epoch-{e}.json` holds prompts and keys. Per-epoch random choices (caption, edit
target variant, SR degradation) are cached for `epochs` epochs and reused cyclically after that.

The cache folder is claimed before any work (`mtu.outputs.claim_output`): new, empty or an earlier cache; another
folder only with `overwrite`, where only the cache's files are replaced. It is written to a staging folder and moved
into place when complete, so a failed run leaves nothing half-written.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import safe_open
from tqdm.auto import tqdm

from ..conditioning import condition_channels
from ..data import build_dataset, collate_examples
from ..errors import InputError
from ..outputs import claim_output, run_inputs
from ..upcycling.serialization import atomic_save_safetensors, atomic_write_text
from ..upcycling.tasks import get_task
from .components import FrozenParts, encode_prompts, load_frozen_parts
from .config import TrainConfig

FORMAT, VERSION = "mtu-latent-cache", 1
_CONTENT_KEYS = ("task", "format", "path", "schema", "columns", "resolution", "split", "sr_scale", "seed",
                 "degradation")


def _as_dict(source) -> dict:
    """A data source as a dict, whether given as written (a mapping) or as its format's typed config."""
    if isinstance(source, Mapping):
        return dict(source)
    return source.to_dict() if hasattr(source, "to_dict") else dataclasses.asdict(source)


def _content(source) -> dict:
    """The fields of a source that decide what is cached (not its mixing weight)."""
    fields = _as_dict(source)
    return json.loads(json.dumps({k: fields.get(k) for k in _CONTENT_KEYS}, default=str))


@torch.no_grad()
def _encode_chunk(parts: FrozenParts, examples: list, task: str) -> dict:
    batch = collate_examples(examples)
    valid = torch.tensor([example is not None for example in examples], dtype=torch.uint8)
    count = len(examples)
    if batch is None:
        return {"valid": valid, "prompts": [""] * count, "keys": [""] * count}
    distribution = parts.vae.encode(batch["target"]).latent_dist
    spec = get_task(task)
    condition = condition_channels(parts.vae, spec, batch["condition"], batch["mask"],
                                   latent_size=tuple(distribution.mean.shape[-2:]))
    rows = valid.nonzero().flatten()

    def scatter(values):  # (kept, ...) -> (count, ...) with zeros for unreadable samples
        full = torch.zeros((count, *values.shape[1:]), dtype=values.dtype)
        full[rows] = values
        return full

    prompts, keys = [""] * count, [""] * count
    for row, prompt, key in zip(rows.tolist(), batch["prompt"], batch["key"]):
        prompts[row], keys[row] = prompt, key
    out = {"valid": valid, "target_mean": scatter(distribution.mean), "target_std": scatter(distribution.std),
           "prompts": prompts, "keys": keys}
    if condition is not None:
        out["condition"] = scatter(condition)
    return out


def _stack_chunks(chunks: list[dict]) -> dict[str, torch.Tensor]:
    """Concatenates chunk tensors; a chunk whose samples were all unreadable contributes zeros."""
    names = {key for chunk in chunks for key in chunk if key not in ("prompts", "keys")}
    shapes = {key: next(c[key].shape[1:] for c in chunks if key in c) for key in names}
    return {key: torch.cat([c[key] if key in c else torch.zeros(len(c["valid"]), *shapes[key]) for c in chunks])
            for key in names}


def is_cache(folder: Path) -> bool:
    """True for a folder an earlier `mtu cache` wrote (its manifest says so)."""
    try:
        return json.loads((folder / "manifest.json").read_text()).get("format") == FORMAT
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return False


def build_cache(config: TrainConfig, out: str | Path, epochs: int = 1, text: bool = False,
                chunk_size: int = 8, *, overwrite: bool = False) -> Path:
    """Encodes every sample of every source of `config` for `epochs` epochs into the folder `out`; returns it.

    `overwrite` writes into an existing folder that holds other files too (only the cache's files are replaced).
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise InputError(f"`epochs` must be >= 1, got {epochs!r}.")
    output = claim_output(out, command="cache", overwrite=overwrite, inputs=run_inputs(config), recognize=is_cache)
    with output.stage() as staging:
        _write_cache(config, staging, epochs, text, chunk_size)
    return Path(out)


def _write_cache(config: TrainConfig, out: Path, epochs: int, text: bool, chunk_size: int) -> None:
    parts = load_frozen_parts(config.model.base, config.model.variant)
    parts.to("cpu", torch.float32)
    prompts: set[str] = {""}
    for number, source in enumerate(config.data):
        dataset = build_dataset(source)
        folder = out / f"source-{number}"
        folder.mkdir(parents=True, exist_ok=True)
        for epoch in range(epochs):
            chunks = []
            for start in tqdm(range(0, len(dataset), chunk_size), desc=f"source {number} epoch {epoch}"):
                indices = range(start, min(start + chunk_size, len(dataset)))
                chunks.append(_encode_chunk(parts, [dataset.get(i, epoch) for i in indices], dataset.config.task))
            tensors = _stack_chunks(chunks)
            atomic_save_safetensors(tensors, folder / f"epoch-{epoch}.safetensors")
            meta = {"prompts": sum((c["prompts"] for c in chunks), []), "keys": sum((c["keys"] for c in chunks), [])}
            atomic_write_text(folder / f"epoch-{epoch}.json", json.dumps(meta))
            prompts.update(meta["prompts"])
    if text:
        _cache_text(parts, sorted(prompts), out, config)
    manifest = {"format": FORMAT, "version": VERSION, "base": config.model.base, "epochs": epochs, "text": text,
                "sources": [_content(s) for s in config.data]}
    atomic_write_text(out / "manifest.json", json.dumps(manifest, indent=2))


@torch.no_grad()
def _cache_text(parts: FrozenParts, prompts: list[str], out: Path, config: TrainConfig) -> None:
    resolution = _as_dict(config.data[0]).get("resolution") or 512
    tensors = {}
    for start in range(0, len(prompts), 32):
        hidden, kwargs = encode_prompts(parts, prompts[start:start + 32], resolution, "cpu")
        for offset, row in enumerate(hidden):
            tensors[f"hidden.{start + offset}"] = row.contiguous()
            if kwargs:
                tensors[f"pooled.{start + offset}"] = kwargs["added_cond_kwargs"]["text_embeds"][offset].contiguous()
    atomic_save_safetensors(tensors, out / "text.safetensors")
    atomic_write_text(out / "text.json", json.dumps({prompt: i for i, prompt in enumerate(prompts)}))


class LatentCache:
    """Reads a cache made by `build_cache` for the same base and sources (checked on open)."""

    def __init__(self, directory: str | Path, config: TrainConfig):
        self.directory = Path(directory)
        path = self.directory / "manifest.json"
        if not path.is_file():
            raise FileNotFoundError(f"`cache_dir` {str(directory)!r} holds no cache (manifest.json missing); make "
                                    f"one with `mtu cache --config RUN.yaml --out DIR`.")
        manifest = json.loads(path.read_text())
        expected = [_content(s) for s in config.data]
        if manifest.get("format") != FORMAT or manifest.get("base") != config.model.base \
                or manifest.get("sources") != expected:
            raise InputError(f"`cache_dir` {str(directory)!r} was made for another base or other data sources; "
                             f"rebuild it with `mtu cache`.")
        self.epochs, self.has_text = manifest["epochs"], manifest["text"]
        self.meta = {}
        self._handles = {}  # open files, per process: reopening per sample would re-read each header
        if self.has_text:
            self.text_index = json.loads((self.directory / "text.json").read_text())

    def __getstate__(self) -> dict:  # DataLoader workers open their own handles
        return {**self.__dict__, "_handles": {}}

    def _handle(self, path: str):
        if path not in self._handles:
            self._handles[path] = safe_open(path, framework="pt")
        return self._handles[path]

    def _files(self, source: int, epoch: int):
        key = (source, epoch % self.epochs)
        if key not in self.meta:
            stem = self.directory / f"source-{key[0]}" / f"epoch-{key[1]}"
            self.meta[key] = (json.loads(stem.with_suffix(".json").read_text()), str(stem) + ".safetensors")
        return self.meta[key]

    def get(self, source: int, index: int, epoch: int, task: str) -> dict | None:
        """The cached example, or None where the sample was unreadable when the cache was built."""
        meta, path = self._files(source, epoch)
        handle = self._handle(path)
        if not handle.get_slice("valid")[index:index + 1].item():
            return None
        example = {name: handle.get_slice(name)[index:index + 1][0] for name in handle.keys() if name != "valid"}
        return {"task": task, "prompt": meta["prompts"][index], "key": meta["keys"][index], **example}

    def text_embeddings(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(hidden states, pooled or None) for prompts that were cached."""
        handle = self._handle(str(self.directory / "text.safetensors"))
        rows = [self.text_index[p] for p in prompts]
        hidden = torch.stack([handle.get_tensor(f"hidden.{r}") for r in rows])
        pooled = torch.stack([handle.get_tensor(f"pooled.{r}") for r in rows]) \
            if f"pooled.{rows[0]}" in handle.keys() else None
        return hidden, pooled


def collate_cached(examples: list) -> dict | None:
    """Stacks cached examples; conditioning channels are zero-padded to the widest task in the batch."""
    kept = [example for example in examples if example is not None]
    if not kept:
        return None
    width = max(example["condition"].shape[0] if "condition" in example else 0 for example in kept)
    size = kept[0]["target_mean"].shape[-2:]
    condition = torch.zeros(len(kept), width, *size)
    for row, example in enumerate(kept):
        if "condition" in example:
            condition[row, : example["condition"].shape[0]] = example["condition"]
    return {"task": [e["task"] for e in kept], "prompt": [e["prompt"] for e in kept], "key": [e["key"] for e in kept],
            "slot": [e["slot"] for e in kept], "target_mean": torch.stack([e["target_mean"] for e in kept]),
            "target_std": torch.stack([e["target_std"] for e in kept]), "condition_latents": condition}
