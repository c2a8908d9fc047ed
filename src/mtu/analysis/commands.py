"""`mtu analyze deviation | router | cost`: each computes its analysis, then writes a folder with the numbers as JSON
and the figures drawn from them (PNG). Every check (arguments, the output folder, matplotlib) runs before any model
is loaded; the folder is written through `mtu.outputs` (staged, then moved into place; never over files another
command wrote unless `--overwrite`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..progress import step
from ..upcycling.bases import check_base_spec
from .cost import cost_figures, cost_table
from .deviation import Measure, check_finetuned, deviation_figures, weight_deviation
from .figures import require_matplotlib, write_analysis
from .router import router_figures, router_weights

OVERWRITE_HELP = ("write into an --out folder that holds other files (only this command's files are replaced there; "
                  "nothing else is removed)")
ANALYSES = {"deviation": ("deviation.json", deviation_figures), "router": ("router.json", router_figures),
            "cost": ("cost.json", cost_figures)}


def claim(out, analysis: str, *, overwrite: bool = False, inputs: dict | None = None):
    """Checks the output folder and that the figures can be drawn, before any work; returns the claimed folder."""
    from ..outputs import claim_output

    output = claim_output(out, command=f"analyze {analysis}", overwrite=overwrite, inputs=inputs)
    require_matplotlib()
    return output


def save(result, out, *, overwrite: bool = False, inputs: dict | None = None, output=None) -> Path:
    """Writes `result` (a `DeviationResult`, `RouterResult` or `CostResult`) to the folder `out`: its JSON and its
    figures. `output`: a folder already claimed with `claim`. Returns the folder."""
    analysis = result.to_dict()["analysis"]
    json_name, figures = ANALYSES[analysis]
    output = output or claim(out, analysis, overwrite=overwrite, inputs=inputs)
    record = result.to_dict()
    return output.write(lambda folder: write_analysis(folder, json_name, record, figures(result)))


def _inputs(label: str, values) -> dict:
    """{"fine-tune #1 (`--finetuned`)": path, ...}: how `claim_output` names each input it protects."""
    return {label.replace("#", f"#{number}"): value for number, value in enumerate(values, start=1)}


def run_deviation(args) -> int:
    output = claim(args.out, "deviation", overwrite=args.overwrite,
                   inputs={"base (`--base`)": args.base, **_inputs("fine-tune # (`--finetuned`)", args.finetuned)})
    check_base_spec(args.base)
    for source in args.finetuned:
        check_finetuned(source)
    with step(f"comparing {len(args.finetuned)} fine-tune(s) with {args.base}"):
        result = weight_deviation(args.base, args.finetuned, labels=args.labels, measure=args.measure)
    save(result, args.out, output=output)
    overall = result.overall_ranks(groups=True)
    print(f"mean rank over blocks and fine-tunes ({args.measure}, 1 = moved most): "
          + ", ".join(f"{group} {rank:.2f}" for group, rank in sorted(overall.items(), key=lambda item: item[1]))
          + f"; written to {args.out}")
    return 0


def run_router(args) -> int:
    output = claim(args.out, "router", overwrite=args.overwrite, inputs={"adapter": args.dir})
    result = router_weights(args.dir)
    save(result, args.out, output=output)
    sharing = result.sharing()
    pairs = [(a, b) for i, a in enumerate(result.tasks) for j, b in enumerate(result.tasks) if i < j]
    print(f"{len(result.blocks)} routed layers x {result.num_experts} experts; expert sharing: "
          + ", ".join(f"{a}/{b} {sharing[result.tasks.index(a)][result.tasks.index(b)]:.2f}" for a, b in pairs)
          + f"; written to {args.out}")
    same = result.task_independent_layers()
    if same and len(result.tasks) > 1:
        print(f"note: {len(same)} of {len(result.blocks)} layers route every task to the same expert weights "
              f"(layers {', '.join(map(str, same))}): their routers do not tell the tasks apart.")
    return 0


def run_cost(args) -> int:
    output = claim(args.out, "cost", overwrite=args.overwrite,
                   inputs={"base (`--base`)": args.base, **_inputs("model # (`MODEL`)", args.models)})
    with step("counting parameters and FLOPs (meta device, no weights loaded)"):
        result = cost_table(args.models, base=args.base, sample_size=args.sample_size, text_length=args.text_length)
    save(result, args.out, output=output)
    print(result.table())
    print(f"{result.to_dict()['flop_convention']}, latents {result.sample_size[0]}x{result.sample_size[1]}, "
          f"text length {result.text_length}; written to {args.out}")
    return 0


def add_analyze_parser(sub) -> argparse.ArgumentParser:
    """Adds `analyze` and its three subcommands to the `mtu` subparsers `sub`; returns the `analyze` parser."""
    from typing import get_args

    analyze = sub.add_parser("analyze", help="the paper's analyses: weight deviation (Fig. 2, 6), router (Fig. 5), "
                                             "cost (Table 2); JSON + PNG")
    kinds = analyze.add_subparsers(dest="analyze_command", required=True, parser_class=type(analyze))

    dev = kinds.add_parser("deviation", help="how far fine-tuning moved each block's attention and FFN weights")
    dev.add_argument("--base", required=True, help="the pre-trained base: pipeline or UNet folder, toyworld-base, "
                                                   "random:<arch>, hub id")
    dev.add_argument("--finetuned", required=True, nargs="+", help="full fine-tunes of it: diffusers pipeline or "
                     "UNet folders, or `mtu train` outputs of method: full (a run folder or its final/)")
    dev.add_argument("--labels", nargs="+", default=None, help="names of the fine-tunes (default: folder names)")
    dev.add_argument("--measure", choices=get_args(Measure), default="frobenius",
                     help="frobenius (the paper), rms (per parameter) or relative (to the base's norm)")
    dev.add_argument("--out", required=True, help="folder for deviation.json and the figures")
    dev.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    dev.set_defaults(func=run_deviation)

    rou = kinds.add_parser("router", help="each task's expert weights per layer, and expert sharing between tasks")
    rou.add_argument("dir", help="an MTU adapter folder, or a shipped adapter's short name (toyworld)")
    rou.add_argument("--out", required=True, help="folder for router.json and the figures")
    rou.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    rou.set_defaults(func=run_router)

    cos = kinds.add_parser("cost", help="parameters, trainable parameters and FLOPs (Table 2's columns)")
    cos.add_argument("models", nargs="*", metavar="MODEL", help="MTU adapter folders or short names, trained "
                     "baselines' final/ folders, or run folders")
    cos.add_argument("--base", default=None, help="the base (default: the one the first model records)")
    cos.add_argument("--sample-size", type=int, default=None, help="latent height = width (default: the base's "
                     "sample_size, e.g. 64 for SD1.5 at 512 px)")
    cos.add_argument("--text-length", type=int, default=77, help="text tokens of the condition (77: CLIP)")
    cos.add_argument("--out", required=True, help="folder for cost.json and cost.png")
    cos.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    cos.set_defaults(func=run_cost)
    return analyze
