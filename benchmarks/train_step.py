"""Training step time and peak memory: MTU vs full fine-tuning vs LoRA (and IA3), measured side by side in one run.

    python benchmarks/train_step.py [--arch sd15] [--latent 32] [--rounds 3] [--steps 3]
                                    [--methods mtu,full,lora,ia3] [--raw FILE]

Each method's model is built exactly as the trainer builds it (`build_unet` at seeded random init, then
`mtu.training.methods.build_model` with tasks t2i, edit, sr, inpaint; since issue 12 `lora` / `ia3` hold one adapter
per task, and `lora_shared` / `ia3_shared` the one shared adapter the recorded rows measured) and trained as the
trainer trains it: fp32, `torch.optim.Adam` (lr 1e-4) over `trainable_parameters`, `clip_grad_norm_` at 1.0,
`zero_grad(set_to_none=True)`.
One step = forward of a batch of 1 for task "edit" (8 input channels), MSE to random noise, backward, clip, Adam
step, zero_grad. Only the UNet is measured: the frozen VAE and text encoder are the same for every method.

Every method runs in its own process (this script re-invoked with `--worker METHOD`, printing one JSON line), so
peak memory is that process's own. The processes run one after another, never at once, in `--rounds` rounds (the
method order rotates each round) of 2 warm-up + `--steps` timed steps, so machine noise hits all methods alike.

Memory columns, from each worker:
  peak RSS        the training steps' peak resident memory (`ru_maxrss`, after the high-water mark was reset
                  once the model was built, so transient copies made while building do not count);
  training state  that peak minus the resident memory right after building: gradients, Adam moments and
                  activations, i.e. what a method adds on top of the weights it holds.
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

TASKS = ["t2i", "edit", "sr", "inpaint"]
TASK = "edit"
RESULT_PREFIX = "TRAIN_STEP_RESULT "


def _rss_kib() -> int:
    """Current resident memory of this process, KiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS line in /proc/self/status")


def _reset_peak_rss() -> bool:
    """Resets this process's RSS high-water mark (what `ru_maxrss` reports) to the current RSS; Linux only."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        return True
    except OSError:
        return False


def run_worker(method: str, arch: str, latent: int, warmup: int, steps: int) -> dict:
    """Builds `method`'s model, runs warm-up + timed training steps, and returns timings and memory."""
    from mtu.architectures import build_unet, unet_config
    from mtu.inspection import unet_inputs
    from mtu.training.config import ModelConfig
    from mtu.training.methods import build_model, trainable_parameters

    unet = build_unet(arch, seed=0)
    model = build_model(unet, ModelConfig(base=f"random:{arch}", method=method), TASKS)
    model.train()
    params = list(trainable_parameters(model).values())
    optimizer = torch.optim.Adam(params, lr=1e-4)  # the trainer's default OptimConfig
    torch.manual_seed(0)
    inputs = unet_inputs(unet_config(arch), (latent, latent), in_channels=model.task_in_channels(TASK))
    target = torch.randn(1, unet_config(arch)["out_channels"], latent, latent)

    gc.collect()
    built_kib, build_peak_kib = _rss_kib(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    reset = _reset_peak_rss()
    times = []
    for step in range(warmup + steps):
        start = time.perf_counter()
        prediction = model(**inputs, task=[TASK]).sample
        loss = F.mse_loss(prediction, target)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step >= warmup:
            times.append(time.perf_counter() - start)
        if not torch.isfinite(loss):
            raise RuntimeError(f"{method}: non-finite loss at step {step}")
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"method": method, "trainable": sum(p.numel() for p in params), "times": times,
            "built_kib": built_kib, "build_peak_kib": build_peak_kib, "peak_kib": peak_kib, "peak_reset": reset,
            "threads": torch.get_num_threads(), "torch": torch.__version__}


def _spawn(method: str, args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--worker", method, "--arch", args.arch, "--latent", str(args.latent),
               "--steps", str(args.steps)]
    done = subprocess.run(command, check=False, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"worker {method!r} failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    return json.loads(lines[-1][len(RESULT_PREFIX):])


def _mib(kib: float) -> float:
    return kib / 1024


def print_table(args: argparse.Namespace, results: dict[str, list[dict]]) -> None:
    rows = {}
    for method, runs in results.items():
        times = [t for run in runs for t in run["times"]]
        peak = max(run["peak_kib"] for run in runs)
        state = max(run["peak_kib"] - run["built_kib"] for run in runs)
        rows[method] = {"trainable": runs[0]["trainable"], "median": statistics.median(times),
                        "min": min(times), "max": max(times), "peak": peak, "state": state}
    first = results[args.methods[0]][0]
    count = len(next(iter(results.values()))) * args.steps
    print(f"{args.arch}, task {TASK}, batch 1, latents {args.latent}x{args.latent}, fp32, Adam lr 1e-4, clip 1.0, "
          f"torch {first['torch']}, {first['threads']} threads; each method in its own process, run sequentially "
          f"in {args.rounds} interleaved rounds; median of {count} steps after 2 warm-ups per round")
    print("| method | trainable params | step ms (median) | min ms | max ms | step / full | peak RSS MiB | "
          "peak / full | training-state MiB | state / full |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    full = rows["full"]
    for method, row in rows.items():
        print(f"| {method} | {row['trainable']:,} | {row['median'] * 1e3:.0f} | {row['min'] * 1e3:.0f} | "
              f"{row['max'] * 1e3:.0f} | {row['median'] / full['median']:.3f} | {_mib(row['peak']):,.0f} | "
              f"{row['peak'] / full['peak']:.3f} | {_mib(row['state']):,.0f} | {row['state'] / full['state']:.3f} |")
    for method, runs in results.items():
        if not all(run["peak_reset"] for run in runs):
            print(f"note: {method}: could not reset the RSS high-water mark; its peak includes model building")
        elif any(run["build_peak_kib"] > run["peak_kib"] for run in runs):
            build = max(run["build_peak_kib"] for run in runs)
            print(f"note: {method}: building peaked at {_mib(build):,.0f} MiB, above its training peak")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="sd15", choices=("sd15", "sdxl", "tiny"))
    parser.add_argument("--latent", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per method per round")
    parser.add_argument("--methods", default="mtu,full,lora,ia3")
    parser.add_argument("--raw", default=None, help="also write every worker's raw result to this JSON file")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        result = run_worker(args.worker, args.arch, args.latent, warmup=2, steps=args.steps)
        print(RESULT_PREFIX + json.dumps(result), flush=True)
        return
    args.methods = [name.strip() for name in args.methods.split(",") if name.strip()]
    if "full" not in args.methods:
        parser.error(f"--methods must include full (the reference for the ratios), got {args.methods}")
    if args.rounds * args.steps < 5:
        parser.error(f"--rounds * --steps must be >= 5 for a median, got {args.rounds * args.steps}")

    results: dict[str, list[dict]] = {name: [] for name in args.methods}
    for round_index in range(args.rounds):
        shift = round_index % len(args.methods)  # rotate the order so no method always runs first
        for method in args.methods[shift:] + args.methods[:shift]:
            start = time.perf_counter()
            results[method].append(_spawn(method, args))
            print(f"round {round_index + 1}/{args.rounds}: {method} done in {time.perf_counter() - start:.0f} s",
                  file=sys.stderr, flush=True)
    if args.raw:
        with open(args.raw, "w") as raw:
            json.dump(results, raw, indent=1)
    print_table(args, results)


if __name__ == "__main__":
    main()
