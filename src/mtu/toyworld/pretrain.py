"""`mtu toyworld pretrain`: the recipe of the embedded tiny base model (a stock Stable Diffusion pipeline folder).

Two stages, all seeded:
1. VAE: `AutoencoderKL` (scale factor 4) trained to reconstruct toy-world renders, crisp ones and the blurred,
   noisy ones super-resolution and inpainting feed it as conditions (MSE + a small KL term, like SD's VAE).
   Its `scaling_factor` is set to 1 / std of the latents, as Stable Diffusion's 0.18215 was.
2. Text-to-image: the UNet and the text encoder trained together from scratch on toy-world captions
   (epsilon prediction, SD's scaled-linear DDPM schedule, 10% empty prompts for classifier-free guidance), with
   an EMA of the weights, which are the ones saved. Latents of the training scenes are encoded once.

Then the faithfulness of the saved pipeline is measured by `evaluate_t2i` (stock `StableDiffusionPipeline`, the
held-out scenes, fixed seeds) and written with the recipe to `recipe.json` beside the model.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..configuration import check_counts
from ..errors import InputError
from .components import (assemble_pipeline, build_scheduler, build_text_encoder, build_tokenizer, build_unet,
                         build_vae)
from .oracle import t2i_faithful
from .evaluate import evaluation_set, generate_outputs
from .report import image_rows
from .scene import caption, make_scenes, partial_caption, render_array
from .tasks import removal_mask, sample_removal, sr_input

EVAL_STEPS, EVAL_GUIDANCE, EVAL_BATCH = 20, 7.5, 32  # SD1.5's t2i defaults (paper A.2)


@dataclass
class PretrainConfig:
    """The recipe. Defaults are the shipped model's.

    Args:
        out: Pipeline folder to write: new, empty or an earlier pretrain output (whose files are replaced).
        seed: Seeds scenes, init, batches, noise and timesteps.
        resolution: Image side (latents are resolution / 4).
        scenes: Distinct training scenes (train split).
        vae_steps / vae_batch / vae_lr: VAE stage.
        kl_weight: Weight of the VAE's KL term.
        steps / batch / lr / warmup: Text-to-image stage (AdamW).
        ema_decay: EMA of the text-to-image weights (the saved ones).
        empty_prompt_fraction: Share of empty captions (classifier-free guidance).
        partial_caption_fraction: Share of the other captions replaced by a partial one
            (`scene.partial_caption`: some of the shapes, some of their attributes, no background), drawn afresh
            each time, so that text which leaves shapes unsaid does not mean they are absent (see
            docs/DIAGNOSIS.md: it raised the base's t2i faithfulness from 0.65 to 0.84). 0 is the recipe before
            2026-12, which saw complete captions only.
        eval_count: Held-out captions the saved model's faithfulness is measured on.
        vae_from: A pipeline folder whose VAE is reused instead of running stage 1 (e.g. the shipped base's).
        init_from: A pipeline folder whose UNet and text encoder stage 2 starts from (continued training),
            instead of a fresh initialisation.
        device: Where training runs: "auto" (CUDA when present, else CPU), "cpu", "cuda", "cuda:1", ...
            Random draws are made on the CPU either way, so the batches, noise and timesteps do not depend on it.
    """

    out: str = "toyworld-base"
    seed: int = 0
    resolution: int = 32
    scenes: int = 20_000
    vae_steps: int = 2500
    vae_batch: int = 32
    vae_lr: float = 2e-3
    kl_weight: float = 1e-6
    steps: int = 5000
    batch: int = 32
    lr: float = 3e-4
    warmup: int = 200
    ema_decay: float = 0.999
    empty_prompt_fraction: float = 0.1
    partial_caption_fraction: float = 0.5
    eval_count: int = 256
    vae_from: str | None = None
    init_from: str | None = None
    device: str = "auto"

    def __post_init__(self):
        check_counts(self, ("scenes", "vae_steps", "vae_batch", "steps", "batch", "warmup", "eval_count"))
        def number(name: str) -> float:
            value = getattr(self, name)
            return value if isinstance(value, (int, float)) and not isinstance(value, bool) else float("nan")

        for name in ("vae_lr", "lr"):
            if not number(name) > 0:
                raise InputError(f"`{name}` must be a number > 0, got {getattr(self, name)!r}.")
        for name in ("vae_lr", "lr", "kl_weight"):
            if math.isinf(number(name)):
                raise InputError(f"`{name}` must be finite, got {getattr(self, name)!r}.")
        if not number("kl_weight") >= 0:
            raise InputError(f"`kl_weight` must be a number >= 0, got {self.kl_weight!r}.")
        for name in ("ema_decay", "empty_prompt_fraction", "partial_caption_fraction"):
            if not 0 <= number(name) < 1:
                raise InputError(f"`{name}` must be a number in [0, 1.0), got {getattr(self, name)!r}.")
        if self.resolution not in (32, 64):
            raise InputError(f"`resolution` must be 32 or 64, got {self.resolution!r}.")
        for name, parts in (("vae_from", ("vae",)), ("init_from", ("unet", "text_encoder"))):
            folder = getattr(self, name)
            if folder is not None and not all((Path(folder) / part / "config.json").is_file() for part in parts):
                raise InputError(f"`{name}` must be a pipeline folder with {' and '.join(p + '/' for p in parts)} "
                                 f"subfolders, got {folder!r}.")
        if not isinstance(self.device, str) or not (self.device in ("auto", "cpu") or self.device.startswith("cuda")):
            raise InputError(f"`device` must be 'auto', 'cpu' or 'cuda[:N]', got {self.device!r}.")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise InputError(f"`device` is {self.device!r} but CUDA is not available here; use 'cpu' or 'auto'.")
        if self.device.startswith("cuda"):
            try:
                index = torch.device(self.device).index or 0
            except RuntimeError:  # torch's parse error of the string, e.g. "cuda:x"
                raise InputError(f"`device` must be 'auto', 'cpu' or 'cuda[:N]', got {self.device!r}.")
            if index >= torch.cuda.device_count():
                raise InputError(f"`device` is {self.device!r} but torch sees {torch.cuda.device_count()} CUDA "
                                 f"device(s) here.")

    def torch_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def to_tensor(arrays: list[np.ndarray]) -> torch.Tensor:
    """(B, 3, H, W) in [-1, 1] from uint8 (H, W, 3) arrays."""
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def _vae_image(scene, rng: np.random.Generator, size: int) -> np.ndarray:
    """A VAE training image: a crisp render (70%), a degraded-and-upsampled one (SR's condition, 20%), or the scene
    with a removed shape blacked out (the masked image of mask inpainting, 10%)."""
    choice = rng.random()
    array = render_array(scene, size)
    if choice < 0.7:
        return array
    if choice < 0.9:
        low = sr_input(Image.fromarray(array), seed=int(rng.integers(2 ** 31)))
        return np.asarray(low.resize((size, size), Image.BICUBIC))
    mask = np.asarray(removal_mask(sample_removal(scene, rng), size)) > 127
    array = array.copy()
    array[mask] = 0
    return array


def train_vae(config: PretrainConfig, scenes: list) -> tuple[torch.nn.Module, dict]:
    device = config.torch_device()
    vae = build_vae(config.seed, config.resolution).to(device)
    optimizer = torch.optim.Adam(vae.parameters(), lr=config.vae_lr)
    rng = np.random.default_rng([config.seed, 1])
    generator = torch.Generator().manual_seed(config.seed)
    start, history = time.perf_counter(), []
    for step in range(1, config.vae_steps + 1):
        picks = rng.integers(len(scenes), size=config.vae_batch)
        images = to_tensor([_vae_image(scenes[i], rng, config.resolution) for i in picks]).to(device)
        posterior = vae.encode(images).latent_dist
        latents = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=generator).to(device)
        recon = vae.decode(latents).sample
        mse = F.mse_loss(recon, images)
        loss = mse + config.kl_weight * posterior.kl().mean()
        lr = config.vae_lr * min(1.0, step / 100) * 0.5 * (1 + math.cos(math.pi * step / config.vae_steps))
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        history.append(mse.item())
        if step % 100 == 0 or step == config.vae_steps:
            _log(f"vae step {step}/{config.vae_steps}: mse {np.mean(history[-100:]):.5f} "
                 f"({time.perf_counter() - start:.0f} s)")
    vae.cpu().eval().requires_grad_(False)
    return vae, {"vae_final_mse": float(np.mean(history[-100:])), "vae_seconds": time.perf_counter() - start}


@torch.no_grad()
def encode_scenes(vae, scenes: list, size: int, batch: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """(means, stds) of the VAE posterior of every scene's render, unscaled."""
    means, stds = [], []
    device = next(vae.parameters()).device
    for i in range(0, len(scenes), batch):
        images = to_tensor([render_array(scene, size) for scene in scenes[i:i + batch]]).to(device)
        posterior = vae.encode(images).latent_dist
        means.append(posterior.mean)
        stds.append(posterior.std)
    return torch.cat(means), torch.cat(stds)


def train_t2i(config: PretrainConfig, vae, tokenizer, scenes: list) -> tuple[torch.nn.Module, torch.nn.Module, dict]:
    from diffusers import DDPMScheduler
    from diffusers.training_utils import EMAModel

    start, device = time.perf_counter(), config.torch_device()
    vae.to(device)
    means, stds = encode_scenes(vae, scenes, config.resolution)
    scale = float(1.0 / means.std())
    vae.register_to_config(scaling_factor=scale)
    captions = [caption(scene) for scene in scenes]
    def tokenize(texts: list[str]) -> torch.Tensor:
        return tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                         return_tensors="pt").input_ids

    ids = tokenize(captions + [""])  # on the CPU: each step's tokens are made there with its other draws
    empty_ids = ids[-1]
    ids = ids[:-1]
    _log(f"encoded {len(scenes)} training scenes; latent scaling factor {scale:.4f}")

    if config.init_from is None:
        unet, text_encoder = build_unet(config.seed, config.resolution // 4), build_text_encoder(config.seed)
    else:
        from diffusers import UNet2DConditionModel
        from transformers import CLIPTextModel

        unet = UNet2DConditionModel.from_pretrained(config.init_from, subfolder="unet", local_files_only=True)
        text_encoder = CLIPTextModel.from_pretrained(config.init_from, subfolder="text_encoder",
                                                     local_files_only=True)
    unet, text_encoder = unet.float().to(device).requires_grad_(True), text_encoder.float().to(device)
    text_encoder.requires_grad_(True)
    unet.train()
    text_encoder.train()
    params = list(unet.parameters()) + list(text_encoder.parameters())
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.01)
    ema = EMAModel(params, decay=config.ema_decay, foreach=True)
    noise_schedule = DDPMScheduler.from_config(build_scheduler().config)
    rng = np.random.default_rng([config.seed, 2])
    generator = torch.Generator().manual_seed(config.seed + 1)
    shape = (config.batch, *means.shape[1:])

    def draws(first: int, count: int) -> list[tuple[torch.Tensor, ...]]:
        # Each step's random draws, made on the CPU in a fixed order and moved to the device in one copy per
        # chunk of steps (a copy per step would make the host wait for the device every step).
        steps = []
        for _ in range(first, first + count):
            picks = torch.from_numpy(rng.integers(len(scenes), size=config.batch))
            draw = torch.randn(shape, generator=generator)
            empty = torch.from_numpy(rng.random(config.batch) < config.empty_prompt_fraction)
            tokens = torch.where(empty[:, None], empty_ids, ids[picks])
            if config.partial_caption_fraction > 0:  # no draw at 0: the earlier recipe's stream is unchanged
                partial = (rng.random(config.batch) < config.partial_caption_fraction) & ~empty.numpy()
                if partial.any():
                    texts = [partial_caption(scenes[i], rng) for i in picks[torch.from_numpy(partial)].tolist()]
                    tokens[torch.from_numpy(partial)] = tokenize(texts)
            noise = torch.randn(shape, generator=generator)
            timesteps = torch.randint(0, noise_schedule.config.num_train_timesteps, (config.batch,),
                                      generator=generator)
            steps.append((picks, draw, tokens, noise, timesteps))
        stacked = [torch.stack(column).to(device) for column in zip(*steps)]
        return [tuple(column[i] for column in stacked) for i in range(count)]

    history, pending, queue = [], [], []  # losses stay on the device until logged: no sync per step
    for step in range(1, config.steps + 1):
        if not queue:
            queue = draws(step, min(100, config.steps - step + 1))
        picks, draw, tokens, noise, timesteps = queue.pop(0)
        latents = (means[picks] + stds[picks] * draw) * scale
        noisy = noise_schedule.add_noise(latents, noise, timesteps)
        hidden = text_encoder(tokens)[0]
        loss = F.mse_loss(unet(noisy, timesteps, hidden).sample, noise)
        lr = config.lr * min(1.0, step / config.warmup) * 0.5 * (1 + math.cos(math.pi * step / config.steps))
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        ema.step(params)
        pending.append(loss.detach())
        if step % 100 == 0 or step == config.steps:
            history.extend(torch.stack(pending).tolist())
            pending.clear()
            _log(f"t2i step {step}/{config.steps}: loss {np.mean(history[-100:]):.4f} "
                 f"({time.perf_counter() - start:.0f} s)")
    ema.copy_to(params)
    unet.cpu().eval().requires_grad_(False)
    text_encoder.cpu().eval().requires_grad_(False)
    vae.cpu()
    return unet, text_encoder, {"t2i_final_loss": float(np.mean(history[-100:])),
                                "t2i_seconds": time.perf_counter() - start, "latent_scaling_factor": scale,
                                "loss_curve": [float(np.mean(history[i:i + 100])) for i in range(0, len(history), 100)]}


@torch.no_grad()
def evaluate_t2i(pipe, count: int = 256, seed: int = 0) -> dict:
    """Caption faithfulness of a stock text-to-image pipeline on the first `count` held-out captions
    (`evaluate.evaluation_set("t2i")`), made in batches of `EVAL_BATCH` with one generator per image seeded
    (seed, index), 20 steps, guidance 7.5. Returns the fraction faithful, the per-caption outcomes and the images.
    """
    examples = evaluation_set("t2i", count)
    images = generate_outputs(pipe, examples, seed, EVAL_BATCH, stock=True, num_inference_steps=EVAL_STEPS,
                              guidance_scale=EVAL_GUIDANCE)
    outcomes = [bool(t2i_faithful(image, example.target_scene)) for image, example in zip(images, examples)]
    return {"faithfulness": sum(outcomes) / len(outcomes), "outcomes": outcomes, "images": images}


def earlier_recipe(folder) -> dict | None:
    """The recipe a continued model started from (its command, config, loss, measured faithfulness and, in turn,
    what it continued from), so the chain that made a model stays in its recipe.json."""
    path = Path(folder) / "recipe.json"
    if not path.is_file():
        return None
    earlier = json.loads(path.read_text())
    kept = {key: earlier[key] for key in ("command", "recipe", "versions", "t2i_final_loss", "latent_scaling_factor",
                                          "continued_from") if key in earlier}
    if "evaluation" in earlier:
        kept["faithfulness"] = earlier["evaluation"]["faithfulness"]
    return kept


def is_pretrain_output(folder: Path) -> bool:
    """True for a pipeline folder an earlier `mtu toyworld pretrain` wrote (the shipped base included)."""
    if not (folder / "model_index.json").is_file() or not (folder / "recipe.json").is_file():
        return False
    try:
        return "recipe" in json.loads((folder / "recipe.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False


def pretrain(config: PretrainConfig, *, overwrite: bool = False) -> dict:
    """Runs the recipe and writes the pipeline folder with recipe.json; returns the recipe record.

    `config.out` is claimed first (`mtu.outputs.claim_output`): a folder holding anything but an earlier pretrain
    output, or one of `vae_from` / `init_from`, is refused; `overwrite` writes into such a folder all the same,
    replacing only the pipeline's files. Stage 1's VAE and the tokenizer are kept in a work folder beside `out`
    while the run lasts (left there, for inspection, if it fails).
    """
    import shutil
    import tempfile

    import diffusers
    import transformers

    from ..outputs import claim_output

    output = claim_output(config.out, command="toyworld pretrain", overwrite=overwrite,
                          inputs={"VAE (`vae_from`)": config.vae_from, "model (`init_from`)": config.init_from},
                          recognize=is_pretrain_output)
    out = Path(config.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".work", dir=out.parent))
    torch.manual_seed(config.seed)
    scenes = make_scenes(config.seed, config.scenes, "train")
    if config.vae_from is None:
        vae, vae_record = train_vae(config, scenes)
        vae.save_pretrained(work / "vae-stage")  # for inspection should stage 2 fail
    else:
        from diffusers import AutoencoderKL

        vae = AutoencoderKL.from_pretrained(config.vae_from, subfolder="vae", local_files_only=True).float()
        vae.eval().requires_grad_(False)
        vae_record = {"vae_reused_from": str(config.vae_from)}
    tokenizer = build_tokenizer(work / "tokenizer")
    unet, text_encoder, t2i_record = train_t2i(config, vae, tokenizer, scenes)
    pipe = assemble_pipeline(unet, vae, text_encoder, tokenizer)
    record = {
        "recipe": asdict(config), "command": "mtu toyworld pretrain " + " ".join(
            f"--{k} {v}" for k, v in asdict(config).items() if k != "out" and v is not None),
        "versions": {"torch": torch.__version__, "diffusers": diffusers.__version__,
                     "transformers": transformers.__version__},
        **vae_record, **t2i_record,
    }
    if config.init_from is not None:
        record["continued_from"] = earlier_recipe(config.init_from)

    def write(folder: Path) -> None:
        # UNet and VAE weights are stored in float16 (half the size), which diffusers loads as float32 by
        # default; the text encoder stays float32 (transformers would load float16 as float16). The figure below
        # is measured on exactly what a user loads.
        pipe.unet.half()
        pipe.vae.half()
        pipe.save_pretrained(folder, safe_serialization=True)
        pipe.unet.float()
        pipe.vae.float()
        from diffusers import StableDiffusionPipeline

        loaded = StableDiffusionPipeline.from_pretrained(folder, local_files_only=True)
        loaded.set_progress_bar_config(disable=True)
        start = time.perf_counter()
        evaluation = evaluate_t2i(loaded, config.eval_count, config.seed)
        record["evaluation"] = {
            "metric": "t2i caption faithfulness (oracle parse == caption scene, sizes included)",
            "count": config.eval_count, "seed": config.seed, "steps": EVAL_STEPS, "guidance_scale": EVAL_GUIDANCE,
            "batch": EVAL_BATCH, "faithfulness": evaluation["faithfulness"], "outcomes": evaluation["outcomes"],
            "seconds": time.perf_counter() - start}
        (folder / "recipe.json").write_text(json.dumps(record, indent=1))
        shown = evaluation["images"][:64]
        image_rows([shown[i:i + 16] for i in range(0, len(shown), 16)], folder / "samples.png", scale=2, gap=0)

    output.write(write)
    shutil.rmtree(work, ignore_errors=True)  # this run's own work folder
    _log(f"wrote {out}: t2i faithfulness {record['evaluation']['faithfulness']:.3f} on {config.eval_count} "
         f"held-out captions")
    return record
