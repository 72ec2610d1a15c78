"""Backbones on a shared field embedding; every one follows the `CTRModel` contract."""

from ihas.models.base import CTRModel
from ihas.models.deepfm import DeepFM
from ihas.models.dlrm import DLRM, MixedDimDLRM, dims_from_mask
from ihas.models.embedding import FieldEmbedding, MixedDimEmbedding
from ihas.models.factory import build_backbone
from ihas.models.fm import FM
from ihas.models.mlp import MLP
from ihas.models.wide_deep import WideDeep

__all__ = ["CTRModel", "DLRM", "DeepFM", "FM", "FieldEmbedding", "MLP", "MixedDimDLRM", "MixedDimEmbedding",
           "WideDeep", "build_backbone", "dims_from_mask"]
