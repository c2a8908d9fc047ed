"""How much of the shipped base's diffusion loss is the VAE's sampling noise? (issue 11)

Training targets are latents sampled from the VAE posterior (mean + std * noise), as diffusers' training scripts
make them. With Stable Diffusion's VAE the posterior std is tiny next to the spread of the latents, so a sample is
the mean; this prints, for the shipped toy base, the posterior std next to the latents' spread, the diffusion
noise level per timestep, and the base's own epsilon loss on held-out captions per timestep bucket with targets
sampled from the posterior and with the posterior mean.

    python benchmarks/latent_noise_probe.py [--count 256]
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

BUCKETS = ((0, 50), (50, 100), (100, 200), (200, 500), (500, 800), (800, 1000))


def main(argv=None) -> int:
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

    from mtu.toyworld.components import shipped_base
    from mtu.toyworld.pretrain import to_tensor
    from mtu.toyworld.scene import caption, heldout_scenes, render_array
    from mtu.training.components import encode_prompts, load_frozen_parts

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=256)
    parser.add_argument("--base", default=None, help="pipeline folder (default: the shipped toy base)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    base = args.base or str(shipped_base())
    parts = load_frozen_parts(base)
    vae: AutoencoderKL = parts.vae.eval()
    unet = UNet2DConditionModel.from_pretrained(base, subfolder="unet").eval()
    schedule: DDPMScheduler = parts.noise_scheduler
    scenes = heldout_scenes(args.count)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        posterior = vae.encode(to_tensor([render_array(scene, 32) for scene in scenes])).latent_dist
        scale = vae.config.scaling_factor
        mean, std = posterior.mean * scale, posterior.std * scale
        sampled = mean + std * torch.randn(mean.shape, generator=generator)
        hidden, _ = encode_prompts(parts, [caption(scene) for scene in scenes], 32, "cpu")
        print(f"scaled latents: std of the means {mean.std():.3f}, mean posterior std {std.mean():.3f} "
              f"(ratio {std.mean() / mean.std():.3f})")
        print("| timesteps | diffusion noise std sqrt(1 - abar) | loss, sampled targets | loss, mean targets |")
        print("|---|---:|---:|---:|")
        abar = schedule.alphas_cumprod
        for low, high in BUCKETS:
            timesteps = torch.randint(low, high, (len(scenes),), generator=generator)
            noise = torch.randn(mean.shape, generator=generator)
            losses = []
            for latents in (sampled, mean):
                noisy = schedule.add_noise(latents, noise, timesteps)
                prediction = torch.cat([unet(noisy[i:i + 64], timesteps[i:i + 64], hidden[i:i + 64]).sample
                                        for i in range(0, len(scenes), 64)])
                losses.append(float(((prediction - noise) ** 2).mean()))
            level = float(np.sqrt(1 - abar[low:high].numpy()).mean())
            print(f"| {low}-{high} | {level:.3f} | {losses[0]:.4f} | {losses[1]:.4f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
