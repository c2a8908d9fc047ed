"""Is capacity where the condition is read what holds the shipped model's sr read-back? (issue 11, fifteenth round)

The fourteenth round trained the shipped model on sr alone (`benchmarks/recipes/toyworld-sr-only.yaml`, MTU's own
parameters: experts, routers, task LayerNorms, the task's `conv_in`) and the read-back tied. One change to that
run: more of the UNet trainable, in its own Adam group on the run's rate and schedule (outside the trainer's
gradient clipping, as edit_diagnosis.py's cross-attention rows), a diagnosis-only change since MTU freezes them:

- `read`: the first down block's ResNets (`down_blocks.0.resnets`), the layers right after `conv_in`, which is
  where the condition's latents are first mixed with the noisy latents;
- `all`: every UNet weight (MTU's parameters as in the run; the rest in the extra group): an upper bound on what
  capacity buys at this budget.

The model is scored as `checkpoint_progress.py` scores a checkpoint (256 validation sr scenes by default, the same
noise) and the row appended to `--log` at the run's last step plus `--step-offset`, so that `checkpoint_progress.py
--compare CONTROL_LOG THIS_LOG` pairs it with the sr-only run at the same step (PSNR and read-back):

    OMP_NUM_THREADS=1 python benchmarks/sr_capacity.py --extra read --out /work/longrun/runs/sr-capacity-read \\
        --step-offset 48000 --log benchmarks/results/longrun/sr-capacity-read-validation.jsonl
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # checkpoint_progress, beside this file

EXTRA = {"read": ("down_blocks.0.resnets.",), "all": ("",)}


def extra_parameters(unet, extra: str) -> list:
    """The UNet's parameters under `EXTRA[extra]`'s name prefixes that the run does not already train (MTU's own
    parameters keep their groups)."""
    prefixes = EXTRA[extra]
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
    args = parser.parse_args(argv)
    if args.count < 1:
        parser.error(f"--count {args.count}: must be 1 or more")

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
    unet = trainer.accelerator.unwrap_model(trainer.model).unet
    params = [param.requires_grad_(True) for param in extra_parameters(unet, args.extra)]
    print(f"extra trainable ({args.extra}): {sum(p.numel() for p in params):,} weights")
    _add_param_group(trainer, params, config.optim.lr, trainer.lr_scheduler.lr_lambdas[0])
    trainer.train()
    pipe = pipeline_for(trainer.trained_model(ema=True), config.model.base)
    rows = score_pipeline(pipe, ["sr"], args.count, 0, args.step_offset + config.max_steps,
                          f"{args.out} (sr_capacity --extra {args.extra})")
    append_rows(args.log, rows)
    for row in rows:
        summary = row["summary"]
        print(row["task"], f"psnr {summary['psnr']['value']:.2f}", f"read_back {summary['read_back']['value']:.3f}")


if __name__ == "__main__":
    main()
