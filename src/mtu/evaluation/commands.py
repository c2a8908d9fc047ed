"""The `mtu eval` command line: the arguments of `mtu.evaluation.evaluate`, the table printed, results.json kept."""

from __future__ import annotations

import argparse
import json
import sys

from .weights import ENV_VAR, RANDOM

OVERWRITE_HELP = ("write into an --out folder that holds other files, or generate again the images of an "
                  "evaluation with other settings (only this command's files are replaced; nothing else is removed)")


def run_eval(args: argparse.Namespace) -> int:
    from .report import format_table
    from .runner import evaluate

    results = evaluate(args.model, args.task, args.data, num_samples=args.num_samples, out=args.out,
                       metric_weights=args.metric_weights, seed=args.seed, force=args.force, steps=args.steps,
                       guidance_scale=args.guidance_scale, image_guidance_scale=args.image_guidance_scale,
                       batch_size=args.batch_size, device=args.device, dtype=args.dtype, base=args.base,
                       variant=args.variant, overwrite=args.overwrite, safety_checker=args.safety_checker)
    if args.json:
        print(json.dumps(results, indent=1))
    else:
        print(format_table([results]))
    seconds = results["seconds"]
    where = f"; results in {args.out}/results.json" if args.out else ""
    print(f"mtu eval: {results['scored']} examples scored, {results['generated']} images generated now "
          f"({seconds['generate']:.0f} s generating, {seconds['score']:.0f} s scoring){where}", file=sys.stderr)
    return 0


def add_eval_parser(sub) -> argparse.ArgumentParser:
    """Adds `mtu eval` to the subcommands `sub`; returns its parser."""
    from ..pipelines.generate import DTYPES

    parser = sub.add_parser("eval", help="score a model on a task with the paper's metrics (FID, CLIP, LPIPS, ...)",
                            description="Generates the task's outputs for --data into --out/images (a killed run "
                                        "resumes there), scores them and prints a table; see docs/EVAL.md.")
    parser.add_argument("--model", required=True, help="what `mtu generate --model` takes (a folder, or toyworld)")
    parser.add_argument("--task", required=True, help="one of the model's tasks")
    parser.add_argument("--data", default="toyworld", help="toyworld (the held-out toy-world set, with its oracle), "
                        "a source YAML (a source, or a run file with one source of the task), or a data folder/file")
    parser.add_argument("--num-samples", type=int, default=None, help="examples to evaluate (default all; toyworld "
                        "256)")
    parser.add_argument("--out", default=None, help="folder for the images and results.json (default: a temporary "
                        "folder, nothing kept, no resume)")
    parser.add_argument("--metric-weights", default=None, help=f"folder of the metric networks' weights (offline), "
                        f"or {RANDOM!r} for tiny random networks (a code-path check); default ${ENV_VAR}, else "
                        f"the libraries download them")
    parser.add_argument("--seed", type=int, default=0, help="seed of the noise (per example) and the intervals")
    parser.add_argument("--force", action="store_true", help="compute FID below its minimum sample count")
    parser.add_argument("--steps", type=int, default=None, help="denoising steps (default: the task's)")
    parser.add_argument("--guidance-scale", type=float, default=None)
    parser.add_argument("--image-guidance-scale", type=float, default=None)
    parser.add_argument("--batch-size", type=int, default=8, help="images per pipeline call")
    parser.add_argument("--device", default=None, help="torch device (default: cuda when available)")
    parser.add_argument("--dtype", choices=DTYPES, default=None, help="weights dtype (default float32)")
    parser.add_argument("--base", default=None, help="base pipeline (default: the recorded one)")
    parser.add_argument("--variant", default=None, help="the base's weights variant, e.g. fp16")
    parser.add_argument("--no-safety-checker", dest="safety_checker", action="store_false",
                        help="run without the base's safety checker")
    parser.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    parser.add_argument("--json", action="store_true", help="print the results JSON instead of the table")
    parser.set_defaults(func=run_eval)
    return parser
