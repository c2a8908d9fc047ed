"""One command for the GPU figures: inference latency (eager and compiled) and training throughput, MFU and peak
memory of MTU vs full fine-tuning vs LoRA, on the SD1.5 and SDXL architectures at random init.

    python benchmarks/gpu.py --out gpu-bench                          # a CUDA GPU; < 5 minutes on one H100/H200
    python benchmarks/gpu.py --device cpu --tiny --out /tmp/gpu-tiny  # the same code on tiny UNets, in seconds

Latency: one step = one UNet forward of a classifier-free-guidance batch (2 samples, 77 tokens, task t2i) at
`--latent` x `--latent` latents (64: 512 px for SD1.5), weights in bfloat16; base, MTU folded
(`TaskSwitchingUNet(model).unet`, = `mtu.fold`), MTU unfolded and a peft LoRA on the FFNs left unmerged, eager and
`torch.compile`d (LoRA eager only). Training: `--train-batch` samples per step (16 for SD1.5, 8 for SDXL) at the
same latents, float32 weights under bfloat16 autocast (accelerate's "bf16"), AdamW, MSE on the noise; MTU (N=4,
G=1/4), full fine-tuning and per-task LoRA at the rank matching MTU's trainable count (`mtu.training.methods`).
MFU = FLOPs of one step (`torch.utils.flop_counter`, forward + backward as executed) / step time / the card's peak
dense bf16 FLOP/s.
Every section appends to OUT/gpu.json as it finishes, and OUT/gpu.md holds the tables.
`--tiny` runs tiny SD- and SDXL-shaped UNets at 8x8 latents, once each, without compiling (`--compile eager`
traces with dynamo only, `--compile inductor` compiles as on a GPU).
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

import mtu
from mtu.architectures import build_unet, unet_config
from mtu.export import TaskSwitchingUNet
from mtu.inspection import unet_inputs
from mtu.training.config import ModelConfig
from mtu.training.methods import build_model, matched_lora_rank

TASKS = ["t2i", "edit", "sr", "inpaint"]
# Peak dense bf16 tensor FLOP/s by card name (the vendor's datasheet, without sparsity); --peak-tflops overrides
PEAK_TFLOPS = {"H200": 989.0, "H100 PCIe": 756.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 70.0}
TINY_SDXL = {"block_out_channels": [32, 64, 64], "attention_head_dim": [2, 4, 4], "layers_per_block": 1,
             "transformer_layers_per_block": [1, 1, 1], "norm_num_groups": 16, "cross_attention_dim": 64,
             "addition_time_embed_dim": 8, "projection_class_embeddings_input_dim": 6 * 8 + 32}
TINY_ARCHS = {"sd15": ("tiny", {}), "sdxl": ("sdxl", TINY_SDXL)}
TRAIN_BATCH = {"sd15": 16, "sdxl": 8}  # samples per training step; SDXL's full fine-tuning state is ~41 GB in fp32


def architecture(arch: str, tiny: bool) -> tuple[str, dict]:
    """(shipped architecture, config overrides) of `arch` ("sd15" or "sdxl")."""
    return TINY_ARCHS[arch] if tiny else (arch, {})


def new_unet(arch: str, tiny: bool, device, dtype):
    """A UNet of `arch` at random init, built directly in `dtype` on `device`."""
    name, overrides = architecture(arch, tiny)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        return build_unet(name, seed=0, device=device, **overrides)
    finally:
        torch.set_default_dtype(previous)


def inputs_for(arch: str, tiny: bool, latent: int, batch: int, device, dtype) -> dict:
    name, overrides = architecture(arch, tiny)
    return unet_inputs({**unet_config(name), **overrides}, (latent, latent), batch_size=batch, device=device,
                       dtype=dtype)


def synchronize(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_time(run, device, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        run()
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


class PeakMemory:
    """Peak memory (GB) of what runs inside: CUDA's allocator peak, or on the CPU the peak RSS (Linux)."""

    def __init__(self, device):
        self.device, self.gb = device, None

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            Path("/proc/self/clear_refs").write_text("5")
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            self.gb = torch.cuda.max_memory_allocated(self.device) / 1e9
        else:
            status = Path("/proc/self/status").read_text()
            self.gb = int(re.search(r"VmHWM:\s+(\d+)", status).group(1)) / 1e6


def mtu_model(arch: str, tiny: bool, device, dtype):
    """The MTU model (N=4, G=1/4, four tasks), every MTU tensor moved off its init (as if trained)."""
    model = mtu.upcycle(new_unet(arch, tiny, device, dtype), mtu.MTUConfig(tasks=TASKS), fingerprint=False)
    with torch.no_grad():
        for _, param in model.mtu_named_parameters():
            param.add_(0.01 * torch.randn_like(param))
    return model.eval()


def lora_rank(arch: str, tiny: bool) -> int:
    """The rank of the project's LoRA baseline: its four task adapters hold MTU's trainable count (meta device)."""
    model = mtu.upcycle(new_unet(arch, tiny, "meta", torch.float32), mtu.MTUConfig(tasks=TASKS), fingerprint=False)
    trainable = sum(param.numel() for _, param in model.mtu_named_parameters())
    return matched_lora_rank(new_unet(arch, tiny, "meta", torch.float32), TASKS, trainable)


def latency_rows(arch: str, args, device) -> list[dict]:
    dtype = torch.bfloat16
    inputs = inputs_for(arch, args.tiny, args.latent, 2, device, dtype)
    model = mtu_model(arch, args.tiny, device, dtype)
    rank = lora_rank(arch, args.tiny)
    base = new_unet(arch, args.tiny, device, dtype).eval()
    lora = build_model(copy.deepcopy(base), ModelConfig(base=f"random:{arch}", method="lora", lora_rank=rank),
                       ["t2i"]).eval()
    runs = {"base": lambda module: module(**inputs), "MTU folded": lambda module: module(**inputs),
            "MTU unfolded": lambda module: module(**inputs, task="t2i"),
            f"peft LoRA r={rank}, unmerged": lambda module: module(**inputs, task="t2i")}
    modules = {"base": base, "MTU folded": TaskSwitchingUNet(model, tasks=["t2i"]).unet, "MTU unfolded": model,
               f"peft LoRA r={rank}, unmerged": lora}
    rows = []
    with torch.inference_mode():
        for name, module in modules.items():
            for compiled in (False, True):
                if compiled and ("LoRA" in name or args.compile == "none"):
                    continue
                target = torch.compile(module, backend=args.compile) if compiled else module
                start = time.perf_counter()
                runs[name](target)  # the first call compiles
                first = time.perf_counter() - start
                with PeakMemory(device) as peak:
                    seconds = median_time(lambda: runs[name](target), device, args.warmup, args.repeats)
                rows.append({"arch": arch, "model": name, "mode": "compiled" if compiled else "eager",
                             "ms": seconds * 1e3, "peak_gb": peak.gb, "first_call_s": first})
    for row in rows:
        reference = next(r for r in rows if r["model"] == "base" and r["mode"] == row["mode"])
        row["latency_vs_base"] = row["ms"] / reference["ms"]
    return rows


def trainer(method: str, arch: str, args, device):
    """(model, trainable parameters) of `method` over a fresh float32 UNet."""
    if method == "MTU":
        model = mtu_model(arch, args.tiny, device, torch.float32).train()
        return model, [param for _, param in model.mtu_named_parameters()]
    unet, rank = new_unet(arch, args.tiny, device, torch.float32), lora_rank(arch, args.tiny)
    config = ModelConfig(base=f"random:{arch}", method="lora" if method == "LoRA" else "full", lora_rank=rank)
    model = build_model(unet, config, TASKS).train()
    return model, [param for param in model.parameters() if param.requires_grad]


def training_row(method: str, arch: str, args, device, peak_flops: float | None) -> dict:
    model, params = trainer(method, arch, args, device)
    optimizer = torch.optim.AdamW(params, lr=1e-5, **({"fused": True} if device.type == "cuda" else {}))
    batch = args.train_batch or (2 if args.tiny else TRAIN_BATCH[arch])
    inputs = inputs_for(arch, args.tiny, args.latent, batch, device, torch.float32)
    target = torch.randn_like(inputs["sample"])

    def forward_backward():
        with torch.autocast(device.type, dtype=torch.bfloat16):
            prediction = model(**inputs, task="t2i", return_dict=False)[0]
        F.mse_loss(prediction.float(), target).backward()

    def step():
        forward_backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    counter = FlopCounterMode(display=False)
    with counter:
        forward_backward()
    optimizer.zero_grad(set_to_none=True)
    with PeakMemory(device) as peak:
        seconds = median_time(step, device, args.warmup, args.repeats)
    flops = counter.get_total_flops()
    row = {"arch": arch, "method": method, "batch": batch, "trainable_m": sum(p.numel() for p in params) / 1e6,
           "step_s": seconds, "samples_per_s": batch / seconds, "tflops_per_step": flops / 1e12,
           "achieved_tflops": flops / seconds / 1e12, "peak_gb": peak.gb,
           "mfu": flops / seconds / peak_flops if peak_flops else None}
    return row


def card(device, override: float | None) -> tuple[str, float | None]:
    """(the device's name, its peak dense bf16 FLOP/s or None where unknown)."""
    if device.type != "cuda":
        return "CPU", override * 1e12 if override else None
    name = torch.cuda.get_device_name(device)
    peak = override or next((value for key, value in PEAK_TFLOPS.items() if key in name), None)
    return name, peak * 1e12 if peak else None


def tables(record: dict) -> str:
    lines = [f"{record['card']}, torch {record['torch']}; latents {record['latent']}x{record['latent']}", "",
             "| arch | model | mode | ms / step (batch 2) | latency / base | peak GB | first call s |",
             "|---|---|---|---:|---:|---:|---:|"]
    lines += [f"| {r['arch']} | {r['model']} | {r['mode']} | {r['ms']:.1f} | {r['latency_vs_base']:.3f} | "
              f"{r['peak_gb']:.2f} | {r['first_call_s']:.1f} |" for r in record["latency"]]
    lines += ["", "| arch | method | trainable M | batch | samples/s | TFLOP/step | achieved TFLOP/s | MFU | peak GB |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['arch']} | {r['method']} | {r['trainable_m']:.1f} | {r['batch']} | {r['samples_per_s']:.2f} | "
              f"{r['tflops_per_step']:.2f} | {r['achieved_tflops']:.1f} | "
              f"{'-' if r['mfu'] is None else format(r['mfu'], '.1%')} | {r['peak_gb']:.2f} |"
              for r in record["training"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for gpu.json and gpu.md")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="tiny UNets, 8x8 latents, no compiling")
    parser.add_argument("--compile", default=None, choices=("inductor", "eager", "none"),
                        help="torch.compile backend of the compiled rows (default inductor; none with --tiny)")
    parser.add_argument("--archs", nargs="+", default=["sd15", "sdxl"], choices=("sd15", "sdxl"))
    parser.add_argument("--latent", type=int, default=None, help="latent size (default 64; 8 with --tiny)")
    parser.add_argument("--train-batch", type=int, default=None,
                        help="training batch (default 16 for SD1.5, 8 for SDXL; 2 with --tiny)")
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--peak-tflops", type=float, default=None, help="the card's peak dense bf16 TFLOP/s")
    args = parser.parse_args()
    small = args.tiny
    args.latent = args.latent or (8 if small else 64)
    args.warmup = args.warmup if args.warmup is not None else (0 if small else 3)
    args.repeats = args.repeats or (1 if small else 10)
    args.compile = args.compile or ("none" if small else "inductor")
    device = torch.device(args.device)
    name, peak_flops = card(device, args.peak_tflops)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record = {"card": name, "torch": torch.__version__, "latent": args.latent,
              "tiny": small, "compile": args.compile, "peak_tflops": peak_flops and peak_flops / 1e12, "latency": [], "training": []}
    for arch in args.archs:
        record["latency"] += latency_rows(arch, args, device)
        (out / "gpu.json").write_text(json.dumps(record, indent=2) + "\n")
        for method in ("MTU", "full", "LoRA"):
            record["training"].append(training_row(method, arch, args, device, peak_flops))
            if device.type == "cuda":  # the method's model and optimizer are gone with its call
                torch.cuda.empty_cache()
            (out / "gpu.json").write_text(json.dumps(record, indent=2) + "\n")
    (out / "gpu.md").write_text(tables(record))
    print(tables(record))


if __name__ == "__main__":
    main()
