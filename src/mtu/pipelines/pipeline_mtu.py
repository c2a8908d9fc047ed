"""`MTUPipeline`: one Stable Diffusion 1.x/2.x pipeline for every task of an MTU model (Sec. 5, Appendix A.2)."""

from __future__ import annotations

import torch
from diffusers import (
    AutoencoderKL,
    StableDiffusionInpaintPipeline,
    StableDiffusionInstructPix2PixPipeline,
    StableDiffusionPipeline,
)
from transformers import CLIPTextModel, CLIPTokenizer

from ..conditioning import tokenize_prompts
from ..upcycling.model import MTUModel
from .common import MTUPipelineBase, check_unet


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
    """

    model_cpu_offload_seq = "text_encoder->unet->vae"
    family = "sd"
    base_component_names = ("vae", "text_encoder", "tokenizer", "scheduler")
    folded_pipeline_classes = {"text": StableDiffusionPipeline, "image": StableDiffusionInstructPix2PixPipeline,
                               "mask": StableDiffusionInpaintPipeline}

    def __init__(self, vae: AutoencoderKL, text_encoder: CLIPTextModel, tokenizer: CLIPTokenizer, unet: MTUModel,
                 scheduler):
        super().__init__()
        check_unet(unet, type(self).__name__, sdxl=False)
        self.register_modules(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                              scheduler=scheduler)
        self._setup_processors()

    def encode_text(self, prompts: list[str], device, name: str = "prompt") -> dict[str, torch.Tensor]:
        """(B, 77, D) last hidden states of the text encoder, as `StableDiffusionPipeline.encode_prompt`; a prompt
        longer than the encoder takes is cut with a warning (`mtu.conditioning.tokenize_prompts`)."""
        tokens = tokenize_prompts(self.tokenizer, prompts, name)
        attention_mask = None
        if getattr(self.text_encoder.config, "use_attention_mask", False):
            attention_mask = tokens.attention_mask.to(device)
        hidden_states = self.text_encoder(tokens.input_ids.to(device), attention_mask=attention_mask)[0]
        return {"encoder_hidden_states": hidden_states.to(self.text_encoder.dtype)}

    def folded_components(self) -> dict:
        return {"vae": self.vae, "text_encoder": self.text_encoder, "tokenizer": self.tokenizer,
                "scheduler": self.scheduler, "safety_checker": None, "feature_extractor": None,
                "requires_safety_checker": False}
