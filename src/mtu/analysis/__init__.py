"""The paper's analyses, on any model: weight deviation of fine-tunes (Fig. 2, Fig. 6), router expert weights and
expert sharing (Fig. 5), and cost (Table 2's parameters and FLOPs). Each returns a result object (`to_dict()` gives
its numbers); `save(result, folder)` writes them as JSON beside PNG figures (needs matplotlib: the `analysis` extra).

    from mtu.analysis import weight_deviation, router_weights, cost_table, save
    save(weight_deviation("toyworld-base", ["runs/full-edit", "runs/full-sr"]), "analysis/deviation")
"""

from .commands import save
from .cost import CostResult, CostRow, cost_table, routing_overhead_bound
from .deviation import COMPONENTS, GROUPS, DeviationResult, weight_deviation
from .figures import MissingExtraError
from .router import RouterResult, router_weights

__all__ = [
    "COMPONENTS", "GROUPS", "CostResult", "CostRow", "DeviationResult", "MissingExtraError", "RouterResult",
    "cost_table", "router_weights", "routing_overhead_bound", "save", "weight_deviation",
]
