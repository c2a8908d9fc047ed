"""Does guidance on the low-resolution image sharpen sr's read-back? (issue 11, sixteenth round)

The shipped model's sr read-back, scored on the same 256 validation scenes under 8 sampling seeds
(`checkpoint_progress.py --across-seeds`), is 0.74 on average, but only 42% of the scenes are read back under every
seed and 5% under none: for half of them the model's samples spread over scenes the input does not allow, so the
read-back is held by how sharply the model's distribution follows its condition, more than by what the condition
holds. Classifier-free guidance is the field's way to sharpen a conditional (Ho & Salimans, 2022; Stable
Diffusion's x4 upscaler samples with it); the paper samples sr without guidance (Appendix A.2), and its training
never drops sr's image, so the model has no unconditional branch. One change to the fourteenth round's sr-only run
(`benchmarks/recipes/toyworld-sr-only.yaml`, the shipped model trained on sr alone): sr's condition dropped (zeros,
as InstructPix2Pix's unconditional image) for a `--dropout` share of its samples; then the same model sampled at
image guidance `s` (noise prediction u + s (c - u), c with the condition, u with zeros) for each of `--scales`,
s = 1 being no guidance. Each scale's rows go to its own log, so that `checkpoint_progress.py --compare` pairs it
with the sr-only run (dropout's own cost at s = 1) or with this run's s = 1 (what guidance buys):

    OMP_NUM_THREADS=1 python benchmarks/sr_guidance.py --out /work/longrun/runs/sr-guidance \\
        --log-prefix benchmarks/results/longrun/sr-guidance --step-offset 48000
    python benchmarks/checkpoint_progress.py --compare benchmarks/results/longrun/sr-guidance-s1-validation.jsonl \\
        benchmarks/results/longrun/sr-guidance-s2-validation.jsonl

A departure from the paper's sr recipe (a diagnosis): it tells whether sampling, not the condition, caps read-back.
"""

from __future__ import annotations

import argparse
import sys
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # checkpoint_progress, beside this file


def with_condition_dropout(guidance_dropout, p: float):
    """`step.guidance_dropout` that also drops the image of prompt-less tasks (sr) for draws below `p` (their text
    is empty anyway); the prompted tasks' draws are unchanged."""

    def dropout(draws, guided, dropout_p):
        drop_text, keep_image = guidance_dropout(draws, guided, dropout_p)
        return drop_text, keep_image & ~(~guided & (draws < p))

    return dropout


@contextmanager
def condition_guidance(unet, latent_channels: int, scale: float, task: str = "sr"):
    """Within the block, `unet` (an MTU UNet) samples `task` with guidance on its condition channels: u + scale
    (c - u), u the prediction with the condition channels (those after the first `latent_channels`) zeroed. Other
    tasks, and scale 1, run as before."""
    import torch

    forward = unet.forward
    had_own = "forward" in vars(unet)

    def guided(sample, timestep, *args, task=None, **kwargs):
        conditional = forward(sample, timestep, *args, task=task, **kwargs)
        if task != guided_task or scale == 1.0:
            return conditional
        empty = torch.cat([sample[:, :latent_channels], torch.zeros_like(sample[:, latent_channels:])], dim=1)
        unconditional = forward(empty, timestep, *args, task=task, **kwargs)
        if isinstance(conditional, tuple):  # return_dict=False, as the pipeline calls it
            return (unconditional[0] + scale * (conditional[0] - unconditional[0]), *conditional[1:])
        conditional.sample = unconditional.sample + scale * (conditional.sample - unconditional.sample)
        return conditional

    guided_task = task
    unet.forward = guided
    try:
        yield unet
    finally:
        if had_own:
            unet.forward = forward
        else:
            del unet.forward


def _scale_name(scale: float) -> str:
    return f"{scale:g}".replace(".", "p")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(HERE / "recipes" / "toyworld-sr-only.yaml"))
    parser.add_argument("--out", required=True, help="the run's output folder (replaces the config's)")
    parser.add_argument("--log-prefix", required=True, help="each scale's rows go to PREFIX-sSCALE-validation.jsonl")
    parser.add_argument("--dropout", type=float, default=0.1, help="share of sr samples trained without the image")
    parser.add_argument("--scales", default="1,1.5,2,3", help="image guidance scales to sample at (1: none)")
    parser.add_argument("--count", type=int, default=256)
    parser.add_argument("--step-offset", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--score-only", action="store_true",
                        help="no training: sample the config's adapter (model.adapter) as it is at each scale")
    args = parser.parse_args(argv)
    if not 0.0 < args.dropout <= 0.5:
        parser.error(f"--dropout {args.dropout}: must be in (0, 0.5]")
    try:
        scales = [float(value) for value in args.scales.split(",")]
    except ValueError:
        parser.error(f"--scales {args.scales!r}: expected numbers separated by commas")
    if not scales or min(scales) < 1.0:
        parser.error(f"--scales {args.scales!r}: every scale must be 1 or more")
    from checkpoint_progress import refuse_below

    refuse_below(parser, (("--count", args.count, 1), ("--step-offset", args.step_offset, 0),
                          ("--threads", args.threads, 1)))

    import torch

    import mtu.training.step as step
    from checkpoint_progress import append_rows, score_pipeline
    from mtu.toyworld.experiment import pipeline_for
    from mtu.training.config import load_train_config
    from mtu.training.trainer import Trainer

    torch.set_num_threads(args.threads)
    config = load_train_config(args.config, {"output_dir": args.out, "resume": "none", "checkpoint_every": 0})
    if args.score_only:
        if not config.model.adapter:
            parser.error(f"--score-only: the config {args.config} names no model.adapter to score")
        from mtu.pipelines import MTUPipeline

        pipe, step_count, what = MTUPipeline.from_base(config.model.base, config.model.adapter), 0, "as trained"
        pipe.set_progress_bar_config(disable=True)
    else:
        with mock.patch.object(step, "guidance_dropout", with_condition_dropout(step.guidance_dropout, args.dropout)):
            trainer = Trainer(config)
            trainer.train()
        pipe = pipeline_for(trainer.trained_model(ema=True), config.model.base)
        step_count, what = config.max_steps, f"--dropout {args.dropout}"
    latent_channels = pipe.vae.config.latent_channels
    for scale in scales:
        with condition_guidance(pipe.unet, latent_channels, scale):
            rows = score_pipeline(pipe, ["sr"], args.count, 0, args.step_offset + step_count,
                                  f"{args.out} (sr_guidance {what} --scale {scale:g})")
        append_rows(f"{args.log_prefix}-s{_scale_name(scale)}-validation.jsonl", rows)
        summary = rows[0]["summary"]
        print(f"scale {scale:g}: psnr {summary['psnr']['value']:.2f}, read_back {summary['read_back']['value']:.3f}")


if __name__ == "__main__":
    main()
