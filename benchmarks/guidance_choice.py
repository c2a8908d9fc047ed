"""The edit guidance pair of a packaged toy-world model chosen on more validation examples than the package's 32
(`choose_guidance`: the grid of the model's own sampling.json pair and the paper's 3 / 3, 5; never held-out data):

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/guidance_choice.py [MODEL] [COUNT]   # toyworld, 128
"""
import json
import sys

import torch

from mtu.pipelines import MTUPipeline
from mtu.toyworld.experiment import choose_guidance


def main(model: str = "toyworld", count: int = 128) -> None:
    torch.set_num_threads(1)
    pipe = MTUPipeline.from_pretrained(model)
    pipe.set_progress_bar_config(disable=True)
    chosen, rows = choose_guidance(pipe, "edit", count=count, seed=0)
    print(json.dumps({"chosen": chosen, "rows": rows}))


if __name__ == "__main__":
    main(*sys.argv[1:2], *[int(arg) for arg in sys.argv[2:3]])
