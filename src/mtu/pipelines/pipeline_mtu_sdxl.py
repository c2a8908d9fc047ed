"""`MTUStableDiffusionXLPipeline`: every task of an upcycled SDXL UNet in one pipeline (Sec. 5, Appendix A.2).

Prompt encoding, the pooled text embeddings and `add_time_ids` follow diffusers' `StableDiffusionXLPipeline`;
image tasks follow `StableDiffusionXLInstructPix2PixPipeline` (unscaled image latents, zero negative prompt
embeddings when `negative_prompt` is None and `force_zeros_for_empty_prompt`, the same time ids in all branches).
With no `negative_prompt` the negative branch is the one the adapter's training used for dropped text (recorded in
the adapter as "unconditional_text"; see `force_zeros_for_empty_prompt`).
"""

from __future__ import annotations

import torch
from diffusers import (
    AutoencoderKL,
    StableDiffusionXLInpaintPipeline,
    StableDiffusionXLInstructPix2PixPipeline,
    StableDiffusionXLPipeline,
)
from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from ..conditioning import tokenize_prompts
from ..errors import InputError
from ..upcycling.model import MTUModel
from .checks import CallPlan
from .common import MTUPipelineBase, check_unet

NUM_TIME_IDS = 6  # original (h, w), crop top-left (y, x), target (h, w)


class MTUStableDiffusionXLPipeline(MTUPipelineBase):
    """Text-to-image, editing, super-resolution and inpainting with one upcycled SDXL UNet.

    Called like `MTUPipeline`, with the SDXL defaults of `TASK_DEFAULTS["sdxl"]` (50 steps; t2i guidance 5.0;
    edit 10.0 / 1.5; inpaint 4.0 / 1.5; sr without guidance).

    Args:
        vae: The base's `AutoencoderKL`.
        text_encoder: The base's first text encoder (`CLIPTextModel`).
        text_encoder_2: The base's second text encoder, with projection (`CLIPTextModelWithProjection`).
        tokenizer: The first encoder's `CLIPTokenizer`.
        tokenizer_2: The second encoder's `CLIPTokenizer`.
        unet: The `MTUModel` over an SDXL UNet (`addition_embed_type="text_time"`).
        scheduler: Any diffusers scheduler.
        force_zeros_for_empty_prompt: Zero negative embeddings (hidden states and pooled) when no
            `negative_prompt` is given, as SDXL's pipelines; else the encoded "". None (default): as the adapter's
            training encoded dropped text (`unet.unconditional_text`, recorded in the adapter by `mtu train`:
            "zeros" or "empty_prompt"), so the unconditional branch is the one the adapter was trained with; an
            adapter without that record (older adapters, a model upcycled in code) gets True, SDXL's default.
            `from_base` / `from_pretrained` pass the base's model_index.json value only for such an adapter.
        sampling_defaults: {task: {"guidance_scale", "image_guidance_scale"}} replacing the paper's defaults
            (`set_sampling_defaults`).
    """

    model_cpu_offload_seq = "text_encoder->text_encoder_2->unet->vae"
    family = "sdxl"
    base_component_names = ("vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "scheduler")
    folded_pipeline_classes = {"text": StableDiffusionXLPipeline, "image": StableDiffusionXLInstructPix2PixPipeline,
                               "mask": StableDiffusionXLInpaintPipeline}

    def __init__(self, vae: AutoencoderKL, text_encoder: CLIPTextModel, text_encoder_2: CLIPTextModelWithProjection,
                 tokenizer: CLIPTokenizer, tokenizer_2: CLIPTokenizer, unet: MTUModel, scheduler,
                 force_zeros_for_empty_prompt: bool | None = None, sampling_defaults: dict | None = None):
        super().__init__()
        check_unet(unet, type(self).__name__, sdxl=True)
        if force_zeros_for_empty_prompt is None:
            force_zeros_for_empty_prompt = getattr(unet, "unconditional_text", None) in (None, "zeros")
        self.register_modules(vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2,
                              tokenizer=tokenizer, tokenizer_2=tokenizer_2, unet=unet, scheduler=scheduler)
        self.register_to_config(force_zeros_for_empty_prompt=force_zeros_for_empty_prompt)
        self._setup(sampling_defaults)
        config = unet.unet.config
        expected = unet.unet.add_embedding.linear_1.in_features
        passed = config.addition_time_embed_dim * NUM_TIME_IDS + text_encoder_2.config.projection_dim
        if expected != passed:
            raise InputError(f"the UNet's added embedding takes {expected} features, but `text_encoder_2` "
                             f"(projection_dim {text_encoder_2.config.projection_dim}) and {NUM_TIME_IDS} time ids "
                             f"give {passed}; the components are from different models.")

    @classmethod
    def _init_kwargs_from_index(cls, index: dict, unet: MTUModel) -> dict:
        """The base's `force_zeros_for_empty_prompt`, unless the adapter records how it was trained (then None:
        `__init__` follows the record)."""
        if getattr(unet, "unconditional_text", None) is not None:
            return {}
        return {"force_zeros_for_empty_prompt": index.get("force_zeros_for_empty_prompt", True)}

    def encode_text(self, prompts: list[str], device, name: str = "prompt",
                    task: str | None = None) -> dict[str, torch.Tensor]:
        """Both encoders' penultimate hidden states, concatenated (B, 77, D1 + D2), and the pooled (B, P); a prompt
        longer than the encoders take is cut with one warning (`mtu.conditioning.tokenize_prompts`)."""
        hidden_states, pooled = [], None
        for tokenizer, encoder in ((self.tokenizer, self.text_encoder), (self.tokenizer_2, self.text_encoder_2)):
            ids = tokenize_prompts(tokenizer, prompts, name, warn=tokenizer is self.tokenizer).input_ids
            output = encoder(ids.to(device), output_hidden_states=True)
            if pooled is None and output[0].ndim == 2:  # the projection model's text_embeds
                pooled = output[0]
            hidden_states.append(output.hidden_states[-2])  # SDXL conditions on the penultimate layer
        dtype = self.text_encoder_2.dtype
        return {"encoder_hidden_states": torch.cat(hidden_states, dim=-1).to(dtype), "text_embeds": pooled.to(dtype)}

    def encode_negative(self, negative_prompts: list[str] | None, positive: dict, device,
                        task: str | None = None) -> dict:
        if negative_prompts is None and self.config.force_zeros_for_empty_prompt:
            return {key: torch.zeros_like(value) for key, value in positive.items()}
        return super().encode_negative(negative_prompts, positive, device, task)

    def added_cond_kwargs(self, text: dict, plan: CallPlan) -> dict:
        """Pooled text per branch and the time ids (original = target = output size, no crop) in every branch."""
        time_ids = torch.tensor([[plan.height, plan.width, 0, 0, plan.height, plan.width]],
                                dtype=text["text_embeds"].dtype, device=text["text_embeds"].device)
        return {"text_embeds": text["text_embeds"], "time_ids": time_ids.repeat(text["text_embeds"].shape[0], 1)}

    def folded_components(self) -> dict:
        return {"vae": self.vae, "text_encoder": self.text_encoder, "text_encoder_2": self.text_encoder_2,
                "tokenizer": self.tokenizer, "tokenizer_2": self.tokenizer_2, "scheduler": self.scheduler,
                "force_zeros_for_empty_prompt": self.config.force_zeros_for_empty_prompt, "add_watermarker": False}
