"""`MTUConfig`: everything that decides the shape of an upcycled model (Sec. 5)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal, get_args

from ..configuration import JsonConfig, is_int, is_number, known_fields, must_be
from ..errors import InputError
from .tasks import available_tasks

InitMode = Literal["preserve", "shard"]


def check_expert_fields(config) -> float:
    """Checks every `MTUConfig` field of `config` but `tasks` and returns G: `granularity`, or 1/N when None.

    `config` is an `MTUConfig` or a section that mirrors its fields (a training run's `model.mtu`, which keeps a
    None granularity so that G follows the N a preset or an override sets). `target_blocks` is normalized in place.

    Raises:
        InputError: whose `field` names the field ("num_experts", "granularity", ...).
    """
    if not is_int(config.num_experts) or config.num_experts < 1:
        raise must_be("num_experts", "an integer >= 1", config.num_experts)
    granularity = 1.0 / config.num_experts if config.granularity is None else config.granularity
    if not is_number(granularity) or not granularity > 0:
        raise must_be("granularity", "a finite number > 0 (or None for 1/num_experts)", config.granularity)
    if config.top_k is not None and (not is_int(config.top_k) or not 1 <= config.top_k <= config.num_experts):
        raise must_be("top_k", f"None or an integer in [1, num_experts={config.num_experts}]", config.top_k)
    for name in ("router_hidden_size", "task_embedding_size"):
        if not is_int(getattr(config, name)) or getattr(config, name) < 1:
            raise must_be(name, "an integer >= 1", getattr(config, name))
    if config.init not in get_args(InitMode):
        raise must_be("init", f"one of {get_args(InitMode)}", config.init)
    if config.init == "preserve" and config.num_experts * granularity < 1 - 1e-9:
        raise InputError(
            f"'preserve' needs num_experts * granularity >= 1 so the experts can hold every dense unit, got "
            f"{config.num_experts} * {granularity:g} = {config.num_experts * granularity:g}; use `init='shard'` for "
            f"a model narrower than the base.", field="init")
    if config.target_blocks is not None:
        if isinstance(config.target_blocks, str) or not isinstance(config.target_blocks, (list, tuple)) \
                or not config.target_blocks:
            raise must_be("target_blocks", "None (all blocks) or a non-empty list of names", config.target_blocks)
        config.target_blocks = [str(item) for item in config.target_blocks]
    if not is_int(config.seed):
        raise must_be("seed", "an integer", config.seed)
    return float(granularity)


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
        if not isinstance(self.tasks, (list, tuple)) or not self.tasks:
            raise must_be("tasks", "a non-empty list of task names", self.tasks)
        self.tasks = list(self.tasks)
        for name in self.tasks:
            if name not in available_tasks():
                raise InputError(f"unknown task {name!r}; registered tasks: {', '.join(available_tasks())}.",
                                 field="tasks")
        if len(set(self.tasks)) != len(self.tasks):
            raise InputError(f"has duplicates: {self.tasks}.", field="tasks")
        self.granularity = check_expert_fields(self)

    def expert_width(self, ffn_width: int) -> int | None:
        """d_expert for a dense FFN of hidden width `ffn_width`, or None when G * d_ffn is not an integer."""
        width = self.granularity * ffn_width
        rounded = round(width)
        return rounded if rounded >= 1 and abs(width - rounded) < 1e-6 else None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> MTUConfig:
        return cls(**known_fields(cls, data))
