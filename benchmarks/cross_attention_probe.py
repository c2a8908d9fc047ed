"""Does the UNet's cross-attention find the shape a word names? (issue 11, diagnosis)

Stable Diffusion's cross-attention maps put a word where its object is (the basis of prompt-to-prompt editing);
an edit model needs that to find "the circle" of "remove the circle" in its input. For validation scenes of two
or three shapes and one shape named by its kind, this prints per cross-attention layer at the 8x8 latent level:

- entropy of the attention over the 77 text tokens (uniform: ln 77 = 4.34) and the mean largest weight;
- the kind word's attention on the named shape's latent pixels against the other shapes' pixels (ratio, and the
  share of scenes where the named shape gets more): 1.00 and 0.5 mean the word is not localised at all.

Rows: the base UNet with the prompt "a KIND" and the input image visible in its noisy latents (noised to t), and,
with `--adapter`, the edit task of an MTU adapter with the instruction and the input image as its condition.

    python benchmarks/cross_attention_probe.py [--base B] [--adapter A] [--count 64] [--timesteps 600,200,50]
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch


class AttentionRecorder:
    """Keeps the attention probabilities of every cross-attention (`attn2`) layer of `unet` on its last call."""

    def __init__(self, unet):
        from diffusers.models.attention_processor import AttnProcessor

        self.probs: dict[str, torch.Tensor] = {}
        for name, module in unet.named_modules():
            if name.endswith("attn2"):
                module.set_processor(AttnProcessor())  # the processor that calls get_attention_scores
                module.get_attention_scores = self._wrap(name, module.get_attention_scores)

    def _wrap(self, name, original):
        def scores(query, key, attention_mask=None):
            probs = original(query, key, attention_mask)
            self.probs[name] = probs.detach()  # (batch * heads, pixels, tokens)
            return probs
        return scores


def _latent_coverage(shapes, size: int = 32, factor: int = 4) -> np.ndarray:
    """(8, 8) share of each latent pixel that `shapes` cover."""
    from mtu.toyworld.scene import shape_mask

    mask = sum((shape_mask(shape, size) for shape in shapes), np.zeros((size, size)))
    side = size // factor
    return mask.reshape(side, factor, side, factor).mean(axis=(1, 3))


def layer_rows(recorder, batch: int, token_index: list[int], named: np.ndarray, others: np.ndarray) -> list[dict]:
    rows = []
    for name, probs in recorder.probs.items():
        heads, pixels = probs.shape[0] // batch, probs.shape[1]
        if pixels != named.shape[1] * named.shape[2]:
            continue  # the 4x4 level is coarser than a shape's cell
        probs = probs.reshape(batch, heads, pixels, -1)
        entropy = float(-(probs * (probs + 1e-12).log()).sum(-1).mean())
        largest = float(probs.max(-1).values.mean())
        word = torch.stack([probs[i, :, :, token_index[i]].mean(0) for i in range(batch)]).numpy()  # (B, pixels)
        word = word.reshape(named.shape)
        on_named = (word * named).sum((1, 2)) / named.sum((1, 2))
        on_others = (word * others).sum((1, 2)) / others.sum((1, 2))
        rows.append({"layer": name, "entropy": entropy, "largest": largest,
                     "ratio": float(on_named.mean() / on_others.mean()), "named_more": float(np.mean(on_named > on_others))})
    return rows


@torch.no_grad()
def main(argv=None) -> int:
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    from mtu.pipelines import MTUPipeline
    from mtu.pipelines.inputs import image_to_tensor
    from mtu.toyworld.components import shipped_base
    from mtu.toyworld.evaluate import evaluation_set

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="", help="base pipeline folder (default: the shipped toy base)")
    parser.add_argument("--adapter", default="", help="an MTU adapter with an edit task, trained on --base")
    parser.add_argument("--count", type=int, default=64)
    parser.add_argument("--timesteps", default="600,200,50")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    base = args.base or str(shipped_base())
    unet = UNet2DConditionModel.from_pretrained(base, subfolder="unet", local_files_only=True)
    scheduler = DDPMScheduler.from_pretrained(base, subfolder="scheduler", local_files_only=True)
    tokenizer = CLIPTokenizer.from_pretrained(base, subfolder="tokenizer", local_files_only=True)
    text_encoder = CLIPTextModel.from_pretrained(base, subfolder="text_encoder", local_files_only=True)
    vae = AutoencoderKL.from_pretrained(base, subfolder="vae", local_files_only=True)
    examples = [e for e in evaluation_set("edit", 8 * args.count, split="validation")
                if e.edit.kind in ("recolour", "remove", "move") and len(e.edit.before.shapes) >= 2][:args.count]
    named = np.stack([_latent_coverage([e.edit.shape]) for e in examples])
    others = np.stack([_latent_coverage([s for s in e.edit.before.shapes if s != e.edit.shape]) for e in examples])

    def encode(prompts):
        ids = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                        return_tensors="pt").input_ids
        return ids, text_encoder(ids)[0]

    def kind_index(ids, kind):
        (token,) = tokenizer(kind, add_special_tokens=False).input_ids
        return ids.tolist().index(token)

    condition = vae.encode(image_to_tensor([e.image for e in examples], 4)).latent_dist.mode()
    clean = condition * vae.config.scaling_factor
    setups = [("base", unet, [f"a {e.edit.shape.kind}" for e in examples])]
    if args.adapter:
        setups.append(("edit adapter", MTUPipeline.from_base(base, args.adapter).unet, [e.prompt for e in examples]))
    print(f"{len(examples)} validation scenes of 2-3 shapes, one named by its kind; base {base}")
    print("| model | t | layer | entropy (uniform 4.34) | largest weight | word on named / other shapes | "
          "named gets more |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for label, model, prompts in setups:
        recorder = AttentionRecorder(model.unet if label == "edit adapter" else model)
        ids, text = encode(prompts)
        token_index = [kind_index(row, e.edit.shape.kind) for row, e in zip(ids, examples)]
        for t in (int(value) for value in args.timesteps.split(",")):
            noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(t))
            noisy = scheduler.add_noise(clean, noise, torch.tensor([t]))
            timesteps = torch.full((len(examples),), t)
            if label == "edit adapter":
                model(torch.cat([noisy, condition], 1), timesteps, text, task="edit")
            else:
                model(noisy, timesteps, text)
            for row in layer_rows(recorder, len(examples), token_index, named, others):
                print(f"| {label} | {t} | {row['layer'].replace('.transformer_blocks.0.attn2', '')} | "
                      f"{row['entropy']:.2f} | {row['largest']:.3f} | {row['ratio']:.2f} | {row['named_more']:.2f} |",
                      flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
