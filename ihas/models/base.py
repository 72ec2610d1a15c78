"""The contract every backbone follows: embed, score an embedding, or both with an optional mask."""

from __future__ import annotations

import torch
from torch import nn


class CTRModel(nn.Module):
    """Base class of the backbones: per-field embeddings followed by a part that scores them.

    Subclasses set `self.embedding`, a module that maps ids to float [B, F, D] or [B, N*], and
    implement `forward_embedded`. `forward` joins the two and applies a mask.
    """

    embedding: nn.Module

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Embed ids x (int [B, F]) and return the flattened embeddings (float [B, N*])."""
        return self.embedding(x).flatten(1)

    def forward_embedded(self, e: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Score embeddings e (float [B, N*]) of ids x (int [B, F]); return logits (float [B]).

        `x` is there for the parts that read raw ids, such as a wide or first-order linear part.
        """
        raise NotImplementedError

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Return logits (float [B]) for ids x (int [B, F]).

        `mask` (float [B, N*] or [N*], 1 keeps a dimension, 0 zeroes it) multiplies the flattened
        embedding before scoring.
        """
        e = self.embed(x)
        if mask is not None:
            e = e * _check_mask(mask, e)
        return self.forward_embedded(e, x)

    def num_parameters(self) -> int:
        """Count the scalar parameters of the model."""
        return sum(p.numel() for p in self.parameters())


def _check_mask(mask: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    num_dims = e.shape[1]
    if mask.shape not in ((num_dims,), (e.shape[0], num_dims)):
        raise ValueError(f"mask must have shape [{num_dims}] or [{e.shape[0]}, {num_dims}], got {tuple(mask.shape)}")
    if not mask.is_floating_point():
        raise ValueError(f"mask must be a float tensor, got {mask.dtype}; convert it with mask.float()")
    return mask
