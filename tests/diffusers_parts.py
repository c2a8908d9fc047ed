"""Tiny, offline Stable Diffusion components built in code (no hub, no downloaded weights), for pipeline tests.

A 16x16 image goes through `tiny_vae()` to 8x8x4 latents, the tiny UNet's `sample_size` (`build_unet("tiny")`);
`tiny_text_encoder()` gives 32-wide hidden states, the tiny UNet's `cross_attention_dim`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import AutoencoderKL, EulerAncestralDiscreteScheduler
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from mtu.toyworld.components import bytes_to_unicode

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
MAX_LENGTH = 77
TEXT_WIDTH = 32


def tiny_vocab() -> dict[str, int]:
    """Every byte-level character alone and with "</w>" (a word's last piece), then the two special tokens."""
    alphabet = list(bytes_to_unicode().values())
    tokens = alphabet + [char + "</w>" for char in alphabet] + [BOS, EOS]
    return {token: index for index, token in enumerate(tokens)}


def tiny_tokenizer(tmp_path) -> CLIPTokenizer:
    """A `CLIPTokenizer` over `tiny_vocab()` with no merges: one token per byte, so any text encodes exactly."""
    directory = Path(tmp_path) / "tiny_tokenizer"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.json").write_text(json.dumps(tiny_vocab(), ensure_ascii=False), encoding="utf-8")
    (directory / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    return CLIPTokenizer.from_pretrained(directory, model_max_length=MAX_LENGTH, local_files_only=True)


def tiny_text_encoder(seed: int = 0) -> CLIPTextModel:
    """A 2-layer, 32-wide `CLIPTextModel` at a fixed seed, for `tiny_tokenizer`'s vocabulary (global RNG kept)."""
    vocab = tiny_vocab()
    config = CLIPTextConfig(
        hidden_size=TEXT_WIDTH, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
        vocab_size=len(vocab), max_position_embeddings=MAX_LENGTH, projection_dim=TEXT_WIDTH,
        bos_token_id=vocab[BOS], eos_token_id=vocab[EOS], pad_token_id=vocab[EOS],
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return CLIPTextModel(config).eval()


def tiny_vae(seed: int = 0) -> AutoencoderKL:
    """An `AutoencoderKL` with two blocks (32, 64): scale factor 2, so 16x16 images <-> 8x8x4 latents."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AutoencoderKL(
            in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 64), layers_per_block=1,
            norm_num_groups=16, sample_size=16,
            down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
            up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        ).eval()


def tiny_scheduler() -> EulerAncestralDiscreteScheduler:
    """InstructPix2Pix's default scheduler type with Stable Diffusion's beta schedule."""
    return EulerAncestralDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                           num_train_timesteps=1000)


def tiny_components(unet, tmp_path) -> dict:
    """The keyword arguments of `StableDiffusionPipeline` / `StableDiffusionInstructPix2PixPipeline`."""
    return {
        "unet": unet, "vae": tiny_vae(), "text_encoder": tiny_text_encoder(), "tokenizer": tiny_tokenizer(tmp_path),
        "scheduler": tiny_scheduler(), "safety_checker": None, "feature_extractor": None,
        "requires_safety_checker": False,
    }
