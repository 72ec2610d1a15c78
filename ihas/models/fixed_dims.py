"""Cluster models with fixed per-field embedding dims on any backbone, for transferring searched gates.

The retraining stage gives field f of a cluster `dims[f]` of the D embedding dims (0 drops the
field). The DLRM takes such dims directly (`MixedDimDLRM` concatenates fields of different widths),
but FM and DeepFM cannot: their pairwise term <v_f, v_g> needs every field to have the same width.

Construction chosen here: field f's embedding is its first `dims[f]` dims, padded with zeros to D.
`FixedDimsModel` builds this as a full-D backbone whose embedding is multiplied by a fixed 0/1
prefix mask, so every backbone (DLRM, FM, Wide&Deep, DeepFM) scores it unchanged:
- the pairwise term of two fields sums over their min(dims[f], dims[g]) shared leading dims;
- masked dims are always 0 in the output, so their table entries and the MLP input columns that
  read them never affect a prediction. `num_parameters` counts only the parameters that do.
The prefix, rather than the positions the gate kept, is what makes two fields' kept dims overlap:
the cluster model is trained from scratch, so only the number of dims per field carries over.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ihas.config import ModelConfig
from ihas.models.base import CTRModel
from ihas.models.dlrm import MixedDimDLRM
from ihas.models.factory import BACKBONES, build_backbone


def prefix_mask(dims: Sequence[int], embed_dim: int) -> torch.Tensor:
    """Return the float [F*D] mask that keeps the first dims[f] dims of each field f."""
    position = torch.arange(embed_dim)
    rows = [(position < d).to(torch.float32) for d in dims]
    return torch.cat(rows) if rows else torch.zeros(0)


class FixedDimsModel(CTRModel):
    """A full-D backbone that reads only the first `dims[f]` embedding dims of each field f.

    The dims are fixed at construction, so `forward` takes no mask. `embed` returns the masked
    full-width embedding [B, F*D] that the backbone's scorer reads.
    NOTE: inference runs at full width D, so its time is that of the full backbone; only the
    parameter count shrinks with the dims.
    """

    def __init__(self, backbone_name: str, field_dims: Sequence[int], dims: Sequence[int],
                 model_config: ModelConfig) -> None:
        super().__init__()
        self.backbone_name = backbone_name
        self.backbone = build_backbone(backbone_name, field_dims, model_config)
        self.field_dims = tuple(int(v) for v in field_dims)
        self.embed_dim = model_config.embed_dim
        self.dims = [int(d) for d in dims]
        if len(self.dims) != len(self.field_dims):
            raise ValueError(f"dims has {len(self.dims)} entries but the data has {len(self.field_dims)} fields; "
                             "give one dim count per field")
        bad = [d for d in self.dims if not 0 <= d <= self.embed_dim]
        if bad:
            raise ValueError(f"every per-field dim must be in [0, {self.embed_dim}] (the embedding dim), got {self.dims}")
        self.register_buffer("mask", prefix_mask(self.dims, self.embed_dim))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Embed ids x (int [B, F]) and return the masked embedding (float [B, F*D])."""
        return self.backbone.embed(x) * self.mask

    def forward_embedded(self, e: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Score masked embeddings e (float [B, F*D]) of ids x (int [B, F]); return logits (float [B])."""
        return self.backbone.forward_embedded(e, x)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Return logits (float [B]) for ids x (int [B, F]); a mask is rejected."""
        if mask is not None:
            raise ValueError("FixedDimsModel takes no mask: its per-field dims are fixed when it is built")
        return self.forward_embedded(self.embed(x), x)

    def num_parameters(self) -> int:
        """Count the parameters that can change a prediction: all of them minus those the mask hides.

        Hidden are the table entries of the dropped dims: vocabulary size of field f times
        D - dims[f]. When the backbone has an MLP over the embedding, so are the weights of its first
        layer that read a dropped dim, one column of the layer's width per dropped dim.
        """
        total = sum(p.numel() for p in self.backbone.parameters())
        dropped_dims = [self.embed_dim - d for d in self.dims]
        hidden = sum(vocabulary * dropped for vocabulary, dropped in zip(self.field_dims, dropped_dims))
        mlp = getattr(self.backbone, "mlp", None)
        if mlp is not None and mlp.in_dim > 0:
            first_layer = mlp.layers[0]
            hidden += sum(dropped_dims) * first_layer.out_features
        return total - hidden


def build_cluster_model(backbone_name: str, field_dims: Sequence[int], dims: Sequence[int],
                        model_config: ModelConfig) -> nn.Module:
    """Build a fresh cluster model of `backbone_name` with `dims[f]` embedding dims for field f.

    The DLRM gets the narrow `MixedDimDLRM` that the iHAS retraining stage uses; the other
    backbones get a `FixedDimsModel` (zero-padded prefix dims, see this module's docstring).
    """
    if backbone_name == "dlrm":
        return MixedDimDLRM(field_dims, dims, model_config.mlp_dims)
    if backbone_name not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone_name!r}; use one of {', '.join(BACKBONES)}")
    return FixedDimsModel(backbone_name, field_dims, dims, model_config)
