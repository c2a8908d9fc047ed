"""The toy world's tiny SD parts: a tokenizer built offline, and a stock pipeline folder diffusers loads."""

import numpy as np
import torch
from diffusers import StableDiffusionPipeline

from mtu.toyworld import caption, make_scenes, sample_edit
from mtu.toyworld.components import (WORDS, assemble_pipeline, build_text_encoder, build_tokenizer, build_unet,
                                     build_vae, vocabulary)


def test_every_toy_word_is_one_token_and_texts_round_trip(tmp_path):
    tokenizer = build_tokenizer(tmp_path / "tok")
    assert [word for word in WORDS if len(tokenizer.tokenize(word)) != 1] == []
    rng = np.random.default_rng(0)
    longest = 0
    for scene in make_scenes(0, 200):
        for text in (caption(scene), sample_edit(scene, rng).instruction):
            ids = tokenizer(text).input_ids
            longest = max(longest, len(ids))
            assert tokenizer.decode(ids, skip_special_tokens=True).replace(" ,", ",") == text
    assert longest <= tokenizer.model_max_length
    # Anything else still encodes, byte by byte, without unknown tokens.
    vocab, _ = vocabulary()
    ids = tokenizer("zebra #42").input_ids
    assert len(ids) > 4 and all(0 <= i < len(vocab) for i in ids)


def test_parts_make_a_stock_pipeline_that_loads_and_generates(tmp_path):
    pipe = assemble_pipeline(build_unet(seed=1), build_vae(seed=1), build_text_encoder(seed=1),
                             build_tokenizer(tmp_path / "tok"))
    pipe.save_pretrained(tmp_path / "pipe", safe_serialization=True)
    loaded = StableDiffusionPipeline.from_pretrained(tmp_path / "pipe", local_files_only=True)
    loaded.set_progress_bar_config(disable=True)
    image = loaded("a small red circle in the center, on a black background", num_inference_steps=2,
                   generator=torch.Generator().manual_seed(0), output_type="np").images[0]
    assert image.shape == (32, 32, 3)
    # The UNet has GEGLU transformer feed-forwards, the part upcycling cuts into experts.
    assert type(loaded.unet.down_blocks[0].attentions[0].transformer_blocks[0].ff.net[0]).__name__ == "GEGLU"
