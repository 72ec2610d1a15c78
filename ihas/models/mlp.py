"""The MLP tower that maps a flat feature vector to one logit."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class MLP(nn.Module):
    """Linear + ReLU for each hidden width in `hidden_dims`, then a Linear layer to one logit.

    With `in_dim == 0` (every field dropped) there is nothing to transform, so the tower is a single
    learned bias: the model predicts the same logit for every sample, which is the best it can do
    without features.
    """

    def __init__(self, in_dim: int, hidden_dims: Sequence[int] = (16, 8)) -> None:
        super().__init__()
        if in_dim < 0:
            raise ValueError(f"in_dim must be >= 0, got {in_dim}")
        hidden = tuple(int(h) for h in hidden_dims)
        if any(h < 1 for h in hidden):
            raise ValueError(f"hidden_dims must be positive, got {list(hidden)}")
        self.in_dim = int(in_dim)
        self.hidden_dims = hidden
        if self.in_dim == 0:
            self.layers = nn.Sequential()
            self.bias = nn.Parameter(torch.zeros(1))
            return
        self.bias = None
        layers: list[nn.Module] = []
        width = self.in_dim
        for h in hidden:
            layers.append(nn.Linear(width, h))
            layers.append(nn.ReLU())
            width = h
        layers.append(nn.Linear(width, 1))
        self.layers = nn.Sequential(*layers)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """Map features h (float [B, in_dim]) to logits (float [B])."""
        if h.dim() != 2 or h.shape[1] != self.in_dim:
            raise ValueError(f"MLP input must have shape [B, {self.in_dim}], got {tuple(h.shape)}")
        if self.bias is not None:
            return self.bias.expand(h.shape[0])
        return self.layers(h).squeeze(1)
