"""What the SD and SDXL MTU pipelines share: the sampling loop, the guidance math, loading from a base folder,
and saving to (and loading from) a pipeline folder that holds the base and the adapter.

A subclass says how prompts become UNet conditioning (`encode_text`, `encode_negative`, `added_cond_kwargs`) and
which diffusers pipelines a folded task runs in (`folded_pipeline_classes`, `folded_components`).
"""

from __future__ import annotations

import inspect
import json
import os
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
from ..upcycling.bases import find_recorded_base, load_base_unet
from ..upcycling.model import MTUModel
from ..upcycling.task_model import TaskModel
from ..upcycling.serialization import adapter_directory, load_mtu, read_adapter_config
from ..upcycling.tasks import TaskSpec
from .checks import CallPlan, check_call_inputs, check_latents
from .defaults import (Family, Guidance, TaskDefaults, check_sampling, read_sampling, task_defaults, uses_mask,
                       with_overrides)
from .inputs import expand_batch, image_to_tensor, mask_to_tensor, upsample_for_sr
from .folders import (  # noqa: F401  (check_base_location, adapter_family: imported from here by callers)
    FROM_BASE,
    PIPELINE_MODULE,
    UNET_MODULE,
    SavedMTUModel,
    MODULE_TEXT,
    is_baseline_folder,
    saved_sampling,
    adapter_family,
    check_base_location,
    check_same_base,
    check_variant,
    claim_save_directory,
    load_base_components,
    saved_pipeline_folder,
)

# The prompt and image condition of each UNet branch, in the batch order of the diffusers pipeline that guidance
# kind comes from: StableDiffusion(Inpaint)Pipeline for "text", StableDiffusionInstructPix2PixPipeline for "dual".
BRANCHES: dict[str, tuple[tuple[str, str], ...]] = {
    "none": (("prompt", "image"),),
    "text": (("negative", "image"), ("prompt", "image")),
    "dual": (("prompt", "image"), ("negative", "image"), ("negative", "zeros")),
}


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
    if sdxl and len(getattr(unet, "text_encoders", ())):
        raise InputError(f"{pipeline}: the model gives tasks {list(unet.text_encoders)} their own text encoder, which "
                         f"SD 1.x/2.x pipelines take (SDXL has two encoders).")


class MTUPipelineBase(DiffusionPipeline):
    """The shared `__call__` of the MTU pipelines; see `MTUPipeline` for the arguments."""

    family: Family = "sd"
    base_component_names: tuple[str, ...] = ()
    folded_pipeline_classes: dict[str, type] = {}
    # {task: {field: scale}} replacing the defaults table's scales; set with `set_sampling_defaults`.
    sampling_overrides: Mapping[str, Mapping[str, float]] = MappingProxyType({})

    def _setup(self, sampling_defaults: dict | None) -> None:
        """The end of every subclass's `__init__`: image processor, and the sampling overrides (kept in the
        pipeline's config, so that `save_pretrained` writes them to model_index.json)."""
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.image_processor = VaeImageProcessor(vae_scale_factor=self.vae_scale_factor)
        self.set_sampling_defaults(sampling_defaults or {})

    # ---- hooks for the SD / SDXL subclasses ----

    def encode_text(self, prompts: list[str], device, name: str = "prompt",
                    task: str | None = None) -> dict[str, torch.Tensor]:
        """{"encoder_hidden_states": (B, L, D), ...} for `prompts` (the argument `name`, for the warning a cut
        prompt gives), by `task`'s text encoder (`text_encoder_for`)."""
        raise NotImplementedError

    def encode_negative(self, negative_prompts: list[str] | None, positive: dict, device,
                        task: str | None = None) -> dict:
        """The negative branch's conditioning: `negative_prompts`, or the empty prompt when None."""
        return self.encode_text(negative_prompts or [""] * positive["encoder_hidden_states"].shape[0], device,
                                "negative_prompt", task)

    def text_encoder_for(self, task: str | None):
        """The text encoder that reads `task`'s prompts: the task's own when the model has one
        (`mtu.upcycling.text_encoders`), else the base's `text_encoder`."""
        own = getattr(self.unet, "task_text_encoder", None)
        encoder = own(task) if own is not None and task is not None else None
        return self.text_encoder if encoder is None else encoder

    def added_cond_kwargs(self, text: dict, plan: CallPlan) -> dict | None:
        """The UNet's `added_cond_kwargs` for the stacked branches (SDXL's pooled text and time ids)."""
        return None

    def folded_components(self) -> dict:
        raise NotImplementedError

    @classmethod
    def _init_kwargs_from_index(cls, index: dict, unet: MTUModel) -> dict:
        """Constructor arguments from the base's model_index.json (and what the adapter `unet` records)."""
        return {}

    @classmethod
    def _optional_from_base(cls, safety_checker) -> tuple[tuple[str, ...], dict]:
        """(optional components to load from the base, components given instead) for `from_base`'s
        `safety_checker` argument; a pipeline without a safety checker (SDXL) takes only None or the default."""
        if safety_checker is not FROM_BASE and safety_checker is not None:
            raise InputError(f"`safety_checker` must be None for {cls.__name__}: diffusers' SDXL pipelines have no "
                             f"safety checker, got {type(safety_checker).__name__}.")
        return (), {}

    def run_safety_checker(self, image: torch.Tensor, device, dtype) -> tuple[torch.Tensor, list[bool] | None]:
        """(image, flagged per image) as diffusers' `StableDiffusionPipeline.run_safety_checker`; (image, None)
        where the pipeline has no safety checker."""
        return image, None

    def make_output(self, images, flagged: list[bool] | None, return_dict: bool):
        """The call's return value, as the diffusers pipeline of this family returns it."""
        return ImagePipelineOutput(images=images) if return_dict else (images,)

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

    # ---- loading and saving ----

    @classmethod
    def _load_unet(cls, base: str, adapter, torch_dtype, variant):
        """The model `from_base` runs: `adapter` itself, or a folder's adapter on the base UNet of `base` (as the
        user named it: a shipped base's short name stays one in the model's record)."""
        if isinstance(adapter, TaskModel):
            return adapter
        if not isinstance(adapter, (str, os.PathLike)):
            raise TypeError(f"`adapter` must be an MTU adapter folder or an MTUModel, got {type(adapter).__name__}.")
        if is_baseline_folder(adapter):
            from ..training.methods import load_baseline  # a trained baseline: each task samples with its adapter

            return load_baseline(adapter, base=load_base_unet(base, variant=variant), torch_dtype=torch_dtype)
        # The base is checked in its stored dtype, then cast; the model records it (and `variant`) as its base.
        return load_mtu(adapter, base=base, variant=variant, torch_dtype=torch_dtype)

    @classmethod
    def from_base(cls, base, adapter, torch_dtype: torch.dtype | None = None, scheduler=None,
                  sampling_defaults: dict | None = None, *, variant: str | None = None, safety_checker=FROM_BASE):
        """A pipeline from a diffusers base pipeline folder (or hub id) and an MTU adapter.

        Args:
            base: The base pipeline: its VAE, text encoder(s), tokenizer(s), scheduler and (SD) safety checker
                with its feature extractor are loaded from it (safetensors only), and its UNet when `adapter` is a
                folder.
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
            variant: The weights variant to read from the base, as diffusers' `variant` ("fp16" for a folder of
                `*.fp16.safetensors`): for every component with weights and the base UNet.
            safety_checker: The base's own by default (when its model_index.json lists one); None runs without
                it, as `StableDiffusionPipeline.from_pretrained(..., safety_checker=None)` (with diffusers'
                warning when the base requires one); or a `StableDiffusionSafetyChecker` to use instead. SDXL
                pipelines have none (diffusers' SDXL pipelines watermark instead): only None or the default.
        """
        location = check_base_location(base)
        variant = check_variant(variant)
        optional, given = cls._optional_from_base(safety_checker)
        names = tuple(n for n in cls.base_component_names if n != "scheduler" or scheduler is None)
        components, index = load_base_components(location, names, torch_dtype, variant=variant, optional=optional)
        components.update(given, **({"scheduler": scheduler} if scheduler is not None else {}))
        unet = cls._load_unet(str(base), adapter, torch_dtype, variant)
        return cls(unet=unet, **components, **cls._init_kwargs_from_index(index, unet),
                   sampling_defaults=sampling_defaults)

    @classmethod
    def from_pretrained(cls, name_or_path, torch_dtype: torch.dtype | None = None, base=None, scheduler=None, *,
                        variant: str | None = None, safety_checker=FROM_BASE):
        """A pipeline from a folder `save_pretrained` wrote, an MTU adapter folder or a shipped model's short name.

            pipe = MTUPipeline.from_pretrained("toyworld")  # the adapter for the embedded toy-world base
            pipe.save_pretrained("my-pipeline")
            pipe = MTUPipeline.from_pretrained("my-pipeline")  # the same pipeline, from that folder alone

        Args:
            name_or_path: A pipeline folder (`save_pretrained`: the base's components and, in unet/, the base
                UNet and the MTU adapter), an MTU adapter folder (`MTUModel.save_pretrained` / `mtu upcycle`),
                or a shipped adapter's short name (`mtu.shipped.SHORT_NAMES`); an existing folder of that name
                wins.
            torch_dtype: dtype for the loaded weights.
            base: The base pipeline folder, hub id or short name; default the pipeline folder itself, or the one
                the adapter records.
            scheduler: A diffusers scheduler to use instead of the base's.
            variant, safety_checker: As `from_base`.

        A pipeline folder's sampling defaults (model_index.json's `sampling_defaults`) or an adapter folder's
        `sampling.json` replace the paper's guidance scales for the tasks they name (the scales the adapter was
        measured with); arguments given to a call still win.
        """
        saved = saved_pipeline_folder(name_or_path)
        adapter = saved / "unet" if saved is not None else name_or_path
        record = read_adapter_config(adapter)  # raises before any weights load
        family = adapter_family(record)
        if family != cls.family:
            other = {"sd": "MTUPipeline", "sdxl": "MTUStableDiffusionXLPipeline"}[family]
            raise InputError(f"the adapter {str(name_or_path)!r} is for a {family!r} base, which {cls.__name__} "
                             f"cannot run; use {other}.")
        specs = [TaskSpec.from_dict(data) for data in record["tasks"].values()]
        if saved is not None:
            sampling, recorded = saved_sampling(saved, family, specs), str(saved)
        else:
            sampling, recorded = read_sampling(adapter_directory(adapter), family, specs), record["base"].get(
                "name_or_path")
            if recorded:  # an older adapter's relative path: from here, or from a folder above the adapter
                recorded = find_recorded_base(recorded, adapter_directory(adapter))
            if base is None and variant is None:  # the recorded base is read with the variant it was made from
                variant = record["base"].get("variant")
        base = base or recorded
        if not base:
            raise InputError(f"the adapter {str(name_or_path)!r} records no base pipeline; pass `base`.")
        return cls.from_base(base, adapter, torch_dtype=torch_dtype, scheduler=scheduler, sampling_defaults=sampling,
                             variant=variant, safety_checker=safety_checker)

    def save_pretrained(self, save_directory, safe_serialization: bool = True, *, overwrite: bool = False) -> Path:
        """Writes a folder `from_pretrained` reloads to the same pipeline (same seed, same image), needing nothing
        else: the components as diffusers writes them, and in unet/ the base UNet (read again, as stored, from the
        base the MTU model records: where `from_base` loaded it, with its variant) beside the MTU adapter
        (`MTUModel.save_pretrained`). Sampling defaults go to model_index.json. Weights keep their dtypes: reload
        a half-precision pipeline with `torch_dtype`.

        Diffusers loads it too, with the two one-line modules it writes (they import the installed mtu):
        `DiffusionPipeline.from_pretrained(save_directory, trust_remote_code=True)`.

        Args:
            save_directory: A new or empty folder, or one an earlier `save_pretrained` wrote; staged and moved
                into place, so a failed save leaves nothing half-written.
            safe_serialization: Must be True: mtu writes weights only as safetensors.
            overwrite: Write into a folder holding other files, replacing only the files this writes.
        Returns:
            The folder, resolved.
        """
        if safe_serialization is not True:
            raise InputError(f"`safe_serialization` must be True: mtu writes weights only as safetensors, got "
                             f"{safe_serialization!r}.")
        if not isinstance(self.unet, MTUModel):
            raise InputError(f"save_pretrained writes pipelines of an MTUModel; this pipeline runs a trained "
                             f"{type(self.unet).__name__} baseline: keep its run folder and load it with "
                             f"`from_base(base, run_folder)`.")
        location, variant = self.unet.base_info.get("name_or_path"), self.unet.base_info.get("variant")
        if not location:
            raise InputError("save_pretrained needs the base UNet, but this pipeline's MTU model records no base; "
                             "load it with `mtu.load_mtu(adapter, base=...)` or build the pipeline with `from_base`.")
        output = claim_save_directory(save_directory, overwrite, {"base": location})
        base_unet = load_base_unet(location, variant=variant)  # as stored: the bytes the fingerprints are of
        check_same_base(self.unet, base_unet, location)
        return output.write(lambda folder: self._write_folder(folder, base_unet))

    def _write_folder(self, folder: Path, base_unet) -> None:
        for name, component in self.components.items():
            if name != "unet" and component is not None:
                accepted = inspect.signature(component.save_pretrained).parameters
                component.save_pretrained(folder / name, **(
                    {"safe_serialization": True} if "safe_serialization" in accepted else {}))
        base_unet.save_pretrained(folder / "unet", safe_serialization=True)
        self.unet.save_pretrained(folder / "unet")
        # The package's public names, not the modules defining them: saved folders outlive a file's move.
        (folder / f"{PIPELINE_MODULE}.py").write_text(MODULE_TEXT.format(name=type(self).__name__))
        (folder / "unet" / f"{UNET_MODULE}.py").write_text(MODULE_TEXT.format(name=SavedMTUModel.__name__))
        index = json.loads(self.to_json_string())
        index.pop("_name_or_path", None)
        index["_class_name"] = [PIPELINE_MODULE, type(self).__name__]
        index["unet"] = [UNET_MODULE, SavedMTUModel.__name__]
        (folder / "model_index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")

    def set_sampling_defaults(self, sampling_defaults: dict) -> None:
        """Makes `task_defaults` (what a call's unset scales take) use these scales instead of the paper's.

        Args:
            sampling_defaults: {task: {"guidance_scale": x, "image_guidance_scale": y}}, every field optional but
                one the task's guidance uses; {} restores the paper's defaults.
        """
        self.sampling_overrides = check_sampling(sampling_defaults, self.family, self.unet.task_specs,
                                                 "`sampling_defaults`")
        self.register_to_config(sampling_defaults=dict(self.sampling_overrides) or None)

    def task_defaults(self, task: str) -> TaskDefaults:
        """The sampling defaults of `task`: the paper's (Appendix A.2) with this pipeline's sampling overrides
        (an adapter folder's `sampling.json`); `.call_kwargs()` suits the folded pipeline."""
        spec = self.unet.task_specs[self.unet.task_index(task)]
        return with_overrides(task_defaults(self.family, spec), self.sampling_overrides.get(spec.name))

    def fold(self, task: str) -> DiffusionPipeline:
        """`task` as a stock diffusers pipeline with `unet.fold(task)`, sharing this pipeline's VAE, text encoder(s)
        (the task's own where it has one) and tokenizer(s), and a scheduler of the same class and config.

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
        components["text_encoder"] = self.text_encoder_for(task)  # the task's own, where it has one
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
        positive = self.encode_text(plan.prompts, device, task=plan.spec.name)
        sides = {"prompt": positive}
        if plan.guidance != "none":
            sides["negative"] = self.encode_negative(plan.negative_prompts, positive, device, plan.spec.name)
        return {key: torch.cat([expand_batch(sides[side][key], plan.batch_size, plan.num_images_per_prompt)
                                for side, _ in BRANCHES[plan.guidance]]) for key in positive}

    def encode_conditions(self, plan: CallPlan, image, mask_image, device, dtype) -> torch.Tensor | None:
        """The task's image condition channels (`mtu.conditioning`) of every branch, stacked."""
        if not plan.spec.image_inputs:
            return None
        pixels = image_to_tensor(image, self.vae_scale_factor, plan.image_size)
        if (pixels.shape[-2], pixels.shape[-1]) != (plan.height, plan.width):  # only SR: the LR image, resized up
            pixels = upsample_for_sr(pixels, (plan.height, plan.width))
        mask = mask_to_tensor(mask_image, plan.image_size).to(device) if mask_image is not None else None
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

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """(N, C, h, w) latents -> (N, 3, H, W) images in [-1, 1] (SDXL's VAE with its latents mean and std)."""
        config = self.vae.config
        mean, std = getattr(config, "latents_mean", None), getattr(config, "latents_std", None)
        if mean is not None and std is not None:
            shape = (1, -1, 1, 1)
            mean = torch.tensor(mean).view(shape).to(latents)
            latents = latents * torch.tensor(std).view(shape).to(latents) / config.scaling_factor + mean
        else:
            latents = latents / config.scaling_factor
        with self._vae_upcast() as vae_dtype:
            return self.vae.decode(latents.to(vae_dtype), return_dict=False)[0]

    def decode(self, latents: torch.Tensor, output_type: str):
        """The images of `latents` as `output_type`, without the safety checker (the call runs it)."""
        if output_type == "latent":
            return latents
        return self.image_processor.postprocess(self.decode_latents(latents), output_type=output_type)

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
            image: The task's input image(s): PIL of any mode (converted to RGB), numpy (H, W, C) in [0, 1], torch
                (B, C, H, W) in [-1, 1], or lists of them (PIL images of mixed kinds, JPEG and PNG, too). A size
                that is not a multiple of 8 is rounded down, with a warning, as diffusers does. For sr the low-resolution image: the output is `sr_scale` (2) times larger, and
                the image is resized bicubically to the output size before encoding, as SR conditions are made.
            mask_image: For mask tasks (inpaint_mask): one channel (a PIL image of any mode is converted to grey),
                1 (white) where the model fills in; the size of `image`.
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
            return_dict: Return an output object (`StableDiffusionPipelineOutput` with `nsfw_content_detected`
                for SD, `ImagePipelineOutput` for SDXL); else a tuple, as the diffusers pipeline of the family.
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

        # 6. Decode, and run the safety checker (SD bases that have one), as StableDiffusionPipeline does
        flagged = None
        if output_type == "latent":
            images = latents
        else:
            pixels, flagged = self.run_safety_checker(self.decode_latents(latents), device, dtype)
            images = self.image_processor.postprocess(
                pixels, output_type=output_type, do_denormalize=None if flagged is None else [not f for f in flagged])
        self.maybe_free_model_hooks()
        return self.make_output(images, flagged, return_dict)
