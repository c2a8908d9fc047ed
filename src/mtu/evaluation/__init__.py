"""`mtu eval`: the paper's metrics (Sec. 6) on any model's outputs, resumable, with their conventions recorded.

    data.py      what `--data` reads: the toy world's held-out set (with its oracle) or any data source
    networks.py  CLIP embeddings, LPIPS on an AlexNet backbone, FID feature wrappers, tiny stand-ins
    weights.py   where the metric networks' weights come from (online, `--metric-weights DIR`, random), checked
                 before any image is generated
    metrics.py   the metrics by name (`Task.metrics` lists them), `register_metric` for a plug-in's own
    runner.py    `evaluate`: generate to disk (resumable), score, write results.json
    report.py    the results JSON and the Table-2-like table
    commands.py  the `mtu eval` command line

    from mtu.evaluation import evaluate, format_table
    results = evaluate("toyworld", "edit", "toyworld", num_samples=64, out="eval/edit", metric_weights="random")
    print(format_table([results]))
"""

from .metrics import Metric, ScoringBatch, directional_similarity, get_metric, register_metric
from .networks import LPIPS, AlexNetFeatures, ClipEmbedder
from .report import format_table
from .runner import evaluate
from .weights import ENV_VAR, WEIGHT_FILES, resolve_metric_weights, write_random_networks

__all__ = [
    "ENV_VAR", "LPIPS", "WEIGHT_FILES", "AlexNetFeatures", "ClipEmbedder", "Metric", "ScoringBatch",
    "directional_similarity", "evaluate", "format_table", "get_metric", "register_metric", "resolve_metric_weights",
    "write_random_networks",
]
