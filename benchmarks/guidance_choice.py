"""The edit guidance pair of a packaged toy-world model chosen on more validation examples than the package's 32
(`choose_guidance`: the grid of the model's own sampling.json pair and the paper's 3 / 3, 5; never held-out data):

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/guidance_choice.py [MODEL] [COUNT]   # toyworld, 128
"""
import argparse
import json
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default="toyworld", help="short name or folder of a packaged adapter")
    parser.add_argument("count", nargs="?", type=int, default=128, help="validation edits to score each pair on")
    args = parser.parse_args(argv)
    if args.count < 1:
        parser.error(f"count: expected at least 1 validation example, got {args.count}")
    import torch

    from mtu.pipelines import MTUPipeline
    from mtu.toyworld.experiment import choose_guidance

    torch.set_num_threads(1)
    pipe = MTUPipeline.from_pretrained(args.model)
    pipe.set_progress_bar_config(disable=True)
    chosen, rows = choose_guidance(pipe, "edit", count=args.count, seed=0)
    print(json.dumps({"chosen": chosen, "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
