"""`MTUFeedForward`: the block's LayerNorm + FFN replaced by task LayerNorms, N experts and a router (Fig. 3b).

Parameter layout (N experts, d_expert units each, model width D, T tasks):
    w_in  (N, U, D)   first projection of every expert; U = 2 * d_expert for GEGLU (value rows, then gate rows)
    b_in  (N, U)
    w_out (D, N, d_expert)  output projection, stored so that all experts flatten into one (D, N * d_expert) matrix
    b_out (N, D)
    ln_weight, ln_bias (T, N, D)  a task-specific LayerNorm affine before each expert, initialised from `norm3`
All experts of a task run as one matmul of the dense FFN's shape: the task LayerNorm's affine is folded into the
experts' first projection and the router weights into their output projection, once per forward per task.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from .config import MTUConfig
from .experts import NEW_UNIT, expert_unit_map, output_scale
from .router import TaskRouter


@dataclass
class TaskRouting:
    """What the current forward needs to know about tasks, handed to every task module by `TaskModel.route`.

    Args:
        task_embeddings: (T, d_task) the model's task embeddings (one row per task of the config); None in a
            model without them (a baseline's frame), whose task modules need only the groups.
        groups: (task index, sample indices) pairs; indices None means the whole batch is that task.
        batch_size: Samples in the batch the groups refer to.
    """

    task_embeddings: torch.Tensor | None
    groups: list[tuple[int, torch.Tensor | None]]
    batch_size: int


def _dense_parts(block: nn.Module, name: str):
    """(norm, first projection, output projection, gated, approximate, dropout) of a diffusers block's FFN."""
    norm, ff = block.norm3, block.ff
    if not isinstance(norm, nn.LayerNorm) or getattr(block, "norm_type", "layer_norm") != "layer_norm":
        raise InputError(
            f"block {name!r} uses norm_type={getattr(block, 'norm_type', None)!r}; only 'layer_norm' blocks "
            f"(Stable Diffusion 1.x/2.x, SDXL) can be upcycled."
        )
    activation = ff.net[0]
    kind = type(activation).__name__
    if kind not in ("GEGLU", "GELU"):
        raise InputError(f"block {name!r} has an FFN activation {kind}; supported: GEGLU, GELU.")
    proj, out = activation.proj, ff.net[2]
    if proj.bias is None or out.bias is None:
        raise InputError(f"block {name!r} has an FFN without biases; only FFNs with biases can be upcycled.")
    approximate = getattr(activation, "approximate", "none")
    return norm, proj, out, kind == "GEGLU", approximate, ff.net[1].p


class MTUFeedForward(nn.Module):
    """Task LayerNorms + N experts + router, in place of a `BasicTransformerBlock`'s `norm3` and `ff`."""

    def __init__(self, dim: int, ffn_width: int, expert_width: int, num_experts: int, num_tasks: int,
                 config: MTUConfig, gated: bool = True, approximate: str = "none", eps: float = 1e-5,
                 dropout: float = 0.0, block_name: str = "", device=None, dtype=None):
        super().__init__()
        self.dim, self.ffn_width, self.expert_width = dim, ffn_width, expert_width
        self.num_experts, self.top_k = num_experts, config.top_k
        self.gated, self.approximate, self.eps, self.dropout = gated, approximate, eps, dropout
        self.block_name = block_name
        units = expert_width * (2 if gated else 1)
        factory = {"device": device, "dtype": dtype}
        self.w_in = nn.Parameter(torch.empty(num_experts, units, dim, **factory))
        self.b_in = nn.Parameter(torch.empty(num_experts, units, **factory))
        self.w_out = nn.Parameter(torch.empty(dim, num_experts, expert_width, **factory))
        self.b_out = nn.Parameter(torch.empty(num_experts, dim, **factory))
        self.ln_weight = nn.Parameter(torch.ones(num_tasks, num_experts, dim, **factory))
        self.ln_bias = nn.Parameter(torch.zeros(num_tasks, num_experts, dim, **factory))
        self.router = TaskRouter(config.task_embedding_size, config.router_hidden_size, num_experts, config.top_k,
                                 **factory)

    @classmethod
    def from_block(cls, block: nn.Module, config: MTUConfig, num_tasks: int, block_name: str,
                   generator: torch.Generator | None = None) -> "MTUFeedForward":
        """Builds the layer from a block's `norm3` and dense `ff`, initialising experts from the dense weights."""
        norm, proj, out, gated, approximate, dropout = _dense_parts(block, block_name)
        ffn_width = proj.out_features // (2 if gated else 1)
        expert_width = config.expert_width(ffn_width)
        if expert_width is None:
            raise InputError(
                f"block {block_name!r}: granularity G={config.granularity:g} with d_ffn={ffn_width} gives "
                f"d_expert = G * d_ffn = {config.granularity * ffn_width:g}, not a whole number of units; choose "
                f"num_experts/granularity so that G * {ffn_width} is an integer."
            )
        weight = proj.weight
        layer = cls(out.out_features, ffn_width, expert_width, config.num_experts, num_tasks, config, gated,
                    approximate, norm.eps, dropout, block_name, device=weight.device, dtype=weight.dtype)
        layer._init_from_dense(norm, proj, out, config, generator)
        return layer

    @torch.no_grad()
    def _init_from_dense(self, norm, proj, out, config: MTUConfig, generator) -> None:
        unit_map = expert_unit_map(self.ffn_width, self.num_experts, self.expert_width)
        scale = output_scale(unit_map, self.ffn_width, config.init)
        source = unit_map.clamp(min=0).to(proj.weight.device)
        halves = proj.weight.chunk(2, dim=0) if self.gated else (proj.weight,)
        bias_halves = proj.bias.chunk(2, dim=0) if self.gated else (proj.bias,)
        self.w_in.copy_(torch.cat([half[source] for half in halves], dim=1))  # (N, U, D)
        self.b_in.copy_(torch.cat([half[source] for half in bias_halves], dim=1))
        self.w_out.copy_(out.weight[:, source] * scale.to(out.weight.device, out.weight.dtype))
        self.b_out.copy_(out.bias.expand_as(self.b_out))
        if norm.weight is not None:
            self.ln_weight.copy_(norm.weight.expand_as(self.ln_weight))
        if norm.bias is not None:
            self.ln_bias.copy_(norm.bias.expand_as(self.ln_bias))
        new = (unit_map == NEW_UNIT).repeat(1, len(halves))
        if new.any() and not proj.weight.is_meta:
            new = new.to(proj.weight.device)
            # G > 1: units with no dense counterpart start with dense-scale random inputs and silent outputs.
            std = proj.weight.float().std().item()
            noise = torch.randn(self.w_in.shape, generator=generator) * std
            self.w_in[new] = noise.to(self.w_in)[new]
            self.b_in[new] = 0.0

    def active_experts(self, expert_weights: torch.Tensor) -> torch.Tensor | None:
        """Indices of the experts a task uses (its top-k, ascending), or None for all of them."""
        if self.top_k is None or self.top_k == self.num_experts:
            return None
        return expert_weights.topk(self.top_k).indices.sort().values

    def _task_params(self, task: int, expert_weights: torch.Tensor):
        """(router weights, w_in, b_in, w_out, b_out, LN gamma, LN beta) of the task's active experts."""
        weights = expert_weights[task]
        params = (weights, self.w_in, self.b_in, self.b_out, self.ln_weight[task], self.ln_bias[task])
        active = self.active_experts(weights)
        if active is None:
            return params[:3] + (self.w_out,) + params[3:]
        weights, w_in, b_in, b_out, gamma, beta = (t[active] for t in params)
        return weights, w_in, b_in, self.w_out[:, active], b_out, gamma, beta

    def task_weights(self, task: int, expert_weights: torch.Tensor):
        """One task's experts as a single dense FFN: (W_in, b_in, W_out, b_out) over its k active experts.

        Args:
            task: Row of the task in the config's task list.
            expert_weights: (T, N) router output for every task.
        Returns:
            W_in (k*U, D), b_in (k*U,), W_out (D, k*d_expert), b_out (D,).
        """
        weights, w_in, b_in, w_out, b_out, gamma, beta = self._task_params(task, expert_weights)
        # Task LayerNorm affine folded into each expert's first projection: W (g*x + b) + c = (W*g) x + (W b + c).
        weight_in = (w_in * gamma[:, None, :]).flatten(0, 1)
        bias_in = (b_in + torch.einsum("kud,kd->ku", w_in, beta)).flatten()
        # Eq. 1: sum_i w_i E_i(x) -- router weights folded into each expert's output projection.
        weight_out = (w_out * weights[None, :, None]).flatten(1)
        bias_out = weights @ b_out
        return weight_in, bias_in, weight_out, bias_out

    def _activate(self, hidden: torch.Tensor) -> torch.Tensor:
        """(..., k, U) -> (..., k, d_expert)."""
        if not self.gated:
            return F.gelu(hidden, approximate=self.approximate)
        value, gate = hidden.chunk(2, dim=-1)
        return value * F.gelu(gate)

    def prefers_token_path(self, num_tokens: int) -> bool:
        """Whether applying LayerNorm affines and router weights to the tokens is cheaper than to the weights.

        Both give the same result. The weight path costs ~D*(2U + d_e) elementwise work per expert, independent
        of the tokens; the token path ~num_tokens*(D + d_e). Deep, low-resolution layers have few tokens and wide
        FFNs, high-resolution layers the opposite.
        """
        units = self.w_in.shape[1]
        return num_tokens * (self.dim + self.expert_width) < self.dim * (2 * units + self.expert_width)

    def _task_forward(self, normed: torch.Tensor, task: int, expert_weights: torch.Tensor) -> torch.Tensor:
        if self.prefers_token_path(normed.numel() // self.dim):
            weights, w_in, b_in, w_out, b_out, gamma, beta = self._task_params(task, expert_weights)
            per_expert = normed.unsqueeze(-2) * gamma + beta  # (..., D) -> (..., k, D): each expert's task LN
            hidden = self._activate(torch.einsum("...kd,kud->...ku", per_expert, w_in) + b_in)  # (..., k, d_e)
            hidden = F.dropout(hidden * weights[:, None], self.dropout, self.training)
            return torch.einsum("...kh,dkh->...d", hidden, w_out) + weights @ b_out
        weight_in, bias_in, weight_out, bias_out = self.task_weights(task, expert_weights)
        hidden = F.linear(normed, weight_in, bias_in).unflatten(-1, (-1, self.w_in.shape[1]))  # (..., k, U)
        hidden = F.dropout(self._activate(hidden).flatten(-2), self.dropout, self.training)  # (..., k*d_e)
        return F.linear(hidden, weight_out, bias_out)

    def forward(self, hidden_states: torch.Tensor, *args, routing: TaskRouting | None = None, **kwargs):
        if routing is None:
            raise RuntimeError(
                f"MTU layer {self.block_name!r} was called without a task; call the MTUModel with `task=`, or run "
                f"the UNet inside `with model.route(task):`."
            )
        normed = F.layer_norm(hidden_states, (self.dim,), eps=self.eps)
        expert_weights = self.router(routing.task_embeddings)  # (T, N): once per forward, never per token
        if len(routing.groups) == 1 and routing.groups[0][1] is None:
            return self._task_forward(normed, routing.groups[0][0], expert_weights)
        if hidden_states.shape[0] != routing.batch_size:
            raise ValueError(
                f"MTU layer {self.block_name!r} got a batch of {hidden_states.shape[0]} but the task list has "
                f"{routing.batch_size} entries (is feed-forward chunking along the batch enabled?)."
            )
        output = torch.empty_like(hidden_states)
        for task, index in routing.groups:
            output[index] = self._task_forward(normed[index], task, expert_weights)
        return output

    def folded_state(self, task: int, expert_weights: torch.Tensor) -> dict[str, torch.Tensor]:
        """The task's experts as a stock diffusers `FeedForward` state dict of the original width d_ffn.

        Inactive width is padded with silent units (zero value rows, zero output columns).
        """
        weight_in, bias_in, weight_out, bias_out = self.task_weights(task, expert_weights)
        width = weight_out.shape[1]
        if width > self.ffn_width:
            raise InputError(
                f"cannot fold block {self.block_name!r}: its active experts are {width} units wide "
                f"({width // self.expert_width} x d_expert={self.expert_width}) but the base FFN has d_ffn="
                f"{self.ffn_width}; a stock UNet needs active experts x G <= 1."
            )
        pad = self.ffn_width - width
        if self.gated:
            parts_w = weight_in.unflatten(0, (-1, 2, self.expert_width)).unbind(1)  # value rows, gate rows
            parts_b = bias_in.unflatten(0, (-1, 2, self.expert_width)).unbind(1)
            proj_weight = torch.cat([F.pad(p.flatten(0, 1), (0, 0, 0, pad)) for p in parts_w])
            proj_bias = torch.cat([F.pad(p.flatten(), (0, pad)) for p in parts_b])
        else:
            proj_weight, proj_bias = F.pad(weight_in, (0, 0, 0, pad)), F.pad(bias_in, (0, pad))
        return {
            "net.0.proj.weight": proj_weight,
            "net.0.proj.bias": proj_bias,
            "net.2.weight": F.pad(weight_out, (0, pad)),
            "net.2.bias": bias_out,
        }

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, d_ffn={self.ffn_width}, experts={self.num_experts}x{self.expert_width}, "
                f"top_k={self.top_k}, tasks={self.ln_weight.shape[0]}")
