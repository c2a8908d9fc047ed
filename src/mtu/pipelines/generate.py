"""`generate`: one image from an MTU adapter folder and its base pipeline; what `mtu generate` runs.

    mtu generate --model DIR --task edit --image in.png --prompt "make it snowy" --out out.png
    mtu generate --model toyworld --task edit --image in.png --prompt "remove the square" --out out.png

Paths and arguments are checked before any weights load, the output path too (`mtu.outputs.claim_output_file`: an
existing file is replaced only if `mtu generate` wrote it, or with `overwrite`); the PNG is written atomically and
records that `mtu generate` wrote it.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError

DTYPES = ("float32", "float16", "bfloat16")
OUT_SUFFIX = ".png"
PNG_MARK = ("mtu", "generate")  # a PNG text chunk: this file is an `mtu generate` output, which a re-run replaces


def _existing_file(path, name: str) -> Path:
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"`{name}` file {str(path)!r} does not exist.")
    return path


def _read_image(path, name: str, mode: str):
    """Decodes `--image` / `--mask` as the data layer does (EXIF rotation, 16-bit scaled, decompression bombs
    refused); a file that cannot be decoded is the user's input, named by its argument."""
    from ..data.failures import SampleError
    from ..data.imaging import open_image

    try:
        return open_image(_existing_file(path, name), mode=mode)
    except SampleError as error:
        raise error.within(f"`{name}`") from None


def is_generated_png(path: Path) -> bool:
    """True for a PNG that `mtu generate` wrote (it carries `PNG_MARK`)."""
    import PIL.Image

    try:
        with PIL.Image.open(path) as handle:
            return handle.format == "PNG" and handle.info.get(PNG_MARK[0]) == PNG_MARK[1]
    except (OSError, ValueError):  # not an image PIL reads: not ours
        return False


def _check_out(out, overwrite: bool, inputs: dict) -> Path:
    from ..outputs import claim_output_file

    path = Path(out).expanduser()
    if path.suffix.lower() != OUT_SUFFIX:
        raise InputError(f"`out` must be a {OUT_SUFFIX} file, got {str(out)!r}.")
    claim_output_file(path, command="generate", overwrite=overwrite, inputs=inputs, field="--out",
                      recognize=is_generated_png)
    return path


def save_png_atomic(image, path: Path) -> None:
    """Writes a PIL image as PNG (marked `PNG_MARK`) to a temporary file beside `path`, then renames it into place."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text(*PNG_MARK)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, staging = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        image.save(staging, format="PNG", pnginfo=info)
        os.replace(staging, path)
    finally:
        Path(staging).unlink(missing_ok=True)


def check_device(name: str | None):
    """The torch device `name` names (default CUDA when available), if this machine has it; else `InputError`."""
    import torch

    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):  # torch's parse error of the string: the user's typo
        raise InputError(f"`device` must be a torch device such as 'cpu', 'cuda', 'cuda:1' or 'mps', got {name!r}.")
    count = {"cuda": torch.cuda.device_count() if torch.cuda.is_available() else 0,
             "mps": int(bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()))}
    if device.type in count and (device.index or 0) >= count[device.type]:
        raise InputError(f"`device` {name!r} is not available here: torch sees {count[device.type]} "
                         f"{device.type} device(s); use 'cpu'.")
    return device


def check_dtype(name: str | None, field: str = "`dtype`"):
    """The torch dtype `name` names (one of `DTYPES`; None stays None, the weights as stored); else `InputError`
    naming `field`."""
    import torch

    if name is not None and name not in DTYPES:
        raise InputError(f"must be one of {DTYPES}, got {name!r}.", field=field)
    return getattr(torch, name) if name else None


@dataclass
class ModelSource:
    """What `--model` names, read without loading any weights.

    kind: "adapter" (an MTU adapter folder or shipped short name), "pipeline" (a folder `MTUPipeline.save_pretrained`
    wrote), "baseline" (a trained `full` / `lora` / `ia3` run's folder: method.json + trainable.safetensors) or
    "checkpoint" (`RUN/checkpoints/checkpoint-N`); a run folder stands for its `final/`. base: the base pipeline it
    runs on (`--base` or the recorded one); variant: the weights variant to read it with (`--variant`, or the one
    an adapter records); specs: its tasks; unet_config: the base UNet's config; sampling: the folder's own
    guidance scales.
    """

    kind: str
    folder: Path
    base: str
    variant: str | None
    specs: list
    unet_config: dict
    sampling: dict

    @property
    def family(self) -> str:
        """"sdxl" or "sd": the pipeline family of the base."""
        return "sdxl" if self.unet_config.get("addition_embed_type") == "text_time" else "sd"


def read_model_source(model_dir, base=None, variant=None) -> ModelSource:
    """`ModelSource` of `model_dir` (see `generate`); raises `InputError` / FileNotFoundError naming it."""
    from ..training.export import checkpoint_run_config, is_checkpoint_folder, run_final_folder
    from ..training.methods import BASELINE_RECORD, read_baseline_record
    from ..upcycling.bases import find_recorded_base
    from ..upcycling.serialization import adapter_directory, read_adapter_config
    from ..upcycling.tasks import TaskSpec, get_task
    from .defaults import read_sampling
    from .folders import adapter_family, check_base_location, check_variant, saved_pipeline_folder, saved_sampling

    variant = check_variant(variant)
    path = run_final_folder(Path(str(model_dir)).expanduser(), "--model")
    if is_checkpoint_folder(path) or (path / BASELINE_RECORD).is_file():
        if is_checkpoint_folder(path):
            kind, config = "checkpoint", checkpoint_run_config(path)
            recorded, recorded_variant, tasks = config.model.base, config.model.variant, config.tasks
        else:
            kind, record = "baseline", read_baseline_record(path)
            recorded, recorded_variant, tasks = record["model"].get("base"), record["model"].get("variant"), \
                record["tasks"]
        location = check_base_location(base or find_recorded_base(recorded, path))
        variant = variant if base or variant else recorded_variant
        return ModelSource(kind, path, location, variant, [get_task(task) for task in tasks], _unet_config(location),
                           {})
    saved = saved_pipeline_folder(path)
    folder = saved / "unet" if saved is not None else adapter_directory(path if path.exists() else model_dir)
    record = read_adapter_config(folder)  # raises if the folder holds no adapter
    specs = [TaskSpec.from_dict(data) for data in record["tasks"].values()]
    family = adapter_family(record)
    if saved is not None:
        kind, location, sampling = "pipeline", check_base_location(base or saved), saved_sampling(saved, family, specs)
    else:
        recorded = record["base"].get("name_or_path")
        if not (base or recorded):
            raise InputError(f"the adapter in {str(model_dir)!r} records no base pipeline; pass `base`.")
        kind, location = "adapter", check_base_location(base or find_recorded_base(recorded, folder))
        sampling = read_sampling(folder, family, specs)
        variant = variant if base or variant else record["base"].get("variant")
    return ModelSource(kind, saved or folder, location, variant, specs, record["base"]["unet_config"], sampling)


def _unet_config(location: str) -> dict:
    """The base pipeline's UNet config (config.json only, no weights)."""
    from diffusers import UNet2DConditionModel

    return dict(UNet2DConditionModel.load_config(location, subfolder="unet"))


def load_pipeline(source: ModelSource, *, torch_dtype=None, device=None, safety_checker: bool = True,
                  check_model=None):
    """The pipeline of `source` (any `--model`: adapter, saved pipeline, baseline folder, training checkpoint): an
    `MTUPipeline`, or `MTUStableDiffusionXLPipeline` for an SDXL base; what `mtu generate`, `eval`, `chat` and
    `export` run.

    Args:
        torch_dtype: dtype of the weights (None: as stored).
        device: Where the pipeline runs (None: where it was loaded, the CPU).
        safety_checker: False loads an SD base without its safety checker (diffusers' `safety_checker=None`).
        check_model: Called with the model read from a checkpoint or baseline folder before the pipeline is built
            (`mtu export` refuses what it cannot fold there).
    """
    if source.family == "sdxl":
        from .pipeline_mtu_sdxl import MTUStableDiffusionXLPipeline as pipeline_class
    else:
        from .pipeline_mtu import MTUPipeline as pipeline_class
    options = {"torch_dtype": torch_dtype, "variant": source.variant,
               **({} if safety_checker or source.family == "sdxl" else {"safety_checker": None})}
    if source.kind in ("adapter", "pipeline"):
        pipe = pipeline_class.from_pretrained(source.folder, base=source.base, **options)
    else:
        from ..training.export import model_from_checkpoint

        model = source.folder  # a baseline's folder: `from_base` reads it
        if source.kind == "checkpoint":
            model = model_from_checkpoint(source.folder, base=source.base, variant=source.variant)
            if torch_dtype is not None:
                model.to(torch_dtype)
        if check_model is not None:
            check_model(model)
        pipe = pipeline_class.from_base(source.base, model, **options)
    return pipe.to(device) if device is not None else pipe


def generate(model_dir, task: str, prompt: str | None = None, image=None, mask=None, out="out.png", base=None,
             steps: int | None = None, guidance_scale: float | None = None,
             image_guidance_scale: float | None = None, seed: int = 0, height: int | None = None,
             width: int | None = None, device: str | None = None, dtype: str | None = None,
             overwrite: bool = False, variant: str | None = None, safety_checker: bool = True) -> Path:
    """Samples one image of `task` with the model in `model_dir` and writes it to `out` (PNG).

    Args:
        model_dir: What `mtu train` or `mtu upcycle` made: an MTU adapter folder (`save_pretrained`), a trained
            baseline's folder (the `final/` of a `full`, `lora` or `ia3` run), a training checkpoint
            (`RUN/checkpoints/checkpoint-N`: its EMA weights when the run keeps an EMA, as final/), a run folder
            (its final/), a pipeline folder (`MTUPipeline.save_pretrained`), or a shipped adapter's short name
            ("toyworld", see `mtu.shipped`).
        task: One of the model's tasks.
        prompt: The prompt (instruction for edit/inpaint); None for sr.
        image: Path of the input image (the low-resolution image for sr).
        mask: Path of the mask for inpaint_mask (white = fill).
        out: The PNG file to write.
        base: The base diffusers pipeline folder, hub id or short name; default the one the model records.
        steps, guidance_scale, image_guidance_scale: Override the task's defaults (Appendix A.2, or the
            adapter folder's `sampling.json`).
        seed: Seed of the CPU generator that draws the noise.
        height, width: Output size (default: the input image's, twice it for sr, the base's for t2i).
        device: Torch device; default CUDA when available.
        dtype: One of "float32", "float16", "bfloat16"; default float32.
        overwrite: Replace an existing `out` that `mtu generate` did not write.
        variant: The base's weights variant ("fp16" for a folder of `*.fp16.safetensors`); default the one the
            model records.
        safety_checker: Run the base's safety checker where it has one (as diffusers' pipelines do); False runs
            without it.
    Returns:
        The path written.
    """
    import torch

    from .checks import check_call_inputs

    # 1. Paths and arguments, before any weights are read
    source = read_model_source(model_dir, base, variant)
    out = _check_out(out, overwrite, {"model (`--model`)": source.folder,
                                      "input image (`--image`)": image, "mask (`--mask`)": mask})
    image = _read_image(image, "image", "RGB") if image is not None else None
    mask = _read_image(mask, "mask", "L") if mask is not None else None
    if steps is not None and (not isinstance(steps, int) or isinstance(steps, bool) or steps < 1):
        raise InputError(f"`steps` must be an integer >= 1, got {steps!r}.")
    torch_dtype = check_dtype(dtype)
    torch_device = check_device(device)
    family = source.family
    # The pipeline re-checks the size with its VAE's scale factor
    default_size = (source.unet_config["sample_size"] * 8,) * 2
    check_call_inputs(source.specs, family, task, prompt=prompt, image=image, mask_image=mask, height=height,
                      width=width, num_inference_steps=steps, guidance_scale=guidance_scale,
                      image_guidance_scale=image_guidance_scale, default_size=default_size,
                      sampling_overrides=source.sampling)

    # 2. The pipeline: base components plus the model on the base's UNet
    pipe = load_pipeline(source, torch_dtype=torch_dtype, device=torch_device,
                         safety_checker=safety_checker)

    # 3. Sample and write
    output = pipe(task, prompt=prompt, image=image, mask_image=mask, height=height, width=width,
                  num_inference_steps=steps, guidance_scale=guidance_scale, image_guidance_scale=image_guidance_scale,
                  generator=torch.Generator("cpu").manual_seed(seed))
    if any(getattr(output, "nsfw_content_detected", None) or []):
        print("mtu generate: the base's safety checker flagged the image and blacked it out (as diffusers' pipelines "
              "do); --no-safety-checker runs without it.", file=sys.stderr)
    save_png_atomic(output.images[0], out)
    return out


def add_generate_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Adds the `mtu generate` options to `parser` (a subcommand parser); returns it."""
    from ..shipped import SHORT_NAMES, short_names

    shipped = "; ".join(f"{name}: {SHORT_NAMES[name].description}" for name in short_names("adapter"))
    parser.add_argument("--model", required=True, dest="model_dir",
                        help=f"what `mtu train` / `mtu upcycle` wrote: an MTU adapter folder, a run's final/ of any method "
                             f"(mtu, full, lora, ia3), a run folder, a checkpoint folder "
                             f"(RUN/checkpoints/checkpoint-N); or the short name of a model shipped with mtu, which "
                             f"needs no --base ({shipped})")
    parser.add_argument("--task", required=True, help="one of the adapter's tasks, e.g. t2i, edit, sr, inpaint")
    parser.add_argument("--prompt", default=None, help="prompt or instruction (none for sr)")
    parser.add_argument("--image", default=None, help="input image file (the low-resolution image for sr)")
    parser.add_argument("--mask", default=None, help="mask image file for inpaint_mask (white = fill)")
    parser.add_argument("--out", required=True, help="PNG file to write")
    parser.add_argument("--base", default=None, help="base pipeline folder or hub id (default: the recorded one)")
    parser.add_argument("--steps", type=int, default=None, help="denoising steps (default: the task's)")
    parser.add_argument("--guidance-scale", type=float, default=None, help="text guidance (default: the task's)")
    parser.add_argument("--image-guidance-scale", type=float, default=None,
                        help="image guidance for edit/inpaint (default: the task's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--height", type=int, default=None)
    parser.add_argument("--width", type=int, default=None)
    parser.add_argument("--device", default=None, help="torch device (default: cuda when available)")
    parser.add_argument("--dtype", choices=DTYPES, default=None, help="weights dtype (default float32)")
    parser.add_argument("--variant", default=None,
                        help="the base's weights variant, e.g. fp16 for a folder of *.fp16.safetensors (default: "
                             "the one the model records)")
    parser.add_argument("--no-safety-checker", dest="safety_checker", action="store_false",
                        help="run without the base's safety checker (diffusers' safety_checker=None)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing --out file that `mtu generate` did not write")
    return parser


def run_generate(args: argparse.Namespace) -> int:
    """Runs `generate` from parsed `add_generate_arguments` options; returns 0.

    Errors are raised (`InputError`, FileNotFoundError): `mtu.cli.main` prints them as one line, exit 2.
    """
    path = generate(args.model_dir, args.task, prompt=args.prompt, image=args.image, mask=args.mask, out=args.out,
                    base=args.base, steps=args.steps, guidance_scale=args.guidance_scale,
                    image_guidance_scale=args.image_guidance_scale, seed=args.seed, height=args.height,
                    width=args.width, device=args.device, dtype=args.dtype, overwrite=args.overwrite,
                    variant=args.variant, safety_checker=args.safety_checker)
    print(f"wrote {path} (task {args.task!r}, seed {args.seed})", file=sys.stderr)
    return 0
