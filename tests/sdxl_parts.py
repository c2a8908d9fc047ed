"""Tiny, offline SDXL-shaped components built in code: a "text_time" UNet and two CLIP text encoders.

The UNet has SDXL's conditioning (`addition_embed_type="text_time"`: pooled text + 6 time ids) at 8x8 latents;
the two 32-wide encoders concatenate to its 64-wide `cross_attention_dim`, the second one (with projection)
gives the 32-wide pooled embedding: 6 * 8 (time ids) + 32 = 80 added-embedding features. The VAE, tokenizer and
scheduler are `diffusers_parts`'.
"""

from __future__ import annotations

import torch
from diffusers import UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from .diffusers_parts import BOS, EOS, MAX_LENGTH, TEXT_WIDTH, tiny_scheduler, tiny_tokenizer, tiny_vae, tiny_vocab

TIME_EMBED_DIM = 8


def tiny_sdxl_unet(seed: int = 0) -> UNet2DConditionModel:
    """SDXL's block layout (no attention in the first level, linear projections) at toy width, seeded."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(
            sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4),
            transformer_layers_per_block=(1, 2), use_linear_projection=True, norm_num_groups=16,
            cross_attention_dim=2 * TEXT_WIDTH, addition_embed_type="text_time",
            addition_time_embed_dim=TIME_EMBED_DIM,
            projection_class_embeddings_input_dim=6 * TIME_EMBED_DIM + TEXT_WIDTH,
        ).eval()
    unet.register_to_config(_name_or_path=f"tiny-sdxl:{seed}")
    return unet


def _text_config() -> CLIPTextConfig:
    vocab = tiny_vocab()
    return CLIPTextConfig(
        hidden_size=TEXT_WIDTH, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
        vocab_size=len(vocab), max_position_embeddings=MAX_LENGTH, projection_dim=TEXT_WIDTH,
        bos_token_id=vocab[BOS], eos_token_id=vocab[EOS], pad_token_id=vocab[EOS],
    )


def tiny_text_encoders(seed: int = 0) -> tuple[CLIPTextModel, CLIPTextModelWithProjection]:
    """SDXL's two text encoders, the second with a projection (its `text_embeds` is the pooled embedding)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        first = CLIPTextModel(_text_config()).eval()
        second = CLIPTextModelWithProjection(_text_config()).eval()
    return first, second


def tiny_sdxl_components(unet, tmp_path) -> dict:
    """The keyword arguments of `MTUStableDiffusionXLPipeline` (and, with a stock UNet, diffusers' SDXL pipelines)."""
    first, second = tiny_text_encoders()
    tokenizer = tiny_tokenizer(tmp_path)
    return {"vae": tiny_vae(), "text_encoder": first, "text_encoder_2": second, "tokenizer": tokenizer,
            "tokenizer_2": tokenizer, "unet": unet, "scheduler": tiny_scheduler()}
