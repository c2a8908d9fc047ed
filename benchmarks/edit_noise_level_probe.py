"""At which noise level does a trained edit model lose the edit? (issue 11, diagnosis)

SDEdit-style probe on validation edits (training-split scenes, never held-out): sampling starts not from pure
noise but from a clean latent noised to timestep `t_start`, and runs the sampler's remaining steps with the usual
guidance. Two starts:

- "target": the edit's own answer (the target image's latents) noised to `t_start`. Exact outputs mean the model
  keeps (or restores) the right edit once the noise is at most that level; a drop from t_start = 999 down to some
  level names the noise levels where the model's own decisions go wrong.
- "input": the input image noised to `t_start` (SDEdit from the input). At a low start the output can only be a
  copy; the rows show whether the model makes the change when the layout of the input is given.

    python benchmarks/edit_noise_level_probe.py ADAPTER [--count 64] [--starts 999,800,600,400,200]
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch


@torch.no_grad()
def sample_from(pipe, examples, start_latents: torch.Tensor | None, t_start: int, steps: int, text_guidance: float,
                image_guidance: float, seed: int) -> list:
    """Outputs of `pipe`'s edit sampling when the loop begins at the first of its timesteps <= `t_start`, from
    `start_latents` noised there (pure noise when None)."""
    plan = pipe.check_inputs("edit", prompt=[e.prompt for e in examples], image=[e.image for e in examples],
                             num_inference_steps=steps, guidance_scale=text_guidance,
                             image_guidance_scale=image_guidance)
    device = pipe._execution_device
    text = pipe.encode_branches(plan, device)["encoder_hidden_states"]
    conditions = pipe.encode_conditions(plan, [e.image for e in examples], None, device, text.dtype)
    pipe.scheduler.set_timesteps(steps, device=device)
    timesteps = [t for t in pipe.scheduler.timesteps if int(t) <= t_start]
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(pipe._latent_shape(plan), generator=generator)
    if start_latents is None:
        latents = noise * pipe.scheduler.init_noise_sigma
    else:
        latents = pipe.scheduler.add_noise(start_latents, noise, timesteps[0].reshape(1))
    from mtu.pipelines.common import BRANCHES, combine_guidance
    branches = len(BRANCHES[plan.guidance])
    for t in timesteps:
        model_input = torch.cat([pipe.scheduler.scale_model_input(torch.cat([latents] * branches), t), conditions], 1)
        noise_pred = pipe.unet(model_input, t, text, task="edit", return_dict=False)[0]
        noise_pred = combine_guidance(noise_pred, plan.guidance, plan.guidance_scale, plan.image_guidance_scale)
        latents = pipe.scheduler.step(noise_pred, t, latents, eta=0.0, return_dict=False)[0]
    return pipe.decode(latents, "pil")


def encode(pipe, images) -> torch.Tensor:
    from mtu.pipelines.inputs import image_to_tensor
    pixels = image_to_tensor(images, pipe.vae_scale_factor)
    return pipe.vae.encode(pixels).latent_dist.mode() * pipe.vae.config.scaling_factor


def main(argv=None) -> int:
    from diffusers import DDIMScheduler

    from mtu.pipelines import MTUPipeline
    from mtu.toyworld.components import shipped_base
    from mtu.toyworld.evaluate import evaluation_set
    from mtu.toyworld.metrics import attribute_cell, example_record, interval_cell, summarize

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("adapter")
    parser.add_argument("--base", default="", help="the base the adapter was trained on (default: the shipped one)")
    parser.add_argument("--count", type=int, default=64)
    parser.add_argument("--starts", default="999,800,600,400,200", help="comma-separated t_start values")
    parser.add_argument("--steps", type=int, default=20, help="DDIM steps over the whole schedule")
    parser.add_argument("--text-guidance", type=float, default=7.5)
    parser.add_argument("--image-guidance", type=float, default=3.0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    pipe = MTUPipeline.from_base(args.base or str(shipped_base()), args.adapter)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config, clip_sample=False, set_alpha_to_one=False)
    examples = evaluation_set("edit", args.count, split="validation")
    starts = {"target": encode(pipe, [e.target for e in examples]),
              "input": encode(pipe, [e.image for e in examples])}
    print(f"{args.count} validation edits, DDIM {args.steps} steps, guidance text {args.text_guidance} / image "
          f"{args.image_guidance}")
    print("| start | t_start | exact (95% CI) | copied | preserved | kind / colour / size / position / background |")
    print("|---|---:|---|---:|---:|---|")
    for name in ("target", "input"):
        for t_start in (int(value) for value in args.starts.split(",")):
            outputs = sample_from(pipe, examples, starts[name], t_start, args.steps, args.text_guidance,
                                  args.image_guidance, seed=t_start)
            summary = summarize([example_record(ex, np.asarray(out)) for ex, out in zip(examples, outputs)])
            print(f"| {name} | {t_start} | {interval_cell(summary['exact'])} | {summary['copied']['value']:.3f} | "
                  f"{summary['preserved']['value']:.3f} | {attribute_cell(summary)} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
