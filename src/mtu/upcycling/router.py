"""The per-layer task router (Sec. 5, Eq. 1).

Routing depends only on the task, never on the token: each layer maps every task embedding e_tau to N expert
weights once per forward, and the FFN then mixes its experts with those fixed weights.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def init_linear_(linear: nn.Linear, generator: torch.Generator | None) -> None:
    """nn.Linear's default init (Kaiming-uniform, a=sqrt(5)) drawn from `generator`, so upcycling is seeded."""
    if linear.weight.is_meta:
        return
    bound = 1.0 / math.sqrt(linear.in_features)
    with torch.no_grad():
        weight = torch.empty(linear.weight.shape).uniform_(-bound, bound, generator=generator)
        linear.weight.copy_(weight)
        if linear.bias is not None:
            linear.bias.copy_(torch.empty(linear.bias.shape).uniform_(-bound, bound, generator=generator))


class TaskRouter(nn.Module):
    """g(e_tau; theta_r): a 2-layer ReLU MLP from a task embedding to N expert logits, then softmax (Eq. 1).

    The output layer starts at zero, so every task starts with uniform weights 1/N (what `init="preserve"`
    relies on). With `top_k`, the k largest weights are kept and renormalised to sum to one.
    """

    def __init__(self, task_embedding_size: int, hidden_size: int, num_experts: int, top_k: int | None = None,
                 device=None, dtype=None):
        super().__init__()
        self.num_experts = num_experts
        self.top_k = top_k
        self.hidden = nn.Linear(task_embedding_size, hidden_size, device=device, dtype=dtype)
        self.out = nn.Linear(hidden_size, num_experts, device=device, dtype=dtype)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, task_embeddings: torch.Tensor) -> torch.Tensor:
        """(num_tasks, d_task) -> (num_tasks, N) expert weights; rows sum to one, zeros outside the top-k."""
        logits = self.out(torch.relu(self.hidden(task_embeddings)))
        weights = torch.softmax(logits, dim=-1)
        if self.top_k is None or self.top_k == self.num_experts:
            return weights
        top_values, top_index = weights.topk(self.top_k, dim=-1)
        sparse = torch.zeros_like(weights).scatter(-1, top_index, top_values)
        return sparse / sparse.sum(dim=-1, keepdim=True)
