"""Usage: python benchmarks/router_census.py RUN/checkpoints/checkpoint-N

Router census of a training checkpoint: hidden ReLU units active for >= 1 task (of all layers), and the largest
spread of expert weights between tasks; for the raw and the EMA weights."""
import sys
import torch
from mtu.training.export import model_from_checkpoint

for ema in (False, True):
    model = model_from_checkpoint(sys.argv[1], ema=ema)
    alive = total = 0
    spread = 0.0
    with torch.no_grad():
        E = model.task_embeddings
        for name, module in model.mtu_modules():
            router = getattr(module, "router", None)
            if router is None:
                continue
            pre = router.hidden(E)
            alive += int(((pre > 0).sum(0) > 0).sum()); total += pre.shape[1]
            w = router(E)
            spread = max(spread, float((w - w.mean(0)).abs().max()))
    print(f"{sys.argv[1].rsplit('/',1)[-1]} ema={ema}: alive {alive}/{total}, max expert-weight spread {spread:.4f}")
