"""Usage: python benchmarks/router_census.py RUN/checkpoints/checkpoint-N

Router census of a training checkpoint: hidden ReLU units active for >= 1 task (of all layers), and the largest
spread of expert weights between tasks; for the raw and the EMA weights (`router_probe.census`)."""
import sys
from pathlib import Path

from mtu.training.export import model_from_checkpoint

sys.path.insert(0, str(Path(__file__).resolve().parent))
from router_probe import census  # noqa: E402

for ema in (False, True):
    model = model_from_checkpoint(sys.argv[1], ema=ema)
    alive, spread, total = *census(model), sum(module.router.hidden.out_features
                                               for _, module in model.mtu_modules() if hasattr(module, "router"))
    print(f"{sys.argv[1].rsplit('/', 1)[-1]} ema={ema}: alive {alive}/{total}, max expert-weight spread {spread:.4f}")
