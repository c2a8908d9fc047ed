"""Is capacity where the condition is read what holds the shipped model's sr read-back? (issue 11, fifteenth round)

The fourteenth round trained the shipped model on sr alone (`benchmarks/recipes/toyworld-sr-only.yaml`, MTU's own
parameters: experts, routers, task LayerNorms, the task's `conv_in`) and the read-back tied. One change to that
run: more of the UNet trainable, in its own Adam group on the run's rate and schedule (outside the trainer's
gradient clipping, as edit_diagnosis.py's cross-attention rows), a diagnosis-only change since MTU freezes them:

- `read`: the first down block's ResNets (`down_blocks.0.resnets`), the layers right after `conv_in`, which is
  where the condition's latents are first mixed with the noisy latents;
- `all`: every UNet weight (MTU's parameters as in the run; the rest in the extra group): an upper bound on what
  capacity buys at this budget;
- `pixels`: not more weights but more of the input: sr's condition carries the upsampled LR image's pixels
  themselves beside its VAE latents (`pixel_unshuffle` to the latent grid: 3 x 4 x 4 = 48 more channels at 32 px),
  as Stable Diffusion's x4 upscaler concatenates its low-resolution input; the sr input conv gets those channels,
  starting at zero (the model starts as the shipped one) and trained in the extra group, in training and sampling
  alike (`mtu.conditioning.condition_channels` patched where the trainer and the pipeline call it). Leaves the
  paper's recipe: it tests whether the condition is what caps the read-back;
- `none`: nothing extra, the control of a run that has no earlier control (the sixteenth round's runs from the base,
  `--config benchmarks/recipes/toyworld-sr-from-base.yaml`, where the pixel channels train from the first step).

The model is scored as `checkpoint_progress.py` scores a checkpoint (256 validation sr scenes by default, the same
noise) and the row appended to `--log` at the run's last step plus `--step-offset`, so that `checkpoint_progress.py
--compare CONTROL_LOG THIS_LOG` pairs it with the sr-only run at the same step (PSNR and read-back):

    OMP_NUM_THREADS=1 python benchmarks/sr_capacity.py --extra read --out /work/longrun/runs/sr-capacity-read \\
        --step-offset 48000 --log benchmarks/results/longrun/sr-capacity-read-validation.jsonl
"""

from __future__ import annotations

import argparse
import sys
from contextlib import ExitStack
from pathlib import Path
from unittest import mock

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # checkpoint_progress, beside this file

EXTRA = {"read": ("down_blocks.0.resnets.",), "all": ("",), "pixels": (), "none": ()}


def with_pixels(condition_channels, scale: float = 1.0):
    """`condition_channels` whose sr channels also carry the (upsampled LR) image's pixels on the latent grid,
    times `scale` (under Adam, `scale` times the step size of their zero-started weights, as edit_diagnosis.py's
    `mtu-image-x5`)."""
    import torch
    import torch.nn.functional as F

    def channels(vae, spec, image=None, mask=None, latent_size=None):
        latents = condition_channels(vae, spec, image, mask, latent_size)
        if spec.name != "sr":
            return latents
        return torch.cat([latents, scale * F.pixel_unshuffle(image, image.shape[-1] // latents.shape[-1])], dim=1)

    return channels


def widen_input_conv(model, task: str, extra_channels: int):
    """Gives `task`'s input conv `extra_channels` more input channels, zero-initialised (the model's function
    unchanged); returns the new conv's parameters."""
    import torch
    from torch import nn

    convs = model.unet.conv_in
    old = convs.convs[task]
    new = nn.Conv2d(old.in_channels + extra_channels, old.out_channels, old.kernel_size, old.stride, old.padding,
                    bias=old.bias is not None, dtype=old.weight.dtype, device=old.weight.device)
    with torch.no_grad():
        new.weight.zero_()
        new.weight[:, : old.in_channels].copy_(old.weight)
        if old.bias is not None:
            new.bias.copy_(old.bias)
    convs.convs[task] = new
    convs.channels[convs.task_names.index(task)] = new.in_channels
    return list(new.parameters())


def extra_parameters(unet, extra: str) -> list:
    """The UNet's parameters under `EXTRA[extra]`'s name prefixes that the run does not already train (MTU's own
    parameters keep their groups)."""
    prefixes = EXTRA[extra]
    if not prefixes:
        return []
    return [param for name, param in unet.named_parameters()
            if name.startswith(prefixes) and not param.requires_grad]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--extra", required=True, choices=sorted(EXTRA))
    parser.add_argument("--config", default=str(HERE / "recipes" / "toyworld-sr-only.yaml"))
    parser.add_argument("--out", required=True, help="the run's output folder (replaces the config's)")
    parser.add_argument("--log", required=True, help="JSON-lines file the scored row is appended to")
    parser.add_argument("--count", type=int, default=256)
    parser.add_argument("--step-offset", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--pixel-scale", type=float, default=1.0,
                        help="with --extra pixels: the pixel channels times this (their weights learn this much faster)")
    args = parser.parse_args(argv)
    if args.count < 1:
        parser.error(f"--count {args.count}: must be 1 or more")
    if args.pixel_scale <= 0 or (args.pixel_scale != 1.0 and args.extra != "pixels"):
        parser.error(f"--pixel-scale {args.pixel_scale}: must be > 0, and only with --extra pixels")

    import torch

    from checkpoint_progress import append_rows, score_pipeline
    from edit_diagnosis import _add_param_group
    from mtu.toyworld.experiment import pipeline_for
    from mtu.training.config import load_train_config
    from mtu.training.trainer import Trainer

    torch.set_num_threads(args.threads)
    # A fresh run each time (the extra group is not in the trainer's checkpoints, so a resume could not restore it);
    # checkpoints only at the end.
    config = load_train_config(args.config, {"output_dir": args.out, "resume": "none", "checkpoint_every": 0})
    trainer = Trainer(config)
    model = trainer.accelerator.unwrap_model(trainer.model)
    params = [param.requires_grad_(True) for param in extra_parameters(model.unet, args.extra)]
    patches = ExitStack()
    if args.extra == "pixels":
        import mtu.pipelines.common as pipeline_common
        import mtu.training.step as step

        factor = 2 ** (len(trainer.parts.vae.config.block_out_channels) - 1)  # pixels per latent cell, each way
        pixel_channels = 3 * factor**2
        params = widen_input_conv(model, "sr", pixel_channels)
        start = params[0].detach().clone()
        trainer.task_channels["sr"] += pixel_channels
        for module in (step, pipeline_common):
            patches.enter_context(mock.patch.object(module, "condition_channels",
                                                    with_pixels(module.condition_channels, args.pixel_scale)))
    print(f"extra trainable ({args.extra}): {sum(p.numel() for p in params):,} weights")
    _add_param_group(trainer, params, config.optim.lr, trainer.lr_scheduler.lr_lambdas[0])
    with patches:
        trainer.train()
        if args.extra == "pixels":  # how far the pixel channels' weights moved from their zero start
            change = (params[0].detach() - start).abs()
            print(f"sr input conv, mean |change| of the weights: pixel channels "
                  f"{change[:, -pixel_channels:].mean():.5f}, latent and condition channels "
                  f"{change[:, :-pixel_channels].mean():.5f}")
        pipe = pipeline_for(trainer.trained_model(ema=True), config.model.base)
        rows = score_pipeline(pipe, ["sr"], args.count, 0, args.step_offset + config.max_steps,
                              f"{args.out} (sr_capacity --extra {args.extra} --pixel-scale {args.pixel_scale})")
    append_rows(args.log, rows)
    for row in rows:
        summary = row["summary"]
        print(row["task"], f"psnr {summary['psnr']['value']:.2f}", f"read_back {summary['read_back']['value']:.3f}")


if __name__ == "__main__":
    main()
