"""`mtu selfcheck`: upcycle a real-architecture UNet (SD1.5 or SDXL shapes, random weights) and check the invariants.

Builds the SD1.5 UNet at seeded random init (no download), prints its parameter/FLOP report, upcycles it with
N=4, and measures the invariants the package promises: init preserves the base output, a folded task equals the
MTU model, and save -> load is bit-exact. Writes the adapter, a folded `edit` UNet and report.json under `out` (a
new or empty folder, or an earlier self-check's; `overwrite` writes into another, replacing only these).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from .inspection import cost_report, format_report, unet_inputs
from .outputs import claim_output
from .progress import step


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def is_selfcheck_output(folder: Path) -> bool:
    """True for a folder an earlier `mtu selfcheck` wrote (before outputs were marked)."""
    return (folder / "report.json").is_file() and (folder / "adapter").is_dir() and (folder / "folded-edit").is_dir()


def run_selfcheck(out: str = "mtu-selfcheck", arch: str = "sd15", latent: int = 32, *, overwrite: bool = False) -> int:
    """Runs the checks on `arch` at `latent` x `latent` latents and writes their outputs to `out`; 0 if all pass."""
    output = claim_output(out, command="selfcheck", overwrite=overwrite, recognize=is_selfcheck_output)
    start = time.perf_counter()
    with output.stage() as staging:
        results, report = _run_checks(staging, arch, latent)
        results["seconds"] = round(time.perf_counter() - start, 1)
        (staging / "report.json").write_text(json.dumps({"cost": report, "checks": results}, indent=2))
    out_dir = Path(out)
    print(f"\nchecks on {arch}, latents {latent}x{latent}:")
    for key, value in results.items():
        print(f"  {key:<28} {value:.3g}")
    passed = results["init_preserve_max_abs_diff"] < 1e-3 and results["fold_edit_max_abs_diff"] < 1e-3 \
        and results["reload_max_abs_diff"] == 0.0
    print(f"\n{'all checks passed' if passed else 'CHECKS FAILED'}; outputs in {out_dir.resolve()}")
    return 0 if passed else 1


def _run_checks(out_dir: Path, arch: str, latent: int) -> tuple[dict, dict]:
    """(measured differences, cost report); writes the adapter and the folded edit UNet under `out_dir`."""
    from diffusers import UNet2DConditionModel

    from .architectures import build_unet, unet_config
    from .upcycling import MTUConfig, load_mtu, upcycle

    config = MTUConfig(num_experts=4)
    with step(f"counting parameters and FLOPs of {arch} vs MTU (N=4, G=1/4) at 64x64 latents"):
        report = cost_report(config, unet_config(arch), (64, 64), tasks=["t2i", "edit"])
    print(format_report(report))
    with step(f"building the {arch} UNet at random init (seed 0)"):
        unet = build_unet(arch, seed=0).eval()
    inputs = unet_inputs(unet_config(arch), (latent, latent))
    edit_inputs = {**inputs, "sample": torch.randn(1, 8, latent, latent)}
    results = {}
    with torch.no_grad():
        with step("base forward"):
            base_out = unet(**inputs).sample
        with step("upcycling (fingerprint + experts)"):
            model = upcycle(unet, config).eval()
        with step("MTU forward (t2i)"):
            results["init_preserve_max_abs_diff"] = _max_diff(model(**inputs, task="t2i").sample, base_out)
        for _, param in model.mtu_named_parameters():  # as if trained: move every MTU weight off its init
            param.add_(torch.randn_like(param) * 0.02 * (param.std() if param.numel() > 1 else 1))
        with step("folding 'edit' and comparing with the MTU model"):
            folded = model.fold("edit").eval()
            mtu_edit = model(**edit_inputs, task="edit").sample
            results["fold_edit_max_abs_diff"] = _max_diff(folded(**edit_inputs).sample, mtu_edit)
        with step("saving the adapter and the folded edit UNet"):
            model.save_pretrained(out_dir / "adapter")
            folded.save_pretrained(out_dir / "folded-edit", safe_serialization=True)
        with step("loading both back (the base is rebuilt from its recorded seed and fingerprint-checked)"):
            loaded = load_mtu(out_dir / "adapter").eval()
            results["reload_max_abs_diff"] = _max_diff(loaded(**edit_inputs, task="edit").sample, mtu_edit)
            stock = UNet2DConditionModel.from_pretrained(out_dir / "folded-edit").eval()
            results["stock_reload_max_abs_diff"] = _max_diff(stock(**edit_inputs).sample, mtu_edit)
    return results, report


if __name__ == "__main__":
    sys.exit(run_selfcheck())
