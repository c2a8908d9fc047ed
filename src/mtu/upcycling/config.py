"""`MTUConfig`: everything that decides the shape of an upcycled model (Sec. 5)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal, get_args

from ..configuration import JsonConfig, check_counts, known_fields
from .tasks import get_task

InitMode = Literal["preserve", "shard"]


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass
class MTUConfig(JsonConfig):
    """How to cut a UNet's FFNs into experts and route them per task.

    Args:
        tasks: Task names from the registry (`mtu.available_tasks()`); the first is the model's default.
        num_experts: N, experts per FFN.
        granularity: G = d_expert / d_ffn. None means 1/N, the paper's parameter-constrained setting (Table 4 top).
            Any G > 0 is allowed (Table 4 bottom uses e.g. N=4, G=0.5 and N=1, G=2).
        top_k: Keep the k experts with the largest router weight and renormalise; None uses all N.
        router_hidden_size: Hidden width of each layer's 2-layer ReLU router (Sec. 6).
        task_embedding_size: d_task, width of the learnable per-task embedding e_tau fed to every router.
        init: "preserve" scales expert outputs so that right after upcycling every task's output equals the base
            UNet's (needs N*G >= 1 and top_k None for exactness); "shard" is the paper's plain copy of shards.
            With N*G > 1 both split each dense unit's output scale unevenly among its copies (same sum, so the
            init function is unchanged) so that copied experts get different gradients; see `output_scale`.
        target_blocks: Which `BasicTransformerBlock`s to upcycle: None for all (16 in SD1.5, 70 in SDXL), or a
            list of module names / fnmatch patterns such as "mid_block.*".
        seed: Seed for the new parameters (task embeddings, routers, FFN units that have no dense counterpart).
    """

    tasks: list[str] = field(default_factory=lambda: ["t2i", "edit", "sr", "inpaint"])
    num_experts: int = 4
    granularity: float | None = None
    top_k: int | None = None
    router_hidden_size: int = 64
    task_embedding_size: int = 64
    init: InitMode = "preserve"
    target_blocks: list[str] | None = None
    seed: int = 0

    def __post_init__(self):
        if isinstance(self.tasks, str):
            self.tasks = [name.strip() for name in self.tasks.split(",") if name.strip()]
        self.tasks = list(self.tasks)
        if not self.tasks:
            raise ValueError("`tasks` must name at least one task, got an empty list.")
        if len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"`tasks` has duplicates: {self.tasks}.")
        for name in self.tasks:
            get_task(name)  # raises naming the unknown task and the registered ones
        if not _is_int(self.num_experts) or self.num_experts < 1:
            raise ValueError(f"`num_experts` must be an integer >= 1, got {self.num_experts!r}.")
        if self.granularity is None:
            self.granularity = 1.0 / self.num_experts
        if isinstance(self.granularity, bool) or not isinstance(self.granularity, (int, float)):
            raise ValueError(f"`granularity` must be a number > 0, got {self.granularity!r}.")
        self.granularity = float(self.granularity)
        if not self.granularity > 0:
            raise ValueError(f"`granularity` must be > 0, got {self.granularity!r}.")
        if self.top_k is not None and (not _is_int(self.top_k) or not 1 <= self.top_k <= self.num_experts):
            raise ValueError(
                f"`top_k` must be None or an integer in [1, num_experts={self.num_experts}], got {self.top_k!r}."
            )
        check_counts(self, ("router_hidden_size", "task_embedding_size"))
        if self.init not in get_args(InitMode):
            raise ValueError(f"`init` must be one of {get_args(InitMode)}, got {self.init!r}.")
        if self.init == "preserve" and self.num_experts * self.granularity < 1 - 1e-9:
            raise ValueError(
                f"`init='preserve'` needs num_experts * granularity >= 1 so the experts can hold every dense unit, "
                f"got {self.num_experts} * {self.granularity:g} = {self.num_experts * self.granularity:g}; "
                f"use `init='shard'` for a model narrower than the base."
            )
        if self.target_blocks is not None:
            if isinstance(self.target_blocks, str) or not self.target_blocks:
                raise ValueError(
                    f"`target_blocks` must be None (all blocks) or a non-empty list of names, got {self.target_blocks!r}."
                )
            self.target_blocks = [str(item) for item in self.target_blocks]
        if not _is_int(self.seed):
            raise ValueError(f"`seed` must be an integer, got {self.seed!r}.")

    def expert_width(self, ffn_width: int) -> int | None:
        """d_expert for a dense FFN of hidden width `ffn_width`, or None when G * d_ffn is not an integer."""
        width = self.granularity * ffn_width
        rounded = round(width)
        return rounded if rounded >= 1 and abs(width - rounded) < 1e-6 else None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "MTUConfig":
        return cls(**known_fields(cls, data))
