"""Per-step latency and peak memory on the CPU: base, MTU folded, MTU unfolded, a peft LoRA on the FFNs left
unmerged, and the folded model's ONNX export in onnxruntime; SD1.5 and SDXL architectures at random init.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/latency_cpu.py [--archs sd15 sdxl] [--latent 16] [--steps 8]
        [--together sd15]

One step is one UNet forward of a classifier-free-guidance batch (2 samples, 77 text tokens, task t2i) at
`--latent` x `--latent` latents, float32. Each model runs in its own process, one after another (an SDXL UNet is
10 GB in float32; two do not fit beside this machine's other work). A process builds its model in bfloat16 (half
the memory while upcycling and folding), casts it to float32, then resets the peak-RSS counter (/proc/self/
clear_refs) and runs 2 warm-up and `--steps` steps; "at rest" is its RSS before the steps (weights, libraries),
"peak" the highest RSS during them. Latency is the CPU time of a step (`time.process_time`; the runs are single-
threaded): on a shared machine a process niced to 10 waits for the CPU far longer than it computes, so its wall
time (also shown) measures the machine's load, not the model. MTU: N=4, G=1/4, tasks t2i, edit, sr, inpaint, every MTU tensor moved off
its init; "folded" is `TaskSwitchingUNet(model).unet` (bit-identical to `mtu.fold`). LoRA: rank of the project's
LoRA baseline (`matched_lora_rank`: four task adapters hold MTU's trainable count), one task's adapter, unmerged.
ONNX: the folded UNet exported by `mtu.export.onnx_export.export_unet`, run by onnxruntime with as many intra-op
threads as torch has. `--together ARCH` also times the five round-robin in one process (their weights shared where
they are the same tensors), which a busy machine slows alike: the fairer latency ratios, where memory allows.
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import gc
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

VARIANTS = ("base", "folded", "unfolded", "lora", "onnx")
LABELS = {"base": "base (stock UNet)", "folded": "MTU folded", "unfolded": "MTU unfolded (routed)",
          "lora": "peft LoRA on FFNs, unmerged", "onnx": "MTU folded, ONNX in onnxruntime"}
TASKS = ["t2i", "edit", "sr", "inpaint"]


def memory_gb() -> dict[str, float]:
    """This process's resident set now and its peak since the last reset (GB)."""
    status = Path("/proc/self/status").read_text()
    return {key: int(re.search(rf"{key}:\s+(\d+)", status).group(1)) / 1e6 for key in ("VmRSS", "VmHWM")}


def settle() -> None:
    """Frees what the build left behind and resets the peak-RSS counter."""
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")


def mtu_model(arch: str):
    """The MTU model of `arch` at random init, in bfloat16, every MTU tensor moved off its init."""
    import mtu
    from mtu.architectures import build_unet

    torch.set_default_dtype(torch.bfloat16)
    try:
        model = mtu.upcycle(build_unet(arch, seed=0), mtu.MTUConfig(tasks=TASKS), fingerprint=False).eval()
    finally:
        torch.set_default_dtype(torch.float32)
    with torch.no_grad():
        for _, param in model.mtu_named_parameters():
            param.add_(0.01 * torch.randn_like(param))
    return model


def folded_unet(arch: str):
    from mtu.export import TaskSwitchingUNet

    return TaskSwitchingUNet(mtu_model(arch), tasks=["t2i"]).unet.float()


def base_unet(arch: str):
    from mtu.architectures import build_unet

    torch.set_default_dtype(torch.bfloat16)
    try:
        return build_unet(arch, seed=0).eval()
    finally:
        torch.set_default_dtype(torch.float32)


def lora_model(arch: str, unet=None, trainable: int | None = None):
    """(peft LoRA on the FFNs of `unet` (default a new base) at the project's LoRA-baseline rank, the rank)."""
    from peft import LoraConfig, get_peft_model

    from mtu.training.methods import FFN_TARGETS, matched_lora_rank

    if trainable is None:
        model = mtu_model(arch)
        trainable = sum(param.numel() for _, param in model.mtu_named_parameters())
        del model
    unet = unet if unet is not None else base_unet(arch).float()
    rank = matched_lora_rank(unet, TASKS, trainable)
    config = LoraConfig(r=rank, lora_alpha=rank, target_modules="|".join(f"({t})" for t in FFN_TARGETS),
                        init_lora_weights="gaussian")
    return get_peft_model(unet, config).eval(), rank


def onnx_feed(inputs: dict) -> dict:
    """The exported UNet's inputs (`export_unet`'s names) from the PyTorch UNet's keyword arguments."""
    return {"sample": inputs["sample"], "timestep": inputs["timestep"].float(),
            "encoder_hidden_states": inputs["encoder_hidden_states"], **inputs.get("added_cond_kwargs", {})}


def build_step(arch: str, variant: str, inputs: dict, folder: Path) -> tuple:
    """(a function running one step, notes) for `variant`."""
    if variant == "base":
        unet = base_unet(arch).float()
        return (lambda: unet(**inputs)), {}
    if variant == "folded":
        unet = folded_unet(arch)
        return (lambda: unet(**inputs)), {}
    if variant == "unfolded":
        model = mtu_model(arch).float()
        return (lambda: model(**inputs, task="t2i")), {}
    if variant == "lora":
        model, rank = lora_model(arch)
        return (lambda: model(**inputs)), {"rank": rank}
    from mtu.export.onnx_export import export_unet, session

    start = time.perf_counter()
    path = export_unet(folded_unet(arch), folder / f"{arch}-unet")
    export_s = time.perf_counter() - start
    gc.collect()
    runner = session(path, threads=torch.get_num_threads())
    feed = {name: value.numpy() for name, value in onnx_feed(inputs).items()}
    return (lambda: runner.run(None, feed)), {"export_s": export_s,
                                             "onnx_gb": sum(p.stat().st_size for p in path.parent.iterdir()) / 1e9}


def child(arch: str, variant: str, latent: int, steps: int, folder: Path) -> dict:
    from mtu.architectures import unet_config
    from mtu.inspection import unet_inputs

    inputs = unet_inputs(unet_config(arch), (latent, latent), batch_size=2)
    start = time.perf_counter()
    step, notes = build_step(arch, variant, inputs, folder)
    build_s = time.perf_counter() - start
    notes["build_peak_gb"] = memory_gb()["VmHWM"]  # building, folding, exporting: the peak before the steps
    settle()
    rest = memory_gb()["VmRSS"]
    cpu, wall = [], []
    with torch.inference_mode():
        for index in range(steps + 2):
            start, start_cpu = time.perf_counter(), time.process_time()
            step()
            if index >= 2:
                cpu.append(time.process_time() - start_cpu)
                wall.append(time.perf_counter() - start)
    return {"arch": arch, "variant": variant, "median_s": statistics.median(cpu), "min_s": min(cpu),
            "wall_median_s": statistics.median(wall), "rest_gb": rest, "peak_gb": memory_gb()["VmHWM"],
            "build_s": build_s, "threads": torch.get_num_threads(), **notes}


def together(arch: str, latent: int, steps: int, folder: Path) -> dict[str, list[float]]:
    """Step times of every variant in one process, round-robin (base, folded, ..., base, ...), so that the machine's
    other work slows them alike. The variants share the base's frozen tensors (a structural copy with the same
    parameters is upcycled; LoRA wraps another), so SD1.5's five fit in memory at once."""
    import mtu
    from mtu.architectures import unet_config
    from mtu.export import TaskSwitchingUNet
    from mtu.export.onnx_export import export_unet, session
    from mtu.inspection import unet_inputs

    inputs = unet_inputs(unet_config(arch), (latent, latent), batch_size=2)
    base = base_unet(arch).float()
    tied = {id(tensor): tensor for tensor in [*base.parameters(), *base.buffers()]}
    model = mtu.upcycle(copy.deepcopy(base, memo=dict(tied)), mtu.MTUConfig(tasks=TASKS), fingerprint=False).eval()
    with torch.no_grad():
        for _, param in model.mtu_named_parameters():
            param.add_(0.01 * torch.randn_like(param))
    folded = TaskSwitchingUNet(model, tasks=["t2i"]).unet
    lora, _ = lora_model(arch, unet=copy.deepcopy(base, memo=dict(tied)),
                         trainable=sum(param.numel() for _, param in model.mtu_named_parameters()))
    runner = session(export_unet(folded, folder / f"{arch}-together"), threads=torch.get_num_threads())
    feed = {name: value.numpy() for name, value in onnx_feed(inputs).items()}
    runs = {"base": lambda: base(**inputs), "folded": lambda: folded(**inputs),
            "unfolded": lambda: model(**inputs, task="t2i"), "lora": lambda: lora(**inputs),
            "onnx": lambda: runner.run(None, feed)}
    times = {name: [] for name in runs}
    with torch.inference_mode():
        for index in range(steps + 2):
            for name, run in runs.items():
                start = time.process_time()
                run()
                if index >= 2:
                    times[name].append(time.process_time() - start)
    return times


def run_child(args, arch: str, variant: str, folder: Path) -> dict:
    command = [sys.executable, __file__, "--child", arch, variant, "--latent", str(args.latent), "--steps",
               str(args.steps), "--folder", str(folder)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        tail = (result.stderr.strip().splitlines() or ["no output"])[-1]
        return {"arch": arch, "variant": variant, "error": f"exit {result.returncode}: {tail}"}
    return json.loads(result.stdout.strip().splitlines()[-1])


def print_table(arch: str, rows: list[dict]) -> None:
    base = next(row for row in rows if row["variant"] == "base")
    print(f"\n{arch}: batch 2 (CFG), latents {rows[0].get('latent')}x{rows[0].get('latent')}, float32, "
          f"{base.get('threads')} thread(s), torch {torch.__version__}")
    print("| model | CPU ms / step (median) | min | CPU time / base | wall ms (median) | at rest GB | peak GB | "
          "peak / base | notes |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for row in rows:
        if "error" in row:
            print(f"| {LABELS[row['variant']]} | - | - | - | - | - | - | - | failed: {row['error']} |")
            continue
        notes = ", ".join(f"{key} {value:.1f}" if isinstance(value, float) else f"{key} {value}"
                          for key, value in row.items() if key in ("rank", "export_s", "onnx_gb", "build_peak_gb"))
        print(f"| {LABELS[row['variant']]} | {row['median_s'] * 1e3:.0f} | {row['min_s'] * 1e3:.0f} | "
              f"{row['median_s'] / base['median_s']:.3f} | {row['wall_median_s'] * 1e3:.0f} | {row['rest_gb']:.2f} | "
              f"{row['peak_gb']:.2f} | "
              f"{row['peak_gb'] / base['peak_gb']:.3f} | {notes} |")


def print_together(arch: str, times: dict[str, list[float]], latent: int) -> None:
    base = statistics.median(times["base"])
    print(f"\n{arch}: the same steps round-robin in one process (batch 2, latents {latent}x{latent}, float32, "
          f"{torch.get_num_threads()} thread(s))")
    print("| model | CPU ms / step (median) | min | CPU time / base | min / base min |")
    print("|---|---:|---:|---:|---:|")
    for name, values in times.items():
        print(f"| {LABELS[name]} | {statistics.median(values) * 1e3:.0f} | {min(values) * 1e3:.0f} | "
              f"{statistics.median(values) / base:.3f} | {min(values) / min(times['base']):.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", nargs="+", default=["sd15", "sdxl"], choices=("sd15", "sdxl", "tiny"))
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--latent", type=int, default=16)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--together", nargs="*", default=[], choices=("sd15", "tiny"),
                        help="also time these archs' five variants round-robin in one process (memory: SD1.5 fits)")
    parser.add_argument("--json", default=None, help="also write every row to this JSON file")
    parser.add_argument("--child", nargs=2, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--folder", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        # If memory runs out, the kernel's OOM killer takes this process before anything else on the machine
        Path("/proc/self/oom_score_adj").write_text("1000")
        print(json.dumps({**child(*args.child, args.latent, args.steps, Path(args.folder)), "latent": args.latent}))
        return
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for arch in args.archs:
            arch_rows = [run_child(args, arch, variant, Path(folder)) for variant in args.variants]
            rows += arch_rows
            print_table(arch, arch_rows)
        for arch in args.together:
            times = together(arch, args.latent, args.steps, Path(folder))
            rows.append({"arch": arch, "together": times})
            print_together(arch, times, args.latent)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
