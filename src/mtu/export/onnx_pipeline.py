"""One task of an SD 1.x/2.x MTU pipeline as ONNX models, and `OnnxTaskPipeline`, which samples it in onnxruntime.

The folder (`write_onnx_pipeline`), laid out as diffusers' ONNX Stable Diffusion folders:
    text_encoder/model.onnx   input_ids (B, L) int64 -> last_hidden_state (B, L, D)
    unet/model.onnx           the folded task UNet: sample, timestep, encoder_hidden_states -> out_sample
    vae_decoder/model.onnx    latent_sample -> sample (images in [-1, 1])
    vae_encoder/model.onnx    sample -> latent_mode (tasks with an image input only)
    tokenizer/, scheduler/    as diffusers saves them
    mtu_onnx.json             the task, its sampling defaults, and what the loop needs of the VAE and UNet
`OnnxTaskPipeline` runs the steps of `MTUPipeline.__call__` (the same checks, guidance, scheduler and noise draws)
with onnxruntime in place of the PyTorch models. The base's safety checker is not exported.
"""

from __future__ import annotations

import copy
import inspect
import json
from importlib.metadata import version
from pathlib import Path

import diffusers
import numpy as np
import torch
import torch.nn.functional as F
from diffusers.image_processor import VaeImageProcessor
from diffusers.pipelines.pipeline_utils import ImagePipelineOutput
from diffusers.utils.torch_utils import randn_tensor
from transformers import CLIPTokenizer

from ..conditioning import tokenize_prompts, upsample_for_sr
from ..errors import InputError
from ..pipelines.checks import check_call_inputs, check_latents
from ..pipelines.common import BRANCHES, check_finite_latents, combine_guidance
from ..pipelines.inputs import expand_batch, image_to_tensor, mask_to_tensor
from ..upcycling.tasks import TaskSpec
from .onnx_export import (export_text_encoder, export_unet, export_vae_decoder, export_vae_encoder,
                          latent_multiple, session)

RECORD_NAME, FORMAT = "mtu_onnx.json", "mtu-onnx-task"
TORCH_DTYPES = {"fp32": torch.float32, "fp16": torch.float16}
NUMPY_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64}


def _cast(module: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """`module` in `dtype`: itself when it already is, else a copy (the pipeline's own module is left as it is)."""
    current = next(module.parameters()).dtype
    return module if current == dtype else copy.deepcopy(module).to(dtype)


def write_onnx_pipeline(pipe, task: str, folder, dtype: str = "fp32") -> dict:
    """Writes `task` of the SD 1.x/2.x MTU pipeline `pipe` as ONNX models into `folder` (see the module docstring);
    returns the record written to `mtu_onnx.json`. In fp16 a VAE whose config asks for it (`force_upcast`) stays
    fp32, as the pipelines run it."""
    if pipe.family != "sd":
        raise InputError("the onnx format takes SD 1.x/2.x tasks only (SDXL's two text encoders and added "
                         "conditions have no ONNX sampling loop here); use --format diffusers.")
    spec = pipe.unet.task_specs[pipe.unet.task_index(task)]
    torch_dtype = TORCH_DTYPES[dtype]
    vae_dtype = torch.float32 if dtype == "fp16" and pipe.vae.config.get("force_upcast", False) else torch_dtype
    folder, vae = Path(folder), _cast(pipe.vae, vae_dtype)
    unet = pipe.unet.fold(task).eval()
    if unet.dtype != torch_dtype:
        unet.to(torch_dtype)
    text_encoder = _cast(pipe.text_encoder_for(task), torch_dtype)  # the task's own, where it has one
    parts = {"text_encoder": export_text_encoder(text_encoder, folder / "text_encoder",
                                                 pipe.tokenizer.model_max_length),
             "unet": export_unet(unet, folder / "unet", text_length=pipe.tokenizer.model_max_length),
             "vae_decoder": export_vae_decoder(vae, folder / "vae_decoder")}
    if spec.image_inputs:
        parts["vae_encoder"] = export_vae_encoder(vae, folder / "vae_encoder")
    pipe.tokenizer.save_pretrained(folder / "tokenizer")
    pipe.scheduler.save_pretrained(folder / "scheduler")
    record = {
        "format": FORMAT, "format_version": 1, "mtu_version": version("mtu-diffusion"),
        "task": spec.name, "spec": spec.to_dict(), "dtype": dtype,
        "sampling_defaults": dict(pipe.sampling_overrides.get(spec.name, {})),
        "parts": {name: path.relative_to(folder).as_posix() for name, path in parts.items()},
        "scheduler": type(pipe.scheduler).__name__,
        "unet": {"in_channels": unet.config.in_channels, "sample_size": unet.config.sample_size,
                 "latent_multiple": latent_multiple(unet)},
        "vae": {"scale_factor": pipe.vae_scale_factor, "scaling_factor": pipe.vae.config.scaling_factor,
                "latent_channels": pipe.vae.config.latent_channels},
        "safety_checker": "not exported" if getattr(pipe, "safety_checker", None) is not None else None,
    }
    (folder / RECORD_NAME).write_text(json.dumps(record, indent=2) + "\n")
    return record


def _run(part, **arrays) -> torch.Tensor:
    """Runs an onnxruntime session on torch tensors (cast to the dtypes the graph takes); float32 out."""
    feed = {arg.name: arrays[arg.name].detach().cpu().numpy().astype(NUMPY_TYPES[arg.type])
            for arg in part.get_inputs()}
    return torch.from_numpy(part.run(None, feed)[0]).float()


class OnnxTaskPipeline:
    """Samples the task of a `write_onnx_pipeline` folder with onnxruntime, as `MTUPipeline` samples it.

    Args:
        folder: The folder (`mtu export ... --format onnx`).
        providers: onnxruntime execution providers (default the CPU's).
        threads: onnxruntime intra-op threads (default onnxruntime's choice).
    """

    def __init__(self, folder, providers: list[str] | None = None, threads: int | None = None):
        folder = Path(folder)
        record_path = folder / RECORD_NAME
        if not record_path.is_file():
            raise InputError(f"{str(folder)!r} is not an ONNX task folder (no {RECORD_NAME}); write one with "
                             f"`mtu export DIR --task TASK --format onnx --out {folder}`.")
        self.record = record = json.loads(record_path.read_text())
        self.spec = TaskSpec.from_dict(record["spec"])
        self.sessions = {name: session(folder / path, providers, threads) for name, path in record["parts"].items()}
        self.tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer", local_files_only=True)
        scheduler_class = getattr(diffusers, str(record["scheduler"]), None)
        if not (isinstance(scheduler_class, type) and issubclass(scheduler_class, diffusers.SchedulerMixin)):
            raise InputError(f"{str(record_path)!r} names scheduler {record['scheduler']!r}, which is not a diffusers "
                             f"scheduler class.")
        self.scheduler = scheduler_class.from_pretrained(folder / "scheduler")
        self.vae_scale_factor = record["vae"]["scale_factor"]
        self.image_processor = VaeImageProcessor(vae_scale_factor=self.vae_scale_factor)

    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        """(B, L, D) last hidden states, as `MTUPipeline.encode_text`."""
        ids = tokenize_prompts(self.tokenizer, prompts).input_ids
        return _run(self.sessions["text_encoder"], input_ids=ids)

    def encode_branches(self, plan) -> torch.Tensor:
        """The text conditioning of every guidance branch, stacked, as `MTUPipelineBase.encode_branches`."""
        sides = {"prompt": self.encode_text(plan.prompts)}
        if plan.guidance != "none":
            sides["negative"] = self.encode_text(plan.negative_prompts or [""] * len(plan.prompts))
        return torch.cat([expand_batch(sides[side], plan.batch_size, plan.num_images_per_prompt)
                          for side, _ in BRANCHES[plan.guidance]])

    def _encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        return _run(self.sessions["vae_encoder"], sample=pixels)

    def encode_conditions(self, plan, image, mask_image) -> torch.Tensor | None:
        """The task's condition channels of every branch (zeros in the unconditional ones), as
        `MTUPipelineBase.encode_conditions` with `mtu.conditioning.condition_channels`."""
        if not self.spec.image_inputs:
            return None
        pixels = image_to_tensor(image, self.vae_scale_factor, plan.image_size)
        if (pixels.shape[-2], pixels.shape[-1]) != (plan.height, plan.width):  # only SR: the LR image, resized up
            pixels = upsample_for_sr(pixels, (plan.height, plan.width))
        mask = mask_to_tensor(mask_image, plan.image_size) if mask_image is not None else None
        if mask is not None and mask.shape[0] == 1 and pixels.shape[0] > 1:
            mask = mask.expand(pixels.shape[0], -1, -1, -1)
        size = (pixels.shape[-2] // self.vae_scale_factor, pixels.shape[-1] // self.vae_scale_factor)
        parts = []
        for item in self.spec.image_inputs:
            if item == "image":
                parts.append(self._encode_image(pixels))
            elif item == "masked_image":
                masked = self._encode_image(pixels * (mask < 0.5).to(pixels.dtype))
                parts.append(masked * self.record["vae"]["scaling_factor"])
            elif item == "mask":
                parts.append(F.interpolate(mask.to(pixels.dtype), size=size))
            else:
                raise InputError(f"unsupported conditioning input {item!r}; supported: image, masked_image, mask.")
        channels = expand_batch(torch.cat(parts, dim=1), plan.batch_size, plan.num_images_per_prompt)
        return torch.cat([channels if side == "image" else torch.zeros_like(channels)
                          for _, side in BRANCHES[plan.guidance]])

    def check_inputs(self, **kwargs):
        """`MTUPipeline.check_inputs` for this task, plus the latent size the exported UNet takes."""
        size = self.record["unet"]["sample_size"] * self.vae_scale_factor
        plan = check_call_inputs([self.spec], "sd", kwargs.pop("task"), default_size=(size, size),
                                 sampling_overrides={self.spec.name: self.record["sampling_defaults"]}, **kwargs)
        multiple = self.record["unet"]["latent_multiple"] * self.vae_scale_factor
        for name, value in (("height", plan.height), ("width", plan.width)):
            if value % multiple:
                raise InputError(f"`{name}` must be a multiple of {multiple} for this exported UNet, got {value}.")
        return plan

    @torch.no_grad()
    def __call__(self, prompt=None, image=None, mask_image=None, height=None, width=None, num_inference_steps=None,
                 guidance_scale=None, image_guidance_scale=None, negative_prompt=None, num_images_per_prompt=1,
                 generator=None, latents=None, output_type="pil") -> ImagePipelineOutput:
        """Samples the folder's task; the arguments are `MTUPipeline.__call__`'s (without `task`)."""
        # 1. Check every argument and fill in the task's defaults
        plan = self.check_inputs(task=self.spec.name, prompt=prompt, image=image, mask_image=mask_image,
                                 height=height, width=width, num_inference_steps=num_inference_steps,
                                 guidance_scale=guidance_scale, image_guidance_scale=image_guidance_scale,
                                 negative_prompt=negative_prompt, num_images_per_prompt=num_images_per_prompt,
                                 generator=generator, output_type=output_type)
        shape = (plan.num_samples, self.record["vae"]["latent_channels"], plan.height // self.vae_scale_factor,
                 plan.width // self.vae_scale_factor)
        check_latents(latents, shape)
        # 2-3. Text of every guidance branch; the task's image conditions
        encoder_hidden_states = self.encode_branches(plan)
        conditions = self.encode_conditions(plan, image, mask_image)
        # 4. Timesteps and initial noise, drawn as the PyTorch pipeline draws them
        self.scheduler.set_timesteps(plan.num_inference_steps)
        if latents is None:
            latents = randn_tensor(shape, generator=generator, dtype=torch.float32)
        latents = latents.float() * self.scheduler.init_noise_sigma
        accepted = set(inspect.signature(self.scheduler.step).parameters)
        step_kwargs = {k: v for k, v in (("eta", 0.0), ("generator", generator)) if k in accepted}
        branches = len(BRANCHES[plan.guidance])
        # 5. Denoise: all branches in one UNet batch
        for index, t in enumerate(self.scheduler.timesteps):
            model_input = self.scheduler.scale_model_input(torch.cat([latents] * branches), t)
            if conditions is not None:
                model_input = torch.cat([model_input, conditions], dim=1)  # (N, 4 + extra, h, w)
            timestep = torch.full((model_input.shape[0],), float(t))
            noise_pred = _run(self.sessions["unet"], sample=model_input, timestep=timestep,
                              encoder_hidden_states=encoder_hidden_states)
            noise_pred = combine_guidance(noise_pred, plan.guidance, plan.guidance_scale, plan.image_guidance_scale)
            latents = self.scheduler.step(noise_pred, t, latents, **step_kwargs, return_dict=False)[0]
            check_finite_latents(latents, plan, index, len(self.scheduler.timesteps))
        # 6. Decode
        if output_type == "latent":
            return ImagePipelineOutput(images=latents)
        pixels = _run(self.sessions["vae_decoder"], latent_sample=latents / self.record["vae"]["scaling_factor"])
        return ImagePipelineOutput(images=self.image_processor.postprocess(pixels, output_type=output_type))

