"""Where the metric networks' weights come from, checked before any image is generated, and loading them.

Three places (`resolve_metric_weights`):
- online (no `--metric-weights`, no `MTU_METRIC_WEIGHTS`): the libraries' own caches, downloading on first use
  (CLIP from the Hugging Face hub, AlexNet from download.pytorch.org into torch's hub cache, Inception through
  torch-fidelity);
- a folder (`--metric-weights DIR` or the environment variable): every file must be there (`WEIGHT_FILES`), and a
  missing one is one line naming it, where it normally comes from and how to place it;
- "random": tiny randomly initialised networks (`write_random_networks`, seeded), to run the code paths offline.
  Their numbers are marked as such everywhere and never named FID, CLIP score or LPIPS. A folder that
  `write_random_networks` wrote (it holds `RANDOM_MARKER`) is random too.

No weight file is unpickled: CLIP loads from safetensors only; AlexNet's torchvision file loads with
`torch.load(weights_only=True)` (or from a .safetensors of the same state dict); Inception is torch-fidelity's.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import InputError, MissingExtraError
from .networks import ALEXNET_CHANNELS, LPIPS, AlexNetFeatures, ClipEmbedder, Float64Features, TinyFeatures

ENV_VAR = "MTU_METRIC_WEIGHTS"
RANDOM = "random"
RANDOM_MARKER = "random_networks.json"
CLIP_HUB_ID = "openai/clip-vit-large-patch14"  # ViT-L/14: InstructPix2Pix's CLIP metrics, torchmetrics' default
INCEPTION_FEATURES = 2048  # pool3 of the TF FID Inception


@dataclass(frozen=True)
class WeightFile:
    """One network's weights under a `--metric-weights` folder.

    Args:
        name: The file (or, for CLIP, folder) name in the folder.
        purpose: What it is, for messages.
        source: Where it normally comes from.
        place: How to put it there (an instruction); `{root}` stands for the folder.
    """

    name: str
    purpose: str
    source: str
    place: str


WEIGHT_FILES = {
    "clip": WeightFile("clip-vit-large-patch14", "CLIP ViT-L/14 (CLIP score, directional similarities)",
                       f"the Hugging Face hub repo {CLIP_HUB_ID}",
                       f"run `hf download {CLIP_HUB_ID} --local-dir {{root}}/clip-vit-large-patch14` (config, "
                       f"model.safetensors, tokenizer and preprocessor files)"),
    "inception": WeightFile("weights-inception-2015-12-05-6726825d.pth",
                            "FID/KID's Inception-v3 (the TF FID graph as torch-fidelity ports it)",
                            "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
                            "weights-inception-2015-12-05-6726825d.pth",
                            "download it from there into {root}/"),
    "alexnet": WeightFile("alexnet-owt-7be5be79.pth", "LPIPS' AlexNet backbone (torchvision's ImageNet weights)",
                          "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
                          "download it from there into {root}/ (or save its state dict as "
                          "alexnet-owt-7be5be79.safetensors)"),
}
# The tiny stand-ins `write_random_networks` saves beside the CLIP folder (which keeps the real folder's name).
RANDOM_FILES = {"inception": "tiny_features.safetensors", "alexnet": "tiny_lpips.safetensors"}
TINY_LPIPS_CHANNELS = (4, 8, 8, 8, 8)


@dataclass(frozen=True)
class MetricWeights:
    """Where the weights come from: `root` None is online; `random` marks tiny random networks."""

    root: Path | None
    random: bool = False
    given: str | None = None  # what the user passed, for messages
    field: str = "--metric-weights"  # where it came from: the argument or the environment variable

    def describe(self) -> str:
        if self.random:
            return "random (tiny randomly initialised networks: code-path check, not the published metrics)"
        return f"folder {self.root}" if self.root else "online (the libraries' caches and downloads)"


def resolve_metric_weights(value=None, field: str = "--metric-weights") -> MetricWeights:
    """`MetricWeights` of `value` (a folder, "random", or None: `$MTU_METRIC_WEIGHTS`, else online)."""
    if value is None:
        value = os.environ.get(ENV_VAR) or None
        field = f"${ENV_VAR}" if value else field
    if value is None:
        return MetricWeights(None)
    if str(value) == RANDOM:
        return MetricWeights(None, random=True, given=RANDOM)
    root = Path(str(value)).expanduser()
    if not root.is_dir():
        raise InputError(f"must be a folder of metric weights (see docs/EVAL.md) or {RANDOM!r}; {str(value)!r} is "
                         f"{'a file' if root.exists() else 'not there'}.", field=field)
    return MetricWeights(root.resolve(), random=(root / RANDOM_MARKER).is_file(), given=str(value), field=field)


def _missing(weights: MetricWeights, network: str, name: str) -> InputError:
    entry = WEIGHT_FILES[network]
    if weights.random:
        return InputError(f"{weights.root} holds {RANDOM_MARKER} but not {name}; write the folder again with "
                          f"mtu.evaluation.write_random_networks.", field=weights.field)
    return InputError(f"{weights.root} has no {name}: {entry.purpose}, normally from {entry.source}; "
                      f"{entry.place.format(root=weights.root)}.", field=weights.field)


def require_torch_fidelity() -> None:
    """torch-fidelity (the FID Inception torchmetrics runs) imports, or a one-line error saying how to get it."""
    try:
        import torch_fidelity  # noqa: F401
    except Exception as error:  # its import of torchvision fails in many ways beside a mismatched torch
        raise MissingExtraError(
            f"FID/KID with the standard Inception needs torch-fidelity, which did not import ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}); install it with a torchvision built for your "
            f"torch {torch.__version__.split('+')[0]} (docs/EVAL.md), or use --metric-weights random for a "
            f"code-path check.") from None


def require_torchmetrics() -> None:
    """torchmetrics (the `eval` extra) imports, or a one-line error with the install command."""
    try:
        import torchmetrics  # noqa: F401
    except ImportError:
        raise MissingExtraError("`mtu eval`'s metrics need torchmetrics: pip install 'mtu-diffusion[eval]'.") from None


def check_metric_weights(weights: MetricWeights, networks) -> None:
    """Raises one line for the first network of `networks` whose weights are not where `weights` says."""
    for network in networks:
        if network not in WEIGHT_FILES:
            raise ValueError(f"unknown metric network {network!r}; known: {sorted(WEIGHT_FILES)}.")
        if network == "inception" and not weights.random:
            require_torch_fidelity()
        if weights.root is None:
            continue
        if network == "clip":
            folder = weights.root / WEIGHT_FILES["clip"].name
            if not (folder / "config.json").is_file() or not any(folder.glob("*.safetensors")):
                raise _missing(weights, "clip", f"{WEIGHT_FILES['clip'].name}/ (config.json + *.safetensors)")
        elif weights.random:
            if not (weights.root / RANDOM_FILES[network]).is_file():
                raise _missing(weights, network, RANDOM_FILES[network])
        elif not _weight_file(weights.root, network).is_file():
            raise _missing(weights, network, WEIGHT_FILES[network].name)


def feature_dim(weights: MetricWeights) -> int:
    """The width of the FID/KID features `weights` gives, read without loading any network."""
    if not weights.random:
        return INCEPTION_FEATURES
    return int(_random_record(weights)["feature_dim"])


def _random_record(weights: MetricWeights) -> dict:
    return json.loads((weights.root / RANDOM_MARKER).read_text())


def _weight_file(root: Path, network: str) -> Path:
    """The file of `network` in `root`; for AlexNet a .safetensors beside the .pth wins."""
    path = root / WEIGHT_FILES[network].name
    safetensors = path.with_suffix(".safetensors")
    return safetensors if network == "alexnet" and safetensors.is_file() else path


# ---- loading ----

def _load_clip(weights: MetricWeights, device) -> tuple[ClipEmbedder, str]:
    from transformers import CLIPModel, CLIPProcessor

    where = str(weights.root / WEIGHT_FILES["clip"].name) if weights.root else CLIP_HUB_ID
    try:
        model = CLIPModel.from_pretrained(where, use_safetensors=True)
        processor = CLIPProcessor.from_pretrained(where)
    except OSError as error:  # hub unreachable or not cached: the user's set-up, said in one line
        raise InputError(f"could not load CLIP {where!r} ({' '.join(str(error).split())[:200]}); offline, "
                         f"{WEIGHT_FILES['clip'].place.format(root='DIR')} and pass --metric-weights DIR.",
                         field="--metric-weights") from None
    return ClipEmbedder(model, processor, device), where


def _alexnet_state(weights: MetricWeights) -> tuple[dict, str]:
    """torchvision's AlexNet state dict: from the folder, or torch's hub cache (downloaded there when absent)."""
    if weights.root is not None:
        path = _weight_file(weights.root, "alexnet")
    else:
        path = Path(torch.hub.get_dir()) / "checkpoints" / WEIGHT_FILES["alexnet"].name
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                torch.hub.download_url_to_file(WEIGHT_FILES["alexnet"].source, str(path), hash_prefix="7be5be79")
            except OSError as error:  # URLError and friends: no network
                raise InputError(f"could not download {WEIGHT_FILES['alexnet'].source} ({error}); offline, "
                                 f"{WEIGHT_FILES['alexnet'].place.format(root='DIR')} and pass --metric-weights "
                                 f"DIR.", field="--metric-weights") from None
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path)), str(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True), str(path)
    except pickle.UnpicklingError as error:  # weights_only refuses anything but tensors and plain containers
        raise InputError(f"{path} is not a plain state dict of tensors, so it is not read (torch.load with "
                         f"weights_only=True refused it: {str(error).splitlines()[0]}).",
                         field="--metric-weights") from None


def _lpips_heads() -> tuple[list[torch.Tensor], str]:
    """LPIPS v0.1's linear heads for AlexNet, from the file torchmetrics ships (6 kB)."""
    import torchmetrics.functional.image.lpips as lpips_module

    path = Path(lpips_module.__file__).parent / "lpips_models" / "alex.pth"
    state = torch.load(path, map_location="cpu", weights_only=True)
    return [state[f"lin{index}.model.1.weight"] for index in range(len(ALEXNET_CHANNELS))], str(path)


def _load_lpips(weights: MetricWeights, device) -> tuple[LPIPS, str]:
    from safetensors.torch import load_file

    if weights.random:
        state = load_file(str(weights.root / RANDOM_FILES["alexnet"]))
        backbone = AlexNetFeatures(tuple(_random_record(weights)["lpips_channels"]))
        backbone.load_state_dict({k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")})
        heads = [state[f"heads.{index}"] for index in range(len(backbone.channels))]
        return LPIPS(backbone, heads).to(device), str(weights.root / RANDOM_FILES["alexnet"])
    state, where = _alexnet_state(weights)
    backbone = AlexNetFeatures()
    backbone.load_state_dict({k[len("features."):]: v for k, v in state.items() if k.startswith("features.")})
    heads, heads_where = _lpips_heads()
    return LPIPS(backbone, heads).to(device), f"{where} + {heads_where}"


def _load_features(weights: MetricWeights, device) -> tuple[Float64Features, str]:
    if weights.random:
        from safetensors.torch import load_file

        extractor = TinyFeatures(feature_dim(weights))
        extractor.load_state_dict(load_file(str(weights.root / RANDOM_FILES["inception"])))
        return Float64Features(extractor.eval(), extractor.dim).to(device), str(weights.root / RANDOM_FILES[
            "inception"])
    require_torch_fidelity()
    from torchmetrics.image.fid import NoTrainInceptionV3

    path = str(weights.root / WEIGHT_FILES["inception"].name) if weights.root else None
    try:  # antialias=False: torch-fidelity's TF-1.x-compatible bilinear resize to 299, as the original FID code
        extractor = NoTrainInceptionV3(name="inception-v3-compat", features_list=[str(INCEPTION_FEATURES)],
                                       feature_extractor_weights_path=path, antialias=False)
    except OSError as error:  # URLError and friends: the download failed
        entry = WEIGHT_FILES["inception"]
        raise InputError(f"could not get {entry.name} ({error}); offline, {entry.place.format(root='DIR')} and pass "
                         f"--metric-weights DIR.", field="--metric-weights") from None
    return Float64Features(extractor, INCEPTION_FEATURES).to(device), path or "torch-fidelity's download"


LOADERS = {"clip": _load_clip, "inception": _load_features, "alexnet": _load_lpips}


def load_networks(weights: MetricWeights, networks, device="cpu") -> tuple[dict, dict]:
    """Loads `networks` ("clip", "inception", "alexnet"); returns ({network: module}, {network: where from})."""
    check_metric_weights(weights, networks)
    loaded, sources = {}, {}
    for network in networks:
        loaded[network], sources[network] = LOADERS[network](weights, device)
    return loaded, sources


# ---- tiny random networks ----

def _tiny_clip(seed: int):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    from ..shipped import shipped_base

    tokenizer = CLIPTokenizer.from_pretrained(shipped_base() / "tokenizer")  # the toy world's small vocabulary
    text = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=2, max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    vision = dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=2)
    torch.manual_seed(seed)
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16))
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return model, CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)


def write_random_networks(folder, seed: int = 0, feature_dim: int = 8) -> Path:
    """Writes tiny randomly initialised metric networks into `folder` (a CLIP folder of the real one's name, a
    small FID feature net, an AlexNet-shaped LPIPS backbone with its heads) and `RANDOM_MARKER`, which makes every
    number computed with them marked as from random networks. Returns the folder."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng():
        model, processor = _tiny_clip(seed)
        model.save_pretrained(folder / WEIGHT_FILES["clip"].name, safe_serialization=True)
        processor.save_pretrained(folder / WEIGHT_FILES["clip"].name)
        save_file(TinyFeatures(feature_dim).state_dict(), str(folder / RANDOM_FILES["inception"]))
        backbone = AlexNetFeatures(TINY_LPIPS_CHANNELS)
        state = {f"backbone.{key}": value for key, value in backbone.state_dict().items()}
        # LPIPS' heads are non-negative (a distance); random ones too
        state.update({f"heads.{index}": torch.rand(1, channels, 1, 1) for index, channels
                      in enumerate(TINY_LPIPS_CHANNELS)})
        save_file(state, str(folder / RANDOM_FILES["alexnet"]))
    record = {"random": True, "seed": seed, "feature_dim": feature_dim, "lpips_channels": list(TINY_LPIPS_CHANNELS)}
    (folder / RANDOM_MARKER).write_text(json.dumps(record, indent=1) + "\n")
    return folder


class RandomNetworksFolder:
    """A temporary folder of `write_random_networks` (what `--metric-weights random` uses), removed on exit."""

    def __init__(self, seed: int = 0):
        self.seed = seed

    def __enter__(self) -> MetricWeights:
        self.folder = Path(tempfile.mkdtemp(prefix="mtu-random-metric-networks-"))
        write_random_networks(self.folder, self.seed)
        return MetricWeights(self.folder, random=True, given=RANDOM)

    def __exit__(self, *exc) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
