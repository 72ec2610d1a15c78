"""Build a backbone by name from a `ModelConfig`."""

from __future__ import annotations

from typing import Sequence

from ihas.config import ModelConfig
from ihas.models.base import CTRModel
from ihas.models.deepfm import DeepFM
from ihas.models.dlrm import DLRM
from ihas.models.fm import FM
from ihas.models.wide_deep import WideDeep

BACKBONES = ("dlrm", "fm", "wide_deep", "deepfm")


def build_backbone(name: str, field_dims: Sequence[int], model_config: ModelConfig) -> CTRModel:
    """Return a fresh backbone `name` with `model_config`'s embedding dim and MLP widths.

    FM has no MLP, so it ignores `mlp_dims`.
    """
    if name == "dlrm":
        return DLRM(field_dims, model_config.embed_dim, model_config.mlp_dims)
    if name == "fm":
        return FM(field_dims, model_config.embed_dim)
    if name == "wide_deep":
        return WideDeep(field_dims, model_config.embed_dim, model_config.mlp_dims)
    if name == "deepfm":
        return DeepFM(field_dims, model_config.embed_dim, model_config.mlp_dims)
    raise ValueError(f"unknown backbone {name!r}; use one of {', '.join(BACKBONES)}")
