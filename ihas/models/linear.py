"""First-order (wide) linear part: one learned weight per feature value plus a bias."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ihas.models.embedding import _check_field_dims, _check_ids, _offsets, _table_rows


class FeatureLinear(nn.Module):
    """Logit part sum_f w[x_f] + b over the raw ids, as in FM's first order and Wide&Deep's wide part.

    Weights and bias start at 0, so at init the part adds nothing to the logit.
    """

    def __init__(self, field_dims: Sequence[int]) -> None:
        super().__init__()
        self.field_dims = _check_field_dims(field_dims)
        self.num_fields = len(self.field_dims)
        self.weight = nn.Embedding(sum(self.field_dims), 1)
        nn.init.zeros_(self.weight.weight)
        self.bias = nn.Parameter(torch.zeros(1))
        self.register_buffer("offsets", _offsets(self.field_dims), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the linear logit part (float [B]) of ids x (int32 or int64 [B, F])."""
        _check_ids(x, self.num_fields)
        return self.weight(_table_rows(x, self.offsets)).sum(dim=(1, 2)) + self.bias


def pairwise_interactions(v: torch.Tensor) -> torch.Tensor:
    """Return sum_{f<g} <v_f, v_g> (float [B]) for field embeddings v (float [B, F, D]).

    Uses the identity sum_{f<g} <v_f, v_g> = 0.5 * sum_d ((sum_f v_fd)^2 - sum_f v_fd^2), which costs
    O(F*D) instead of O(F^2*D).
    """
    square_of_sum = v.sum(dim=1).pow(2)
    sum_of_squares = v.pow(2).sum(dim=1)
    return 0.5 * (square_of_sum - sum_of_squares).sum(dim=1)
