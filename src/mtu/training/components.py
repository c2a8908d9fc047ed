"""The frozen parts of a Stable Diffusion pipeline that training needs: VAE, text encoder(s), noise schedule."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDPMScheduler, DiffusionPipeline
from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from ..conditioning import PromptTruncatedWarning, tokenize_prompts, truncated_tokens
from ..errors import InputError
from ..shipped import resolve, short_names
from ..upcycling.bases import check_base_spec, hub_revision_kwargs, load_base_unet, looks_like_hub_id


@dataclass
class FrozenParts:
    """VAE, text encoder(s) and tokenizer(s) of the base, plus its training noise schedule. SDXL has two encoders.

    `force_zeros_for_empty_prompt`: the base pipeline's (SDXL's `model_index.json`; diffusers' default True), i.e.
    whether its pipelines give the unconditional branch zero text embeddings; see `unconditional_text`.
    """

    vae: AutoencoderKL
    text_encoder: CLIPTextModel
    tokenizer: CLIPTokenizer
    noise_scheduler: DDPMScheduler
    text_encoder_2: CLIPTextModelWithProjection | None = None
    tokenizer_2: CLIPTokenizer | None = None
    force_zeros_for_empty_prompt: bool = True

    @property
    def is_sdxl(self) -> bool:
        return self.text_encoder_2 is not None

    @property
    def unconditional_text(self) -> str:
        """How training encodes a dropped text: as the base's pipelines sample the unconditional branch.

        "zeros" for an SDXL base with `force_zeros_for_empty_prompt` (SDXL itself was trained with zeroed text
        conditioning for its unconditional case, and diffusers' SDXL pipelines sample it so): zero hidden states
        and zero pooled embeddings. Otherwise "empty_prompt", the encoded "" (SD 1.x/2.x and their pipelines).
        """
        return "zeros" if self.is_sdxl and self.force_zeros_for_empty_prompt else "empty_prompt"

    def to(self, device, dtype) -> "FrozenParts":
        """Moves the frozen modules to `device` in `dtype`, except a float16 VAE whose config has `force_upcast`
        (SDXL's overflows in float16): it stays float32, as diffusers' pipelines and SDXL training scripts run it."""
        for module in (self.vae, self.text_encoder, self.text_encoder_2):
            if module is not None:
                upcast = module is self.vae and dtype == torch.float16 and getattr(module.config, "force_upcast", False)
                module.to(device=device, dtype=torch.float32 if upcast else dtype).requires_grad_(False).eval()
        return self


def _pipeline_location(base: str, variant: str | None) -> tuple[str, dict]:
    """(where the base pipeline is, hub revision kwargs): a folder, hub id or shipped base's short name, checked to
    be a whole pipeline (a missing `variant` fails here)."""
    base = str(resolve(base, "base", "`model.base`"))
    path = Path(base).expanduser()
    hub = not path.exists() and looks_like_hub_id(base)
    kind = check_base_spec(base, variant=variant)[0] if path.is_dir() or hub else None  # a missing variant fails here
    if kind not in ("pipeline", "hub"):
        raise InputError(f"`model.base` {base!r} must be a diffusers pipeline folder (with model_index.json), a "
                         f"hub id or a shipped base ({', '.join(short_names('base'))}): training needs its VAE, "
                         f"text encoder and scheduler, not only a UNet (a single-file checkpoint: save it as a "
                         f"pipeline folder once with diffusers' StableDiffusionPipeline.from_single_file).")
    base = str(path.resolve()) if kind == "pipeline" else base
    return hub_revision_kwargs(base)  # a hub id's `@revision` (an adapter pins its base's commit)


def load_text_encoder(base: str, variant: str | None = None) -> CLIPTextModel:
    """The base pipeline's (first) text encoder alone, e.g. for `model.task_text_encoders` to copy."""
    base, revision = _pipeline_location(base, variant)
    return CLIPTextModel.from_pretrained(base, subfolder="text_encoder", use_safetensors=True, variant=variant,
                                         **revision)


def _lists_second_encoder(index: dict) -> bool:
    """Whether a pipeline's model_index.json lists a second text encoder (SDXL)."""
    return (index.get("text_encoder_2") or [None])[0] is not None


def has_two_text_encoders(base: str, variant: str | None = None) -> bool:
    """Whether the base pipeline is SDXL-like (two text encoders), from its model_index.json alone."""
    base, revision = _pipeline_location(base, variant)
    return _lists_second_encoder(DiffusionPipeline.load_config(base, **revision))


def load_frozen_parts(base: str, variant: str | None = None) -> FrozenParts:
    """Loads the frozen parts of a diffusers pipeline folder (or hub id when online, or a shipped base's short name
    such as "toyworld-base"); safetensors only, in the weights `variant` (e.g. "fp16") when given."""
    base, revision = _pipeline_location(base, variant)
    index = DiffusionPipeline.load_config(base, **revision)
    kwargs = {"use_safetensors": True, "variant": variant, **revision}
    parts = FrozenParts(
        vae=AutoencoderKL.from_pretrained(base, subfolder="vae", **kwargs),
        text_encoder=CLIPTextModel.from_pretrained(base, subfolder="text_encoder", **kwargs),
        tokenizer=CLIPTokenizer.from_pretrained(base, subfolder="tokenizer", **revision),
        noise_scheduler=DDPMScheduler.from_pretrained(base, subfolder="scheduler", **revision),
    )
    if _lists_second_encoder(index):  # SDXL
        parts.text_encoder_2 = CLIPTextModelWithProjection.from_pretrained(base, subfolder="text_encoder_2", **kwargs)
        parts.tokenizer_2 = CLIPTokenizer.from_pretrained(base, subfolder="tokenizer_2", **revision)
        parts.force_zeros_for_empty_prompt = bool(index.get("force_zeros_for_empty_prompt", True))
    return parts


def load_base(base: str, variant: str | None = None):
    """(frozen parts, UNet) of the base pipeline, in the weights `variant` when given."""
    return load_frozen_parts(base, variant), load_base_unet(base, variant=variant)


def prompt_token_ids(tokenizer: CLIPTokenizer, prompts: list[str], device) -> torch.Tensor:
    """(B, L) token ids of `prompts` as the text encoder reads them (a prompt too long is cut, with one warning
    per run)."""
    if any(truncated_tokens(tokenizer, prompts)):
        # One constant message, so Python's warning filter shows it once per run rather than once per batch.
        warnings.warn(f"some training prompts are longer than the {tokenizer.model_max_length} tokens the text "
                      f"encoder takes; their ends are dropped, as Stable Diffusion's pipelines do.",
                      PromptTruncatedWarning, stacklevel=2)
    return tokenize_prompts(tokenizer, prompts, warn=False).input_ids.to(device)


def sdxl_added_conditions(pooled: torch.Tensor, resolution: int) -> dict:
    """SDXL's extra UNet inputs: pooled text embeddings and the size ids of an uncropped square image."""
    time_ids = torch.tensor([[resolution, resolution, 0, 0, resolution, resolution]] * len(pooled),
                            device=pooled.device, dtype=pooled.dtype)
    return {"added_cond_kwargs": {"text_embeds": pooled, "time_ids": time_ids}}


@torch.no_grad()
def encode_prompts(parts: FrozenParts, prompts: list[str], resolution: int, device) -> tuple[torch.Tensor, dict]:
    """(encoder_hidden_states, extra UNet kwargs) as the SD / SDXL pipelines make them."""
    if not parts.is_sdxl:
        return parts.text_encoder(prompt_token_ids(parts.tokenizer, prompts, device))[0], {}
    # SDXL: penultimate hidden states of both encoders, concatenated; pooled output of the second; size ids.
    first = parts.text_encoder(prompt_token_ids(parts.tokenizer, prompts, device), output_hidden_states=True)
    second = parts.text_encoder_2(prompt_token_ids(parts.tokenizer_2, prompts, device), output_hidden_states=True)
    hidden = torch.cat([first.hidden_states[-2], second.hidden_states[-2]], dim=-1)
    return hidden, sdxl_added_conditions(second.text_embeds, resolution)
