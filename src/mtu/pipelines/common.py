"""What the SD and SDXL MTU pipelines share: the sampling loop, the guidance math, loading from a base folder.

A subclass says how prompts become UNet conditioning (`encode_text`, `encode_negative`, `added_cond_kwargs`) and
which diffusers pipelines a folded task runs in (`folded_pipeline_classes`, `folded_components`).
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Mapping
from contextlib import contextmanager
from pathlib import Path
from types import MappingProxyType

import torch
from diffusers import DiffusionPipeline
from diffusers.image_processor import VaeImageProcessor
from diffusers.pipelines.pipeline_utils import ImagePipelineOutput
from diffusers.utils.torch_utils import randn_tensor

from ..conditioning import condition_channels
from ..errors import InputError
from ..shipped import resolve, short_names
from ..upcycling.bases import RANDOM_PREFIX, load_base_unet
from ..upcycling.model import MTUModel
from ..upcycling.task_model import TaskModel
from ..upcycling.serialization import adapter_directory, load_mtu, read_adapter_config
from ..upcycling.tasks import TaskSpec
from .checks import CallPlan, check_call_inputs, check_latents
from .defaults import (Family, Guidance, TaskDefaults, check_sampling, read_sampling, task_defaults, uses_mask,
                       with_overrides)
from .inputs import expand_batch, image_to_tensor, mask_to_tensor, upsample_for_sr

# The prompt and image condition of each UNet branch, in the batch order of the diffusers pipeline that guidance
# kind comes from: StableDiffusion(Inpaint)Pipeline for "text", StableDiffusionInstructPix2PixPipeline for "dual".
BRANCHES: dict[str, tuple[tuple[str, str], ...]] = {
    "none": (("prompt", "image"),),
    "text": (("negative", "image"), ("prompt", "image")),
    "dual": (("prompt", "image"), ("negative", "image"), ("negative", "zeros")),
}
LOADABLE_LIBRARIES = ("diffusers", "transformers")  # what a base's model_index.json may name
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")  # org/name


def combine_guidance(noise_pred: torch.Tensor, guidance: Guidance, guidance_scale: float,
                     image_guidance_scale: float | None) -> torch.Tensor:
    """(branches * N, C, h, w) UNet outputs in `BRANCHES` order -> (N, C, h, w) guided noise."""
    if guidance == "none":
        return noise_pred
    if guidance == "text":  # Ho & Salimans 2022
        uncond, text = noise_pred.chunk(2)
        return uncond + guidance_scale * (text - uncond)
    if guidance == "dual":  # InstructPix2Pix (Brooks et al. 2023, Eq. 3), as diffusers computes it
        text, image_only, uncond = noise_pred.chunk(3)
        return uncond + guidance_scale * (text - image_only) + image_guidance_scale * (image_only - uncond)
    raise InputError(f"`guidance` must be one of {tuple(BRANCHES)}, got {guidance!r}.")


def check_finite_latents(latents: torch.Tensor, plan: CallPlan, index: int, steps: int) -> None:
    """Stops sampling at the first step whose latents hold NaN or inf, instead of decoding them to a black image."""
    if bool(torch.isfinite(latents).all()):
        return
    scales = f"`guidance_scale` {plan.guidance_scale:g}" + (
        f", `image_guidance_scale` {plan.image_guidance_scale:g}" if plan.image_guidance_scale is not None else "")
    raise InputError(f"sampling task {plan.spec.name!r} gave non-finite latents (NaN or inf) at step {index + 1} of "
                     f"{steps} ({plan.guidance} guidance, {scales}); the model's weights (an adapter with NaN or inf "
                     f"weights?) or its inputs make them. Nothing was returned.")


def check_unet(unet, pipeline: str, sdxl: bool) -> None:
    """`unet` is an `MTUModel` (or a trained baseline, a `TaskModel`) over a UNet of the family the pipeline serves."""
    if not isinstance(unet, TaskModel):
        raise TypeError(f"`unet` must be an MTUModel or a trained baseline (a TaskModel: `mtu.upcycle`, "
                        f"`mtu.load_mtu`, `mtu.training.methods.load_baseline`), got {type(unet).__name__}; fold a task to use a stock UNet in a diffusers pipeline.")
    embed_type = unet.unet.config.get("addition_embed_type")
    if (embed_type == "text_time") != sdxl:
        other = "MTUPipeline" if sdxl else "MTUStableDiffusionXLPipeline"
        raise InputError(f"{pipeline} cannot run a UNet with `addition_embed_type` {embed_type!r}; use {other}.")


def _is_baseline_folder(adapter) -> bool:
    """A trained baseline's folder holds method.json (`mtu.training.methods.BASELINE_RECORD`), not an adapter."""
    return (Path(adapter).expanduser() / "method.json").is_file()


def check_base_location(base) -> str:
    """`base` as a string if it is a diffusers pipeline folder or a hub id, the shipped folder if it is a shipped
    base's short name ("toyworld-base"); raises before anything loads."""
    text = str(resolve(base, "base", "`base`"))
    path = Path(text).expanduser()
    if path.exists():
        if not (path / "model_index.json").is_file():
            raise InputError(f"`base` {text!r} is not a diffusers pipeline folder (no model_index.json); the "
                             f"pipeline needs the base's VAE, text encoder and tokenizer.")
        return str(path)
    if text.startswith(RANDOM_PREFIX):
        raise InputError(f"`base` {text!r} is a bare UNet architecture; give the diffusers pipeline folder or hub "
                         f"id of that base (its VAE, text encoder and tokenizer).")
    if not HUB_ID.match(text):
        raise FileNotFoundError(f"`base` {text!r} is neither an existing folder nor a hub id (org/name); shipped "
                                f"bases: {', '.join(short_names('base'))}.")
    return text


def adapter_family(record: dict) -> Family:
    """"sdxl" or "sd": the pipeline family of the base an adapter record (`read_adapter_config`) was made for."""
    return "sdxl" if record["base"]["unet_config"].get("addition_embed_type") == "text_time" else "sd"


def load_base_components(base, names: tuple[str, ...], torch_dtype: torch.dtype | None = None) -> tuple[dict, dict]:
    """({name: component}, model_index) of a diffusers pipeline folder or hub id; weights from safetensors only."""
    location = check_base_location(base)
    index = DiffusionPipeline.load_config(location)
    components = {}
    for name in names:
        library, class_name = (index.get(name) or [None, None])[:2]
        if library not in LOADABLE_LIBRARIES or class_name is None:
            raise InputError(f"`base` {str(base)!r} has no loadable {name!r} component (model_index.json lists "
                             f"{index.get(name)!r}; supported libraries: {LOADABLE_LIBRARIES}).")
        component_class = getattr(importlib.import_module(library), class_name)
        kwargs = {}
        if issubclass(component_class, torch.nn.Module):
            kwargs = {"use_safetensors": True, **({"torch_dtype": torch_dtype} if torch_dtype else {})}
        components[name] = component_class.from_pretrained(location, subfolder=name, **kwargs)
    return components, index


class MTUPipelineBase(DiffusionPipeline):
    """The shared `__call__` of the MTU pipelines; see `MTUPipeline` for the arguments."""

    family: Family = "sd"
    base_component_names: tuple[str, ...] = ()
    folded_pipeline_classes: dict[str, type] = {}
    # {task: {field: scale}} replacing the defaults table's scales; set with `set_sampling_defaults`.
    sampling_overrides: Mapping[str, Mapping[str, float]] = MappingProxyType({})

    def _setup_processors(self) -> None:
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.image_processor = VaeImageProcessor(vae_scale_factor=self.vae_scale_factor)

    # ---- hooks for the SD / SDXL subclasses ----

    def encode_text(self, prompts: list[str], device, name: str = "prompt") -> dict[str, torch.Tensor]:
        """{"encoder_hidden_states": (B, L, D), ...} for `prompts` (the argument `name`, for the warning a cut
        prompt gives)."""
        raise NotImplementedError

    def encode_negative(self, negative_prompts: list[str] | None, positive: dict, device) -> dict:
        """The negative branch's conditioning: `negative_prompts`, or the empty prompt when None."""
        return self.encode_text(negative_prompts or [""] * positive["encoder_hidden_states"].shape[0], device,
                                "negative_prompt")

    def added_cond_kwargs(self, text: dict, plan: CallPlan) -> dict | None:
        """The UNet's `added_cond_kwargs` for the stacked branches (SDXL's pooled text and time ids)."""
        return None

    def folded_components(self) -> dict:
        raise NotImplementedError

    # ---- device and dtype: DiffusionPipeline reads `.device`/`.dtype` of every component, which a diffusers
    # ModelMixin has and an MTUModel (a plain nn.Module) does not, so these read the parameters instead ----

    def _torch_modules(self) -> list[torch.nn.Module]:
        return [module for module in self.components.values() if isinstance(module, torch.nn.Module)]

    @property
    def device(self) -> torch.device:
        """An accelerator a component is on, else the first component's device (as `DiffusionPipeline.device`)."""
        params = [next(module.parameters(), None) for module in self._torch_modules()]
        devices = [param.device for param in params if param is not None] or [torch.device("cpu")]
        return next((device for device in devices if device.type not in ("cpu", "meta")), devices[0])

    @property
    def dtype(self) -> torch.dtype:
        modules = self._torch_modules()
        return next(modules[0].parameters()).dtype if modules else torch.float32

    def to(self, *args, **kwargs):
        """Moves and/or casts every component: `pipe.to("cuda")`, `pipe.to(torch.float16)`, `pipe.to(device=...)`."""
        kwargs = {key: value for key, value in kwargs.items() if key in ("device", "dtype", "non_blocking")}
        for module in self._torch_modules():
            module.to(*args, **kwargs)
        return self

    # ---- shared ----

    @classmethod
    def from_base(cls, base, adapter, torch_dtype: torch.dtype | None = None, scheduler=None,
                  sampling_defaults: dict | None = None):
        """A pipeline from a diffusers base pipeline folder (or hub id) and an MTU adapter.

        Args:
            base: The base pipeline: its VAE, text encoder(s), tokenizer(s) and scheduler are loaded from it
                (safetensors only), and its UNet when `adapter` is a folder.
            adapter: An MTU adapter folder or shipped adapter's short name (loaded onto the base's UNet with
                `mtu.load_mtu`), a trained baseline's folder (`mtu train`'s final/ of a `full`, `lora`, `ia3`,
                `lora_shared` or `ia3_shared` run; `mtu.training.methods.load_baseline`: each task samples with
                its own adapter), or an `MTUModel`. How its training encoded dropped text, where the adapter
                records it, decides the SDXL negative branch over the base's `force_zeros_for_empty_prompt`.
            torch_dtype: dtype for the loaded weights.
            scheduler: A diffusers scheduler to use instead of the base's.
            sampling_defaults: {task: {"guidance_scale", "image_guidance_scale"}} to use instead of the paper's
                defaults (`set_sampling_defaults`); None keeps the paper's. A folder's `sampling.json` is read
                by `from_pretrained`, not here.
        """
        location = check_base_location(base)
        names = tuple(n for n in cls.base_component_names if n != "scheduler" or scheduler is None)
        components, index = load_base_components(location, names, torch_dtype)
        if isinstance(adapter, TaskModel):
            unet = adapter
        elif isinstance(adapter, (str, Path)) and _is_baseline_folder(adapter):
            from ..training.methods import load_baseline  # a trained baseline: each task samples with its adapter

            unet = load_baseline(adapter, base=load_base_unet(location), torch_dtype=torch_dtype)
        elif isinstance(adapter, (str, Path)):
            # Cast after loading: the adapter's base fingerprint is of the weights as stored.
            unet = load_mtu(adapter, base=load_base_unet(location))
            if torch_dtype is not None:
                unet.to(torch_dtype)
        else:
            raise TypeError(f"`adapter` must be an MTU adapter folder or an MTUModel, got {type(adapter).__name__}.")
        if scheduler is not None:
            components["scheduler"] = scheduler
        pipe = cls(unet=unet, **components, **cls._init_kwargs_from_index(index, unet))
        if sampling_defaults is not None:
            pipe.set_sampling_defaults(sampling_defaults)
        return pipe

    @classmethod
    def from_pretrained(cls, name_or_path, torch_dtype: torch.dtype | None = None, base=None, scheduler=None):
        """A pipeline from an MTU adapter folder, or a shipped model by short name, on the base it records.

            pipe = MTUPipeline.from_pretrained("toyworld")  # the adapter for the embedded toy-world base

        Args:
            name_or_path: An MTU adapter folder (`save_pretrained` / `mtu upcycle`) or a shipped adapter's short
                name (`mtu.shipped.SHORT_NAMES`); an existing folder of that name wins.
            torch_dtype: dtype for the loaded weights.
            base: The base pipeline folder, hub id or short name; default the one the adapter records.
            scheduler: A diffusers scheduler to use instead of the base's.

        The folder's `sampling.json`, if any, replaces the paper's guidance scales for the tasks it names (the
        scales the adapter was measured with); arguments given to a call still win.
        """
        record = read_adapter_config(name_or_path)  # raises before any weights load
        family = adapter_family(record)
        if family != cls.family:
            other = {"sd": "MTUPipeline", "sdxl": "MTUStableDiffusionXLPipeline"}[family]
            raise InputError(f"the adapter {str(name_or_path)!r} is for a {family!r} base, which {cls.__name__} "
                             f"cannot run; use {other}.")
        specs = [TaskSpec.from_dict(data) for data in record["tasks"].values()]
        sampling = read_sampling(adapter_directory(name_or_path), family, specs)
        base = base or record["base"].get("name_or_path")
        if not base:
            raise InputError(f"the adapter {str(name_or_path)!r} records no base pipeline; pass `base`.")
        return cls.from_base(base, name_or_path, torch_dtype=torch_dtype, scheduler=scheduler,
                             sampling_defaults=sampling)

    @classmethod
    def _init_kwargs_from_index(cls, index: dict, unet: MTUModel) -> dict:
        """Constructor arguments from the base's model_index.json (and what the adapter `unet` records)."""
        return {}

    def set_sampling_defaults(self, sampling_defaults: dict) -> None:
        """Makes `task_defaults` (what a call's unset scales take) use these scales instead of the paper's.

        Args:
            sampling_defaults: {task: {"guidance_scale": x, "image_guidance_scale": y}}, every field optional but
                one the task's guidance uses; {} restores the paper's defaults.
        """
        self.sampling_overrides = check_sampling(sampling_defaults, self.family, self.unet.task_specs,
                                                 "`sampling_defaults`")

    def task_defaults(self, task: str) -> TaskDefaults:
        """The sampling defaults of `task`: the paper's (Appendix A.2) with this pipeline's sampling overrides
        (an adapter folder's `sampling.json`); `.call_kwargs()` suits the folded pipeline."""
        spec = self.unet.task_specs[self.unet.task_index(task)]
        return with_overrides(task_defaults(self.family, spec), self.sampling_overrides.get(spec.name))

    def fold(self, task: str) -> DiffusionPipeline:
        """`task` as a stock diffusers pipeline with `unet.fold(task)`, sharing this pipeline's VAE, text encoder(s)
        and tokenizer(s), and a scheduler of the same class and config.

        A text-only task runs in the text-to-image pipeline, an image task in InstructPix2Pix and a mask task in
        the inpainting pipeline. Those pipelines have their own defaults: pass `**pipe.task_defaults(task)
        .call_kwargs()` for this pipeline's (the paper's, or the adapter's sampling.json). For "sr", upsample the
        low-resolution image to the output size first (see `mtu.pipelines.inputs.upsample_for_sr`) and give the
        empty prompt. The inpainting pipeline samples the masked-image latents where MTU takes their mode, so it
        matches `inpaint_mask` only approximately.
        """
        spec = self.unet.task_specs[self.unet.task_index(task)]
        kind = "mask" if uses_mask(spec) else "image" if spec.image_inputs else "text"
        components = self.folded_components()
        # A copy of the scheduler: diffusers' pipelines rewrite an outdated scheduler config in place.
        components["scheduler"] = type(self.scheduler).from_config(self.scheduler.config)
        folded = self.folded_pipeline_classes[kind](unet=self.unet.fold(task), **components)
        folded.set_progress_bar_config(**getattr(self, "_progress_bar_config", {}))
        return folded

    def check_inputs(self, task, *, prompt=None, image=None, mask_image=None, height=None, width=None,
                     num_inference_steps=None, guidance_scale=None, image_guidance_scale=None, negative_prompt=None,
                     num_images_per_prompt=1, generator=None, latents=None, output_type="pil") -> CallPlan:
        """Raises `InputError` naming any invalid argument; returns the call with the task's defaults filled in."""
        sample_size = self.unet.unet.config.sample_size
        plan = check_call_inputs(
            self.unet.task_specs, self.family, task, prompt=prompt, image=image, mask_image=mask_image,
            height=height, width=width, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
            image_guidance_scale=image_guidance_scale, negative_prompt=negative_prompt,
            num_images_per_prompt=num_images_per_prompt, generator=generator, output_type=output_type,
            default_size=(sample_size * self.vae_scale_factor, sample_size * self.vae_scale_factor),
            sampling_overrides=self.sampling_overrides)
        check_latents(latents, self._latent_shape(plan))
        return plan

    def _latent_shape(self, plan: CallPlan) -> tuple[int, int, int, int]:
        return (plan.num_samples, self.vae.config.latent_channels, plan.height // self.vae_scale_factor,
                plan.width // self.vae_scale_factor)

    @contextmanager
    def _vae_upcast(self):
        """Runs the VAE in float32 where its config asks (SDXL's VAE overflows in float16)."""
        dtype = self.vae.dtype
        upcast = dtype == torch.float16 and getattr(self.vae.config, "force_upcast", False)
        if upcast:
            self.vae.to(torch.float32)
        try:
            yield torch.float32 if upcast else dtype
        finally:
            if upcast:
                self.vae.to(dtype)

    def encode_branches(self, plan: CallPlan, device) -> dict[str, torch.Tensor]:
        """The text conditioning of every branch, stacked: (branches * num_samples, ...)."""
        positive = self.encode_text(plan.prompts, device)
        sides = {"prompt": positive}
        if plan.guidance != "none":
            sides["negative"] = self.encode_negative(plan.negative_prompts, positive, device)
        return {key: torch.cat([expand_batch(sides[side][key], plan.batch_size, plan.num_images_per_prompt)
                                for side, _ in BRANCHES[plan.guidance]]) for key in positive}

    def encode_conditions(self, plan: CallPlan, image, mask_image, device, dtype) -> torch.Tensor | None:
        """The task's image condition channels (`mtu.conditioning`) of every branch, stacked."""
        if not plan.spec.image_inputs:
            return None
        pixels = image_to_tensor(image, self.vae_scale_factor)
        if (pixels.shape[-2], pixels.shape[-1]) != (plan.height, plan.width):  # only SR: the LR image, resized up
            pixels = upsample_for_sr(pixels, (plan.height, plan.width))
        mask = mask_to_tensor(mask_image).to(device) if mask_image is not None else None
        if mask is not None and mask.shape[0] == 1 and pixels.shape[0] > 1:
            mask = mask.expand(pixels.shape[0], -1, -1, -1)
        with self._vae_upcast() as vae_dtype:
            channels = condition_channels(self.vae, plan.spec, pixels.to(device, vae_dtype),
                                          None if mask is None else mask.to(vae_dtype))
        channels = expand_batch(channels.to(dtype), plan.batch_size, plan.num_images_per_prompt)
        return torch.cat([channels if side == "image" else torch.zeros_like(channels)
                          for _, side in BRANCHES[plan.guidance]])

    def _step_kwargs(self, generator) -> dict:
        accepted = set(inspect.signature(self.scheduler.step).parameters)
        return {k: v for k, v in (("eta", 0.0), ("generator", generator)) if k in accepted}

    def decode(self, latents: torch.Tensor, output_type: str):
        if output_type == "latent":
            return latents
        config = self.vae.config
        mean, std = getattr(config, "latents_mean", None), getattr(config, "latents_std", None)
        if mean is not None and std is not None:
            shape = (1, -1, 1, 1)
            mean = torch.tensor(mean).view(shape).to(latents)
            latents = latents * torch.tensor(std).view(shape).to(latents) / config.scaling_factor + mean
        else:
            latents = latents / config.scaling_factor
        with self._vae_upcast() as vae_dtype:
            image = self.vae.decode(latents.to(vae_dtype), return_dict=False)[0]
        return self.image_processor.postprocess(image, output_type=output_type)

    @torch.no_grad()
    def __call__(self, task: str, prompt: str | list[str] | None = None, image=None, mask_image=None,
                 height: int | None = None, width: int | None = None, num_inference_steps: int | None = None,
                 guidance_scale: float | None = None, image_guidance_scale: float | None = None,
                 negative_prompt: str | list[str] | None = None, num_images_per_prompt: int = 1,
                 generator: torch.Generator | list[torch.Generator] | None = None,
                 latents: torch.Tensor | None = None, output_type: str = "pil", return_dict: bool = True):
        """Samples `task`; arguments left None take the task's defaults (`self.task_defaults(task)`).

        Args:
            task: One of `self.unet.task_names`.
            prompt: A prompt, or one per sample (the instruction for edit and inpaint); None for a task without
                a prompt (sr runs with the empty prompt).
            image: The task's input image(s): PIL, numpy (H, W, C) in [0, 1], torch (B, C, H, W) in [-1, 1], or
                lists of them. For sr the low-resolution image: the output is `sr_scale` (2) times larger, and
                the image is resized bicubically to the output size before encoding, as SR conditions are made.
            mask_image: For mask tasks (inpaint_mask): one channel, 1 (white) where the model fills in.
            height, width: Output size, multiples of 8. Default: the image's size (times `sr_scale` for sr), else
                the UNet's sample size times the VAE's scale factor.
            num_inference_steps: Denoising steps.
            guidance_scale: Text guidance; guidance runs when it is > 1.
            image_guidance_scale: Image guidance of InstructPix2Pix tasks; dual guidance also needs it >= 1.
            negative_prompt: Prompt(s) of the unconditional branches; default the empty prompt (SDXL: zeros, or
                what the adapter records its training used).
            num_images_per_prompt: Images per prompt; the images of one prompt are adjacent in the output.
            generator: A torch.Generator, or one per output image. With a list each image's noise comes from its
                own generator, so a seed gives the same image alone or in a batch; a single generator draws the
                noise of the whole batch in order, so an image then depends on the batch it is in.
            latents: Initial noise (num images, latent channels, height / f, width / f) instead of a draw.
            output_type: "pil", "np", "pt" or "latent".
            return_dict: Return an `ImagePipelineOutput`; else the tuple `(images,)`.
        """
        # 1. Check every argument and fill in the task's defaults (Appendix A.2)
        plan = self.check_inputs(task, prompt=prompt, image=image, mask_image=mask_image, height=height, width=width,
                                 num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                                 image_guidance_scale=image_guidance_scale, negative_prompt=negative_prompt,
                                 num_images_per_prompt=num_images_per_prompt, generator=generator, latents=latents,
                                 output_type=output_type)
        device = self._execution_device

        # 2. Encode the prompt of every guidance branch
        text = self.encode_branches(plan, device)
        encoder_hidden_states = text["encoder_hidden_states"]
        added_cond_kwargs = self.added_cond_kwargs(text, plan)
        dtype = encoder_hidden_states.dtype

        # 3. Encode the task's image conditions (zeros in InstructPix2Pix's unconditional branch)
        conditions = self.encode_conditions(plan, image, mask_image, device, dtype)

        # 4. Timesteps and initial noise: one draw per sample from a list of generators, so a seed gives the same
        # image alone or in a batch; a single generator draws the whole batch in order.
        self.scheduler.set_timesteps(plan.num_inference_steps, device=device)
        timesteps = self.scheduler.timesteps
        if latents is None:
            latents = randn_tensor(self._latent_shape(plan), generator=generator, device=device, dtype=dtype)
        latents = latents.to(device, dtype) * self.scheduler.init_noise_sigma
        step_kwargs = self._step_kwargs(generator)
        branches = len(BRANCHES[plan.guidance])

        # 5. Denoise: all branches in one UNet batch, routed to `task`
        with self.progress_bar(total=len(timesteps)) as progress_bar:
            for index, t in enumerate(timesteps):
                model_input = self.scheduler.scale_model_input(torch.cat([latents] * branches), t)
                if conditions is not None:
                    model_input = torch.cat([model_input, conditions], dim=1)  # (N, 4 + extra, h, w)
                noise_pred = self.unet(model_input, t, encoder_hidden_states, task=plan.spec.name,
                                       added_cond_kwargs=added_cond_kwargs, return_dict=False)[0]
                noise_pred = combine_guidance(noise_pred, plan.guidance, plan.guidance_scale,
                                              plan.image_guidance_scale)
                latents = self.scheduler.step(noise_pred, t, latents, **step_kwargs, return_dict=False)[0]
                check_finite_latents(latents, plan, index, len(timesteps))
                progress_bar.update()

        # 6. Decode
        images = self.decode(latents, output_type)
        self.maybe_free_model_hooks()
        return ImagePipelineOutput(images=images) if return_dict else (images,)
