"""Task switch time: MTU's in-place switch (`mtu.export.TaskSwitchingUNet.set_task`) against peft's `set_adapter`
and diffusers' LoRA load + fuse / unfuse + unload, measured side by side in one run.

    OMP_NUM_THREADS=1 python benchmarks/task_switch.py [--arch sd15] [--switches 12] [--json out.json]

Models at random init (`mtu.load_base_unet("random:<arch>")`), float32, CPU. MTU: N=4 experts, G=1/4, tasks t2i,
edit, sr, inpaint, every MTU tensor moved off its init. LoRA: FFN LoRAs (the FFN linears, as the project's LoRA
baseline) of two sizes: the baseline's rank (all four task adapters together hold MTU's trainable parameter count,
`mtu.training.methods.matched_lora_rank`) and one adapter alone holding MTU's count. A diffusers switch is: unfuse +
unload the current task's LoRA, then load the next one's safetensors file (in the page cache after the first
read) + fuse it. Each row is the median over `--switches` switches cycling through the tasks, in CPU seconds
(`time.process_time`, user + system, one thread): on a shared machine a niced process waits for the CPU longer than
it computes, which wall time would count.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import tempfile
import time
from pathlib import Path

import diffusers
import torch

import mtu
from mtu.export import TaskSwitchingUNet
from mtu.training.methods import FFN_TARGETS, matched_lora_rank

TASKS = ["t2i", "edit", "sr", "inpaint"]


def held_bytes(*modules: torch.nn.Module) -> int:
    """Bytes of the distinct tensor storages the modules hold (a tensor shared by two of them counts once)."""
    storages = {}
    for module in modules:
        for tensor in [*module.parameters(), *module.buffers()]:
            storage = tensor.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
    return sum(storages.values())


def timed(action, repeats: int) -> list[float]:
    """CPU seconds of each of `repeats` calls `action(index)` (see the module docstring)."""
    times = []
    for index in range(repeats):
        start = time.process_time()
        action(index)
        times.append(time.process_time() - start)
    return times


def switcher_row(model, keep: str, switches: int) -> dict:
    start = time.process_time()
    switcher = TaskSwitchingUNet(model, keep=keep)
    prepare = time.process_time() - start
    times = timed(lambda i: switcher.set_task(TASKS[(i + 1) % len(TASKS)]), switches)
    held = held_bytes(switcher) if keep == "folded" else held_bytes(switcher, model)
    return {"method": f"MTU TaskSwitchingUNet, keep={keep!r}", "switch_s": statistics.median(times),
            "prepare_s": prepare, "held_gb": held / 1e9,
            "params_moved": "none (re-points)" if keep == "folded" else "folds every FFN in place"}


def mtu_rows(arch: str, switches: int) -> tuple[list[dict], int]:
    model = mtu.upcycle(mtu.load_base_unet(f"random:{arch}"), mtu.MTUConfig(tasks=TASKS), fingerprint=False).eval()
    with torch.no_grad():  # as if trained: no shortcut hides behind initial values
        for _, param in model.mtu_named_parameters():
            param.add_(0.01 * torch.randn_like(param))
    trainable = sum(param.numel() for _, param in model.mtu_named_parameters())
    rows = [switcher_row(model, keep, switches) for keep in ("folded", "experts")]
    times = timed(lambda i: model.fold(TASKS[i % len(TASKS)]), max(3, switches // 4))
    rows.append({"method": "mtu.fold (a new stock UNet per switch)", "switch_s": statistics.median(times),
                 "prepare_s": 0.0, "held_gb": held_bytes(model) / 1e9, "params_moved": "copies the whole UNet"})
    return rows, trainable


def lora_config(rank: int):
    from peft import LoraConfig

    return LoraConfig(r=rank, lora_alpha=rank, target_modules="|".join(f"({t})" for t in FFN_TARGETS),
                      init_lora_weights="gaussian")  # non-zero B: fusing changes the weights, as a trained LoRA's


def peft_row(arch: str, rank: int, switches: int) -> dict:
    from peft import get_peft_model

    model = get_peft_model(mtu.load_base_unet(f"random:{arch}"), lora_config(rank), adapter_name=TASKS[0])
    for task in TASKS[1:]:
        model.add_adapter(task, lora_config(rank))
    times = timed(lambda i: model.set_adapter(TASKS[(i + 1) % len(TASKS)]), switches)
    return {"method": f"peft set_adapter (r={rank}, unmerged)", "switch_s": statistics.median(times),
            "prepare_s": 0.0, "held_gb": held_bytes(model) / 1e9, "params_moved": "none (flags)"}


def diffusers_rows(arch: str, rank: int, switches: int, folder: Path) -> list[dict]:
    unet = mtu.load_base_unet(f"random:{arch}").eval()
    for task in TASKS:  # one LoRA file per task, written as diffusers writes them
        unet.add_adapter(lora_config(rank), adapter_name=task)
        unet.save_lora_adapter(folder / task, adapter_name=task)
        unet.delete_adapters(task)
    size = sum(path.stat().st_size for path in folder.rglob("*.safetensors")) / len(TASKS)
    load, unload = [], []
    for index in range(switches + 1):
        task = TASKS[index % len(TASKS)]
        start = time.process_time()
        unet.load_lora_adapter(folder / task, prefix=None, adapter_name=task, use_safetensors=True,
                               weight_name="pytorch_lora_weights.safetensors")
        unet.fuse_lora(adapter_names=[task])
        middle = time.process_time()
        unet.unfuse_lora()
        unet.unload_lora()
        end = time.process_time()
        if index:  # the first read fills the page cache
            load.append(middle - start)
            unload.append(end - middle)
    held = held_bytes(unet) / 1e9
    label = f"diffusers LoRA (r={rank}, {size / 1e6:.0f} MB file)"
    return [{"method": f"{label}: load + fuse", "switch_s": statistics.median(load), "prepare_s": 0.0,
             "held_gb": held, "params_moved": "reads + fuses one LoRA"},
            {"method": f"{label}: unfuse + unload", "switch_s": statistics.median(unload), "prepare_s": 0.0,
             "held_gb": held, "params_moved": "unfuses one LoRA"}]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="sd15", choices=("sd15", "sdxl", "tiny"))
    parser.add_argument("--switches", type=int, default=12)
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = parser.parse_args()
    diffusers.utils.logging.set_verbosity_error()  # its notes on casting and on loading LoRA files
    rows, trainable = mtu_rows(args.arch, args.switches)
    gc.collect()
    base = mtu.load_base_unet(f"random:{args.arch}")
    ranks = {"baseline": matched_lora_rank(base, TASKS, trainable),
             "one adapter = MTU's count": matched_lora_rank(base, TASKS, trainable, per_task=False)}
    del base
    rows.append(peft_row(args.arch, ranks["baseline"], args.switches))
    gc.collect()
    with tempfile.TemporaryDirectory() as folder:
        for rank in dict.fromkeys(ranks.values()):
            rows += diffusers_rows(args.arch, rank, args.switches, Path(folder) / f"r{rank}")
            gc.collect()
    reference = next(row["switch_s"] for row in rows if row["method"].endswith(": load + fuse"))
    print(f"{args.arch}, float32, CPU, torch {torch.__version__}, {torch.get_num_threads()} thread(s); MTU trainable "
          f"{trainable / 1e6:.1f}M; LoRA ranks {ranks}; median of {args.switches} switches")
    print("| switch | median CPU s | / LoRA load + fuse (baseline rank) | one-off prepare CPU s | held GB | "
          "work per switch |")
    print("|---|---:|---:|---:|---:|---|")
    for row in rows:
        print(f"| {row['method']} | {row['switch_s']:.6f} | {row['switch_s'] / reference:.4f} | "
              f"{row['prepare_s']:.2f} | {row['held_gb']:.2f} | {row['params_moved']} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"arch": args.arch, "ranks": ranks, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
