"""`MTUPipeline`: one Stable Diffusion 1.x/2.x pipeline for every task of an MTU model (Sec. 5, Appendix A.2)."""

from __future__ import annotations

import warnings

import torch
from diffusers import (
    AutoencoderKL,
    StableDiffusionInpaintPipeline,
    StableDiffusionInstructPix2PixPipeline,
    StableDiffusionPipeline,
)
from diffusers.pipelines.stable_diffusion import StableDiffusionPipelineOutput
from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
from transformers import CLIPImageProcessor, CLIPTextModel, CLIPTokenizer

from ..conditioning import tokenize_prompts
from ..errors import InputError
from ..upcycling.model import MTUModel
from .common import FROM_BASE, MTUPipelineBase, check_unet

SAFETY_COMPONENTS = ("safety_checker", "feature_extractor")


class SafetyCheckerDisabledWarning(UserWarning):
    """A base that requires its safety checker runs without it (`safety_checker=None`); diffusers' warning."""


class MTUPipeline(MTUPipelineBase):
    """Text-to-image, editing, super-resolution and inpainting with one upcycled Stable Diffusion 1.x/2.x UNet.

    `pipe(task, prompt, image=...)` samples `task` with the paper's defaults (`TASK_DEFAULTS["sd"]`): t2i with
    classifier-free guidance, tasks with an image condition (edit, inpaint, sr, user tasks) with InstructPix2Pix
    dual guidance, sr without guidance from the empty prompt and a low-resolution `image` (the output is
    `sr_scale` = 2 times larger), inpaint_mask with text guidance over [latents, mask, masked-image latents].
    `pipe.fold(task)` gives the same task as a stock diffusers pipeline.

    Args:
        vae: The base's `AutoencoderKL`.
        text_encoder: The base's `CLIPTextModel`.
        tokenizer: The base's `CLIPTokenizer`.
        unet: The `MTUModel`.
        scheduler: Any diffusers scheduler.
        safety_checker: The base's `StableDiffusionSafetyChecker`, run on every decoded output as
            `StableDiffusionPipeline` runs it (flagged images black, `nsfw_content_detected` in the output); None
            runs without one.
        feature_extractor: The `CLIPImageProcessor` that prepares images for the safety checker.
        requires_safety_checker: Whether the base requires its safety checker (model_index.json's value): running
            without it then warns, as diffusers does.
        sampling_defaults: {task: {"guidance_scale", "image_guidance_scale"}} replacing the paper's defaults
            (`set_sampling_defaults`).
    """

    model_cpu_offload_seq = "text_encoder->unet->vae"
    _optional_components = list(SAFETY_COMPONENTS)
    _exclude_from_cpu_offload = ["safety_checker"]
    family = "sd"
    base_component_names = ("vae", "text_encoder", "tokenizer", "scheduler")
    folded_pipeline_classes = {"text": StableDiffusionPipeline, "image": StableDiffusionInstructPix2PixPipeline,
                               "mask": StableDiffusionInpaintPipeline}

    def __init__(self, vae: AutoencoderKL, text_encoder: CLIPTextModel, tokenizer: CLIPTokenizer, unet: MTUModel,
                 scheduler, safety_checker: StableDiffusionSafetyChecker | None = None,
                 feature_extractor: CLIPImageProcessor | None = None, requires_safety_checker: bool = False,
                 sampling_defaults: dict | None = None):
        super().__init__()
        check_unet(unet, type(self).__name__, sdxl=False)
        if safety_checker is None and requires_safety_checker:  # diffusers' StableDiffusionPipeline warning
            warnings.warn(f"You have disabled the safety checker for {type(self).__name__} by passing "
                          f"`safety_checker=None`. Ensure that you abide to the conditions of the Stable Diffusion "
                          f"license and do not expose unfiltered results in services or applications open to the "
                          f"public; see https://github.com/huggingface/diffusers/pull/254 .",
                          SafetyCheckerDisabledWarning, stacklevel=2)
        if safety_checker is not None and feature_extractor is None:
            raise InputError(f"`feature_extractor` is required with a `safety_checker` (it prepares the images the "
                             f"checker reads); pass `safety_checker=None` to run {type(self).__name__} without one.")
        self.register_modules(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                              scheduler=scheduler, safety_checker=safety_checker, feature_extractor=feature_extractor)
        self.register_to_config(requires_safety_checker=bool(requires_safety_checker))
        self._setup(sampling_defaults)

    @classmethod
    def _init_kwargs_from_index(cls, index: dict, unet: MTUModel) -> dict:
        """The base's `requires_safety_checker` (diffusers' default True where model_index.json has none)."""
        return {"requires_safety_checker": bool(index.get("requires_safety_checker", True))}

    @classmethod
    def _optional_from_base(cls, safety_checker) -> tuple[tuple[str, ...], dict]:
        """The base's safety checker and feature extractor by default; with `safety_checker` given (None or a
        checker), only the feature extractor, as diffusers' `from_pretrained(..., safety_checker=...)`."""
        if safety_checker is FROM_BASE:
            return SAFETY_COMPONENTS, {}
        if safety_checker is not None and not isinstance(safety_checker, StableDiffusionSafetyChecker):
            raise InputError(f"`safety_checker` must be None or a StableDiffusionSafetyChecker, got "
                             f"{type(safety_checker).__name__}.")
        return ("feature_extractor",), {"safety_checker": safety_checker}

    def encode_text(self, prompts: list[str], device, name: str = "prompt",
                    task: str | None = None) -> dict[str, torch.Tensor]:
        """(B, 77, D) last hidden states of the text encoder (`task`'s own where it has one), as
        `StableDiffusionPipeline.encode_prompt`; a prompt longer than the encoder takes is cut with a warning
        (`mtu.conditioning.tokenize_prompts`)."""
        encoder = self.text_encoder_for(task)
        tokens = tokenize_prompts(self.tokenizer, prompts, name)
        attention_mask = None
        if getattr(encoder.config, "use_attention_mask", False):
            attention_mask = tokens.attention_mask.to(device)
        hidden_states = encoder(tokens.input_ids.to(device), attention_mask=attention_mask)[0]
        return {"encoder_hidden_states": hidden_states.to(encoder.dtype)}

    def run_safety_checker(self, image: torch.Tensor, device, dtype) -> tuple[torch.Tensor, list[bool] | None]:
        """(images with the flagged ones black, flagged per image), as `StableDiffusionPipeline.run_safety_checker`;
        (image, None) without a safety checker."""
        if self.safety_checker is None:
            return image, None
        pil_images = self.image_processor.postprocess(image, output_type="pil")
        clip_input = self.feature_extractor(pil_images, return_tensors="pt").pixel_values.to(device, dtype)
        return self.safety_checker(images=image, clip_input=clip_input)

    def make_output(self, images, flagged: list[bool] | None, return_dict: bool):
        """`StableDiffusionPipelineOutput(images, nsfw_content_detected)`, or the tuple (images, flagged)."""
        return StableDiffusionPipelineOutput(images, flagged) if return_dict else (images, flagged)

    def folded_components(self) -> dict:
        return {"vae": self.vae, "text_encoder": self.text_encoder, "tokenizer": self.tokenizer,
                "scheduler": self.scheduler, "safety_checker": self.safety_checker,
                "feature_extractor": self.feature_extractor,
                "requires_safety_checker": self.config.requires_safety_checker}
