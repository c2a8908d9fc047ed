"""The toy world's tiny Stable Diffusion parts, built offline: tokenizer, text encoder, VAE, UNet, scheduler.

Together they make a standard diffusers `StableDiffusionPipeline` folder (`assemble_pipeline`), which
`mtu toyworld pretrain` trains on toy-world text-to-image and the package ships as its embedded base model.

- Tokenizer: a `CLIPTokenizer` whose BPE merges spell every toy-world word as one token; any other text still
  encodes, one byte-level character at a time (the alphabet is in the vocabulary).
- Text encoder: a 4-layer, 64-wide `CLIPTextModel`.
- VAE: an `AutoencoderKL` with three blocks, scale factor 4: 32x32 images <-> 8x8x4 latents.
- UNet: a `UNet2DConditionModel` with two cross-attention levels (64, 128 channels); its transformer blocks have
  GEGLU feed-forwards, like Stable Diffusion's, which is what upcycling cuts into experts.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..shipped import shipped_base, shipped_model  # noqa: F401  (the toy world's names for them)

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
MAX_LENGTH = 77
TEXT_WIDTH = 64
# Every word of the toy world's captions and instructions (scene.caption, tasks.Edit.instruction).
WORDS = (
    "a", "an", "and", "at", "on", "in", "the", "to", ",",
    "small", "large", "circle", "square", "triangle",
    "red", "green", "blue", "yellow", "purple", "white", "black", "gray",
    "top", "bottom", "left", "right", "center", "background", "empty",
    "make", "add", "remove", "move", "change",
)


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable unicode character table (byte-level BPE's alphabet, 256 characters)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) \
        + list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars)))


def _bpe(pieces: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """Byte-pair encoding as `CLIPTokenizer` does it: merge the lowest-ranked adjacent pair until none applies."""
    while len(pieces) > 1:
        pairs = [(ranks.get(pair, len(ranks)), i) for i, pair in enumerate(zip(pieces, pieces[1:]))]
        rank, i = min(pairs)
        if rank == len(ranks):
            break
        pieces = pieces[:i] + [pieces[i] + pieces[i + 1]] + pieces[i + 2:]
    return pieces


def vocabulary(words: tuple[str, ...] = WORDS) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """(token -> id, merges): the byte alphabet alone and word-final, every merge result, the two specials.

    Words are added in order; each gets the merges that join what the earlier merges leave of it, left to right,
    so every word in `words` encodes as a single token.
    """
    alphabet = list(bytes_to_unicode().values())
    tokens = alphabet + [char + "</w>" for char in alphabet]
    merges: list[tuple[str, str]] = []
    ranks: dict[tuple[str, str], int] = {}
    for word in words:
        pieces = _bpe(list(word[:-1]) + [word[-1] + "</w>"], ranks)
        while len(pieces) > 1:
            pair = (pieces[0], pieces[1])
            ranks[pair] = len(merges)
            merges.append(pair)
            if pair[0] + pair[1] not in tokens:
                tokens.append(pair[0] + pair[1])
            pieces = [pair[0] + pair[1]] + pieces[2:]
    tokens += [BOS, EOS]
    return {token: index for index, token in enumerate(tokens)}, merges


def write_tokenizer(directory) -> Path:
    """Writes vocab.json and merges.txt (the files `CLIPTokenizer.from_pretrained` reads) to `directory`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    vocab, merges = vocabulary()
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (directory / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges),
                                          encoding="utf-8")
    (directory / "tokenizer_config.json").write_text(json.dumps({
        "model_max_length": MAX_LENGTH, "bos_token": BOS, "eos_token": EOS, "pad_token": EOS, "unk_token": EOS,
        "tokenizer_class": "CLIPTokenizer", "do_lower_case": True}), encoding="utf-8")
    (directory / "special_tokens_map.json").write_text(json.dumps(
        {"bos_token": BOS, "eos_token": EOS, "pad_token": EOS, "unk_token": EOS}), encoding="utf-8")
    return directory


def build_tokenizer(directory):
    """The toy-world `CLIPTokenizer`, written to and loaded from `directory` (no network)."""
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(write_tokenizer(directory), local_files_only=True)


def build_text_encoder(seed: int = 0):
    """A 4-layer, 64-wide `CLIPTextModel` for the toy vocabulary, at a fixed seed (global RNG kept)."""
    from transformers import CLIPTextConfig, CLIPTextModel

    vocab, _ = vocabulary()
    config = CLIPTextConfig(
        hidden_size=TEXT_WIDTH, intermediate_size=4 * TEXT_WIDTH, num_attention_heads=4, num_hidden_layers=4,
        vocab_size=len(vocab), max_position_embeddings=MAX_LENGTH, projection_dim=TEXT_WIDTH,
        bos_token_id=vocab[BOS], eos_token_id=vocab[EOS], pad_token_id=vocab[EOS],
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return CLIPTextModel(config)


def build_vae(seed: int = 0, sample_size: int = 32):
    """An `AutoencoderKL` with three blocks (32, 64, 64): scale factor 4, 32x32 images <-> 8x8x4 latents."""
    from diffusers import AutoencoderKL

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AutoencoderKL(
            in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 64, 64), layers_per_block=1,
            norm_num_groups=16, sample_size=sample_size, down_block_types=("DownEncoderBlock2D",) * 3,
            up_block_types=("UpDecoderBlock2D",) * 3, mid_block_add_attention=False,
        )


def build_unet(seed: int = 0, sample_size: int = 8):
    """A `UNet2DConditionModel` with two cross-attention levels (64, 128) and GEGLU transformer feed-forwards."""
    from ..architectures import build_unet as build

    return build("toyworld", seed=seed, sample_size=sample_size)


def build_scheduler():
    """DDPM training schedule of Stable Diffusion (scaled linear betas, 1000 steps), as an Euler-ancestral
    sampler (InstructPix2Pix's default); pipelines may swap in any diffusers scheduler.

    The config also carries Stable Diffusion's `clip_sample: false` and `set_alpha_to_one: false`: Euler ignores
    them, but `DDIMScheduler.from_config(pipe.scheduler.config)` would otherwise take DDIM's default
    `clip_sample=True`, which clamps the predicted latents to [-1, 1] (they span about +-3) and wrecks every
    output (edit adapter, 16 validation edits: shape kinds 0.19 with clipping, 0.49 without; issue 11).
    """
    from diffusers import EulerAncestralDiscreteScheduler

    scheduler = EulerAncestralDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                                num_train_timesteps=1000, steps_offset=1)
    scheduler.register_to_config(clip_sample=False, set_alpha_to_one=False)
    return scheduler


def assemble_pipeline(unet, vae, text_encoder, tokenizer, scheduler=None):
    """A stock `StableDiffusionPipeline` of the given parts (no safety checker: there is nothing to check)."""
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline(
        unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
        scheduler=scheduler or build_scheduler(), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )


SHIPPED_BASE_NAME = "toyworld-base"  # the short name the shipped adapter records as its base (`mtu.shipped`)


def record_shipped_base(adapter_dir) -> Path:
    """Makes the adapter in `adapter_dir` record the shipped base by its short name, so it loads in any install.

    The adapter must have been made from the shipped base (its recorded fingerprint is checked); its config is
    rewritten atomically. Returns the adapter folder.
    """
    from ..upcycling.bases import load_base_unet
    from ..upcycling.serialization import set_recorded_base

    return set_recorded_base(adapter_dir, SHIPPED_BASE_NAME, load_base_unet(str(shipped_base())))
