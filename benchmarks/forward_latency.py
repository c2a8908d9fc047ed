"""Forward latency and FLOPs: base vs folded vs unfolded MTU, measured side by side in one run.

    python benchmarks/forward_latency.py [--arch sd15] [--latent 32] [--repeats 7] [--experts 4] [--task t2i]

The three models run round-robin (base, folded, MTU, base, ...) so machine noise hits them alike; the table shows
the median of `--repeats` timed forwards after 2 warm-ups, and ratios to the base.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

import mtu
from mtu.architectures import build_unet, unet_config
from mtu.inspection import count_flops, unet_inputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="sd15", choices=("sd15", "sdxl", "tiny"))
    parser.add_argument("--latent", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--experts", type=int, default=4)
    parser.add_argument("--task", default="t2i")
    args = parser.parse_args()
    if args.repeats < 5:
        parser.error(f"--repeats must be >= 5 for a median, got {args.repeats}")

    base = build_unet(args.arch, seed=0).eval()
    model = mtu.upcycle(copy.deepcopy(base), mtu.MTUConfig(num_experts=args.experts)).eval()
    with torch.no_grad():  # as if trained, so no shortcut hides behind initial values
        for _, param in model.mtu_named_parameters():
            param.add_(0.01 * torch.randn_like(param))
    folded = model.fold(args.task).eval()
    channels = model.task_in_channels(args.task)
    base_inputs = unet_inputs(unet_config(args.arch), (args.latent, args.latent))
    inputs = unet_inputs(unet_config(args.arch), (args.latent, args.latent), in_channels=channels)
    runs = {
        "base": (lambda: base(**base_inputs)),
        "folded": (lambda: folded(**inputs)),
        "MTU (unfolded)": (lambda: model(**inputs, task=args.task)),
    }
    times = {name: [] for name in runs}
    with torch.inference_mode():
        for repeat in range(args.repeats + 2):
            for name, run in runs.items():
                start = time.perf_counter()
                run()
                if repeat >= 2:
                    times[name].append(time.perf_counter() - start)
    flops = {"base": count_flops(base, base_inputs), "folded": count_flops(folded, inputs),
             "MTU (unfolded)": count_flops(model, inputs, task=args.task)}

    print(f"{args.arch}, task {args.task}, N={args.experts}, batch 1, latents {args.latent}x{args.latent}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, median of {args.repeats}")
    print("| model | median ms | min ms | max ms | latency / base | GFLOPs | FLOPs / base |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    base_median = statistics.median(times["base"])
    for name in runs:
        median = statistics.median(times[name])
        print(f"| {name} | {median * 1e3:.1f} | {min(times[name]) * 1e3:.1f} | {max(times[name]) * 1e3:.1f} | "
              f"{median / base_median:.3f} | {flops[name] / 1e9:.2f} | {flops[name] / flops['base']:.4f} |")


if __name__ == "__main__":
    main()
