"""Wide & Deep: a linear model over the raw ids plus the DLRM deep part."""

from __future__ import annotations

from typing import Sequence

import torch

from ihas.models.base import CTRModel
from ihas.models.embedding import FieldEmbedding
from ihas.models.linear import FeatureLinear
from ihas.models.mlp import MLP


class WideDeep(CTRModel):
    """Logit = (bias + sum_f w[x_f]) + MLP(flattened embedding).

    A mask zeroes embedding dims only, so the wide part over the raw ids stays in effect.
    """

    def __init__(self, field_dims: Sequence[int], embed_dim: int = 16, mlp_dims: Sequence[int] = (16, 8)) -> None:
        super().__init__()
        self.embedding = FieldEmbedding(field_dims, embed_dim)
        self.num_fields = self.embedding.num_fields
        self.embed_dim = self.embedding.embed_dim
        self.linear = FeatureLinear(field_dims)
        self.mlp = MLP(self.num_fields * self.embed_dim, mlp_dims)

    def forward_embedded(self, e: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Score embeddings e (float [B, F*D]) of ids x (int [B, F]); return logits (float [B])."""
        return self.linear(x) + self.mlp(e)
