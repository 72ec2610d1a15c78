"""DeepFM: a factorization machine and an MLP that read the same embedding."""

from __future__ import annotations

from typing import Sequence

import torch

from ihas.models.base import CTRModel
from ihas.models.embedding import FieldEmbedding
from ihas.models.linear import FeatureLinear, pairwise_interactions
from ihas.models.mlp import MLP


class DeepFM(CTRModel):
    """Logit = bias + sum_f w[x_f] + sum_{f<g} <v_f, v_g> + MLP(flattened v).

    A mask zeroes embedding dims, which both the FM and the MLP read; the first-order weights over
    the raw ids stay in effect.
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
        v = e.view(e.shape[0], self.num_fields, self.embed_dim)
        return self.linear(x) + pairwise_interactions(v) + self.mlp(e)
