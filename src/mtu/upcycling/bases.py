"""The base UNet: loading the one a user names (a local diffusers folder, a single-file checkpoint, a hub id, a
shipped base or architecture), recording where it is, and identifying it (its architecture config and fingerprints of
its weights, which an adapter records).

Where a base is recorded: a local folder or file as its absolute path, a hub id pinned to the commit it was loaded
at (`org/name@<sha>`, from the local Hugging Face cache), a shipped base's short name or `random:<arch>` as given
(`base_location`). A name is taken for a hub id only if it cannot be a local path (`looks_like_hub_id`), so a missing
local path fails at once, naming it, instead of retrying the hub. A hub id may name a revision itself,
`org/name@<branch, tag or commit>` (`split_revision`), wherever a base is given.

Fingerprints: sha256 over every tensor's name, dtype, shape and bytes, taken of the weights cast to each precision
in `PRECISIONS` that is not finer than the weights themselves (`base_identity`). Weights are "exact" at a
precision when casting them to it and back changes nothing (fp16 values upcast to fp32 are exact at fp16). An
adapter and a base are compared at a precision both are exact at, else at the coarser side's (an fp32 base checked
against the fp16 weights an adapter was made from is rounded to fp16 first: the same rounding, so equal); see
`fingerprint_matches`.
"""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
from pathlib import Path

import torch
from diffusers import UNet2DConditionModel

from ..errors import InputError
from ..shipped import resolve, short_names
from .files import PICKLE_SUFFIXES, pickle_refusal

RANDOM_PREFIX = "random:"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?$")  # org/name, optionally @revision
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
PRECISIONS = ("float32", "float16", "bfloat16")  # finest first; a record holds the hashes from its own onwards


# -- fingerprints ----------------------------------------------------------------------------------------------------
def _hash_at(tensors, precision: str | None) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, floating tensors cast to `precision` first (None:
    each tensor's own dtype, the one fingerprint adapters recorded before issue 14)."""
    digest = hashlib.sha256()
    for name, tensor in tensors:
        if precision is not None and tensor.is_floating_point():
            tensor = tensor.to(getattr(torch, precision))
        tensor = tensor.contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return "sha256:" + digest.hexdigest()


def _cpu_tensors(module: torch.nn.Module):
    """(name, tensor on the CPU) in name order, one at a time (a GPU model is not copied whole)."""
    for name, tensor in sorted(module.state_dict().items()):
        yield name, tensor.detach().cpu()


def _exact_precisions(tensors) -> list[str]:
    """The narrow precisions (float16, bfloat16) at which every floating tensor is exact, or ["float32"]."""
    exact = list(PRECISIONS[1:])
    for _, tensor in tensors:
        if tensor.is_floating_point():
            exact = [p for p in exact if torch.equal(tensor.to(getattr(torch, p)).to(tensor.dtype), tensor)]
            if not exact:
                return ["float32"]
    return exact or ["float32"]


def weights_fingerprint(module: torch.nn.Module, precision: str | None = None) -> str:
    """The fingerprint of `module`'s weights cast to `precision` (None: each tensor's own dtype)."""
    return _hash_at(_cpu_tensors(module), precision)


def base_identity(module: torch.nn.Module) -> dict:
    """What an adapter records to recognise its base's weights in any precision.

    Returns:
        {"fingerprint": the hash at the weights' own (narrowest exact) precision, "fingerprint_precisions": the
        precisions the weights are exact at, "fingerprints": {precision: hash} for that precision and every coarser
        one in `PRECISIONS`}.
    """
    exact = _exact_precisions(_cpu_tensors(module))
    hashes = {p: _hash_at(_cpu_tensors(module), p) for p in PRECISIONS[PRECISIONS.index(exact[0]):]}
    return {"fingerprint": hashes[exact[0]], "fingerprint_precisions": exact, "fingerprints": hashes}


def _precisions_to_compare(recorded: list[str], loaded: list[str]) -> list[str]:
    """Where both sides are exact, else where the coarser side is (fp16 against bf16: bf16, which then refuses
    unless both roundings agree)."""
    common = [p for p in recorded if p in loaded]
    if common:
        return common
    if recorded == ["float32"]:
        return loaded
    if loaded == ["float32"]:
        return recorded
    return ["bfloat16"]


def fingerprint_matches(record: dict, module: torch.nn.Module) -> tuple[bool, str]:
    """(whether `module`'s weights are the base `record` (an adapter's "base" entry) was made from, the precision
    compared at). An adapter written before issue 14 holds one "fingerprint" of the weights in their dtype then: it
    matches the base cast to whichever precision gives the same hash."""
    recorded = record.get("fingerprints")
    if not isinstance(recorded, dict):  # the old form: one hash, its dtype inside the hashed text
        for precision in (None, *PRECISIONS):
            if _hash_at(_cpu_tensors(module), precision) == record["fingerprint"]:
                return True, precision or "stored"
        return False, "any"
    exact = record.get("fingerprint_precisions") or ["float32"]
    compared = [p for p in _precisions_to_compare(exact, _exact_precisions(_cpu_tensors(module))) if p in recorded]
    for precision in compared:  # each is exact on the coarser side: equal there means the same weights, rounded
        if _hash_at(_cpu_tensors(module), precision) == recorded[precision]:
            return True, precision
    return False, ", ".join(compared) or "none"


def base_unet_config(unet: UNet2DConditionModel) -> dict:
    """The architecture part of a UNet's config (no private `_` keys), JSON-normalised for comparison."""
    return json.loads(json.dumps({k: v for k, v in unet.config.items() if not k.startswith("_")}))


# -- where a base is -------------------------------------------------------------------------------------------------
def _is_short_name(text: str) -> bool:
    return text in short_names("base") and not Path(text).expanduser().exists()


def looks_like_hub_id(spec: str, folder=None) -> bool:
    """`org/name` that cannot be a local path: one slash, no leading `/`, `./`, `../` or `~`, and no folder named
    `org` in `folder` (default: the current directory; if there is one, `spec` is a local path that is missing)."""
    return bool(_HUB_ID.match(spec)) and not (Path(folder or ".") / spec.split("/", 1)[0]).exists()


def split_revision(spec: str) -> tuple[str, str | None]:
    """(repo id, revision or None) of a hub id written `org/name@revision`; anything else as (spec, None)."""
    if "@" in spec and looks_like_hub_id(spec):
        repo, revision = spec.split("@", 1)
        return repo, revision
    return spec, None


def hub_revision_kwargs(spec: str) -> tuple[str, dict]:
    """(what to pass `from_pretrained` as the name, its `revision=` keyword if `spec` names one)."""
    repo, revision = split_revision(spec)
    return repo, ({"revision": revision} if revision else {})


def cached_commit(spec: str) -> str | None:
    """The commit the local Hugging Face cache holds for hub id `spec` (at its revision, default "main"), or None
    where the cache has no snapshot of it (nothing is downloaded)."""
    from huggingface_hub import try_to_load_from_cache

    repo, revision = split_revision(spec)
    if revision and _COMMIT.match(revision):
        return revision
    for filename in ("model_index.json", "unet/config.json", "config.json"):
        found = try_to_load_from_cache(repo, filename, revision=revision or "main")
        if isinstance(found, str):
            parts = Path(found).parts
            return parts[parts.index("snapshots") + 1] if "snapshots" in parts else None
    return None


def base_location(name_or_path) -> str | None:
    """How an adapter records where its base is: an existing local folder or file as its absolute path; a hub id
    pinned to the commit the local cache holds for it (`org/name@<sha>`; as given where the cache has none); a
    shipped base's short name, `random:<arch>` or a path that does not exist here as given."""
    if not name_or_path:
        return None
    text = str(name_or_path)
    if text.startswith(RANDOM_PREFIX) or _is_short_name(text):
        return text
    path = Path(text).expanduser()
    if path.exists():
        return str(path.resolve())
    commit = cached_commit(text) if looks_like_hub_id(text) else None
    return f"{split_revision(text)[0]}@{commit}" if commit else text


def find_recorded_base(recorded: str, adapter_directory) -> str:
    """Where to load the base an adapter in `adapter_directory` records as `recorded`.

    Adapters record absolute paths (`base_location`); one written before issue 14 may record a path relative to
    the directory it was made in. Such a path is tried relative to the current directory, then relative to each
    folder above the adapter's (a run's `runs/x/final` finds `models/base` beside `runs/`). What is found nowhere is
    returned as recorded: a hub id then loads from the hub, a missing path fails naming it.
    """
    if recorded.startswith(RANDOM_PREFIX) or _is_short_name(recorded):
        return recorded
    path = Path(recorded).expanduser()
    if path.is_absolute() or path.exists():
        return str(path)
    for parent in Path(adapter_directory).resolve().parents:
        if (parent / path).exists():
            return str(parent / path)
    return recorded


# -- checking and loading a base -------------------------------------------------------------------------------------
def _refuse_pickled_weights(folder: Path) -> None:
    """A UNet folder whose weights are only pickles (diffusion_pytorch_model.bin) is refused, never unpickled."""
    if folder.is_dir() and not any(folder.glob("*.safetensors")):
        pickles = sorted(p for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if pickles:
            raise pickle_refusal(pickles[0])


def weight_variants(folder: Path) -> set[str | None]:
    """The variants of the safetensors weights in `folder`, from their names (diffusers' and transformers' rule):
    None for `model.safetensors` (or a shard `model-00001-of-00002.safetensors`), "fp16" for
    `model.fp16.safetensors` (or `model.fp16-00001-of-00002.safetensors`)."""
    names = [path.name.split(".") for path in Path(folder).glob("*.safetensors")]
    return {parts[1].split("-")[0] if len(parts) == 3 else None for parts in names}


def check_weights_variant(folder: Path, variant: str | None, base: str | None = None) -> None:
    """A model folder (a UNet's, or a pipeline's `vae/`, `text_encoder/`, ...) holds weights of `variant`; else one
    line naming the folder, the variants it does hold and the flag to pass. A folder without safetensors is left to
    the loader (which refuses pickles by name)."""
    found = weight_variants(folder) if Path(folder).is_dir() else set()
    if not found or variant in found:
        return
    where = f"`base` {base!r}: " if base else ""
    held = sorted(v for v in found if v is not None)
    if variant is None:
        raise InputError(f"{where}{str(folder)!r} holds only weights of variant {', '.join(map(repr, held))}; pass "
                         f"`variant={held[0]!r}` (CLI: --variant {held[0]}).")
    kinds = (["plain (no variant)"] if None in found else []) + [repr(v) for v in held]
    raise InputError(f"`variant` {variant!r}: {where}{str(folder)!r} has no {variant!r} weights; it holds "
                     f"{' and '.join(kinds)} weights.")


def _random_spec(spec: str) -> tuple[str, int]:
    """(architecture, seed) of `random:<arch>[:<seed>]`, or InputError."""
    from ..architectures import ARCHITECTURES

    parts = spec[len(RANDOM_PREFIX):].split(":")
    name, seed = parts[0], parts[1] if len(parts) > 1 else "0"
    if name not in ARCHITECTURES or len(parts) > 2 or not seed.isdigit():
        raise InputError(f"`base` {spec!r} is not of the form random:<arch>[:<seed>] with arch in "
                         f"{sorted(ARCHITECTURES)}.")
    return name, int(seed)


def _check_single_file_config(spec: str, config) -> None:
    if isinstance(config, dict):
        return  # a UNet config, as an adapter records its base's
    if config is None:
        raise InputError(f"`base` {spec!r} is a single-file checkpoint; loading it needs the diffusers config of its "
                         f"architecture: pass `single_file_config=` (CLI: --base-config) with a local diffusers "
                         f"pipeline folder (unet/config.json) or UNet folder (config.json) of that architecture.")
    folder = Path(str(config)).expanduser()
    if not (folder / "unet" / "config.json").is_file() and not (folder / "config.json").is_file():
        raise InputError(f"`single_file_config` (CLI: --base-config) {str(config)!r} is not a local diffusers "
                         f"pipeline folder (with unet/config.json) or UNet folder (with config.json).")


def _check_file_base(spec: str, path: Path, variant, single_file_config) -> tuple[str, str]:
    if path.suffix in PICKLE_SUFFIXES:
        raise pickle_refusal(path)
    if path.suffix != ".safetensors":
        raise InputError(f"`base` {spec!r} is a file but not a .safetensors checkpoint; give a single-file "
                         f".safetensors checkpoint or the folder of a diffusers pipeline or UNet.")
    if variant is not None:
        raise InputError(f"`variant` {variant!r} does not apply to the single-file checkpoint {spec!r}.")
    _check_single_file_config(spec, single_file_config)
    return "single_file", str(path.resolve())


def _check_folder_base(spec: str, path: Path, variant) -> tuple[str, str]:
    if (path / "model_index.json").is_file():
        kind, unet_folder = "pipeline", path / "unet"
    elif (path / "config.json").is_file():
        kind, unet_folder = "unet", path
    else:
        raise InputError(f"`base` folder {spec!r} holds neither a diffusers pipeline (model_index.json) nor a UNet "
                         f"(config.json).")
    _refuse_pickled_weights(unet_folder)
    check_weights_variant(unet_folder.resolve(), variant)
    return kind, str(path.resolve())


def check_base_spec(spec, *, variant: str | None = None, single_file_config=None) -> tuple[str, str]:
    """What `spec` names, checked without loading any weights: ("random", spec), ("shipped", folder),
    ("pipeline", folder), ("unet", folder), ("single_file", file) or ("hub", id). Raises InputError (or
    FileNotFoundError for a missing local path) naming it.

    See `load_base_unet` for the forms `spec`, `variant` and `single_file_config` may take.
    """
    if not isinstance(spec, str) or not spec:
        raise InputError(f"`base` must be a folder, a hub id or random:<arch>, got {spec!r}.")
    if variant is not None and (not isinstance(variant, str) or not variant):
        raise InputError(f"`variant` must be a non-empty string such as 'fp16', or None, got {variant!r}.")
    if single_file_config is not None and not isinstance(single_file_config, (str, Path, dict)):
        raise InputError(f"`single_file_config` must be a folder, got {single_file_config!r}.")
    if spec.startswith(RANDOM_PREFIX):
        _random_spec(spec)
        return "random", spec
    shipped = resolve(spec, "base", "`base`")
    if shipped is not spec:  # a shipped base's short name
        return "shipped", str(shipped)
    path = Path(spec).expanduser()
    if path.is_file():
        return _check_file_base(spec, path, variant, single_file_config)
    if single_file_config is not None:
        raise InputError(f"`single_file_config` (CLI: --base-config) is only for a single-file .safetensors `base`; "
                         f"{spec!r} is not one.")
    if path.is_dir():
        return _check_folder_base(spec, path, variant)
    if path.exists():
        raise InputError(f"`base` {spec!r} is neither a folder nor a file.")
    if not looks_like_hub_id(spec):
        raise FileNotFoundError(f"`base` {spec!r} is neither an existing folder nor a hub id (org/name): the local "
                                f"path {str(path.absolute())!r} does not exist; shipped bases: "
                                f"{', '.join(short_names('base'))}; or random:<arch>.")
    return "hub", spec


def _load_single_file(file: str, config, torch_dtype) -> UNet2DConditionModel:
    """diffusers' `from_single_file` with a local config: a folder, or a UNet config dict written to one."""
    with tempfile.TemporaryDirectory() as scratch:
        if isinstance(config, dict):
            (Path(scratch) / "config.json").write_text(json.dumps({"_class_name": "UNet2DConditionModel", **config}))
            config, subfolder = scratch, None
        else:
            config = str(Path(str(config)).expanduser())
            subfolder = "unet" if (Path(config) / "unet" / "config.json").is_file() else None
        unet = UNet2DConditionModel.from_single_file(file, config=config, subfolder=subfolder, local_files_only=True,
                                                     torch_dtype=torch_dtype)
    unet.register_to_config(_name_or_path=file)
    return unet


def load_base_unet(spec: str, torch_dtype: torch.dtype | None = None, *, variant: str | None = None,
                   single_file_config=None) -> UNet2DConditionModel:
    """Loads a base UNet from `spec`.

    Args:
        spec: A diffusers pipeline folder (with `model_index.json`, the UNet in `unet/`), a UNet folder (with
            `config.json`), a single-file checkpoint (one `.safetensors` of a whole Stable Diffusion model, or of its
            UNet; read by diffusers' `from_single_file`), a Hugging Face hub id (pipeline repo, when online), the
            short name of a shipped base ("toyworld-base", see `mtu.shipped`), or `random:<arch>[:<seed>]` for a
            shipped architecture at seeded random init (`random:sd15`, `random:sdxl`, `random:tiny`). A name with
            one slash is a hub id only when it cannot be a local path (`looks_like_hub_id`).
        torch_dtype: Optional dtype to load the weights in.
        variant: The weights variant to read (diffusers' `variant`, e.g. "fp16" for
            `unet/diffusion_pytorch_model.fp16.safetensors`); None reads the plain weights.
        single_file_config: For a single-file checkpoint only, and required for one (offline, diffusers cannot
            fetch the config): the local diffusers pipeline folder (`unet/config.json`) or UNet folder
            (`config.json`) of its architecture, or a UNet config dict.
    Only safetensors weights are read (never pickle).
    """
    from ..architectures import build_unet

    kind, location = check_base_spec(spec, variant=variant, single_file_config=single_file_config)
    kwargs = {"use_safetensors": True, "torch_dtype": torch_dtype, "variant": variant}
    if kind == "random":
        name, seed = _random_spec(spec)
        unet = build_unet(name, seed=seed)
        return unet.to(torch_dtype) if torch_dtype is not None else unet
    if kind == "shipped":
        unet = load_base_unet(location, torch_dtype, variant=variant)
        # Keep the short name, not this installation's folder, so an adapter upcycled from it loads anywhere.
        unet.register_to_config(_name_or_path=spec)
        return unet
    if kind == "single_file":
        return _load_single_file(location, single_file_config, torch_dtype)
    if kind == "pipeline":
        return UNet2DConditionModel.from_pretrained(location, subfolder="unet", **kwargs)
    if kind == "unet":
        return UNet2DConditionModel.from_pretrained(location, **kwargs)
    assert kind == "hub", kind
    repo, revision = hub_revision_kwargs(spec)
    try:
        return UNet2DConditionModel.from_pretrained(repo, subfolder="unet", **kwargs, **revision)
    except OSError as error:  # diffusers' errors for a repo it cannot reach or read (network, auth, missing files)
        raise InputError(f"could not load base {spec!r} from the Hugging Face Hub ({' '.join(str(error).split())}); "
                         f"if it is a local folder, give its full path.") from error
