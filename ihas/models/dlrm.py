"""The DLRM backbone of iHAS (Yu et al., CIKM 2023): concatenated field embeddings, an MLP
(16-8, ReLU) and one logit."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ihas.models.base import CTRModel
from ihas.models.embedding import FieldEmbedding, MixedDimEmbedding
from ihas.models.mlp import MLP


class DLRM(CTRModel):
    """Uniform-dim embeddings of every field, flattened to N* = F*D, scored by an MLP."""

    def __init__(self, field_dims: Sequence[int], embed_dim: int = 16, mlp_dims: Sequence[int] = (16, 8)) -> None:
        super().__init__()
        self.embedding = FieldEmbedding(field_dims, embed_dim)
        self.num_fields = self.embedding.num_fields
        self.embed_dim = self.embedding.embed_dim
        self.mlp = MLP(self.num_fields * self.embed_dim, mlp_dims)

    def forward_embedded(self, e: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Score embeddings e (float [B, F*D]); x is unused. Return logits (float [B])."""
        return self.mlp(e)


class MixedDimDLRM(CTRModel):
    """DLRM whose field f has `dims[f]` embedding dims (0 drops it); the retraining stage builds it.

    The dims are fixed at construction, so `forward` takes no mask, and `embed` returns
    [B, sum(dims)] rather than [B, F*D].
    """

    def __init__(self, field_dims: Sequence[int], dims: Sequence[int], mlp_dims: Sequence[int] = (16, 8)) -> None:
        super().__init__()
        self.embedding = MixedDimEmbedding(field_dims, dims)
        self.num_fields = self.embedding.num_fields
        self.dims = self.embedding.dims
        self.mlp = MLP(self.embedding.output_dim, mlp_dims)

    def forward_embedded(self, e: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Score embeddings e (float [B, sum(dims)]); x is unused. Return logits (float [B])."""
        return self.mlp(e)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Return logits (float [B]) for ids x (int [B, F]); a mask is rejected."""
        if mask is not None:
            raise ValueError("MixedDimDLRM takes no mask: its per-field dims are fixed when it is built")
        return self.mlp(self.embedding(x))


def dims_from_mask(mask_mean: torch.Tensor | np.ndarray | Sequence[float], num_fields: int, embed_dim: int,
                   keep_ratio: float = 0.5) -> list[int]:
    """Count, per field, the dims whose mean mask bit is >= keep_ratio.

    `mask_mean` (float [N*], N* = num_fields * embed_dim, field-major like the flattened embedding)
    is the average of the deterministic masks of a cluster's training samples. Field n gets as many
    dims as it keeps, and 0 drops it.
    """
    mean = torch.as_tensor(mask_mean.detach().cpu() if isinstance(mask_mean, torch.Tensor) else np.asarray(mask_mean))
    if not mean.is_floating_point():
        mean = mean.to(torch.float64)
    expected = num_fields * embed_dim
    if mean.shape != (expected,):
        raise ValueError(f"mask_mean must have shape [{expected}] (num_fields {num_fields} x embed_dim {embed_dim}), "
                         f"got {tuple(mean.shape)}")
    if not 0.0 < keep_ratio <= 1.0:
        raise ValueError(f"keep_ratio must be in (0, 1], got {keep_ratio}")
    # Compare in the averages' own precision: a float32 average of 7/10 equals float32(0.7), which is
    # below the float64 0.7, so a float64 comparison would drop a dim kept by exactly keep_ratio.
    ratio = torch.tensor(keep_ratio, dtype=mean.dtype)
    kept = (mean.reshape(num_fields, embed_dim) >= ratio).sum(dim=1)
    return [int(k) for k in kept]
