"""A tiny backbone and gate with hand-set weights, so deterministic masks and clusters are known exactly.

Two fields of 2 ids each, embedding dim 4. Every embedding entry is +1 or -1, and the gate's logits
are 100 times the embedding, so a dimension's keep probability is ~1 where the entry is +1 and ~0
where it is -1. The per-sample histogram then has a spike at each end and its valley in bin 1, so
the deterministic mask is exactly [entry > 0]:
- row A = ids (0, 0): mask field 0 = [1, 1, 1, 0], field 1 = [0, 0, 0, 0]
- row B = ids (1, 1): mask field 0 = [1, 1, 0, 0], field 1 = [1, 0, 0, 0]
"""

from __future__ import annotations

import numpy as np
import torch

from ihas.data.dataset import PreparedDataset, Split
from ihas.gates import InstanceWiseGate
from ihas.models.dlrm import DLRM

FIELD_DIMS = (2, 2)
EMBED_DIM = 4
ROW_A = (0, 0)
ROW_B = (1, 1)
MASK_A = [1, 1, 1, 0, 0, 0, 0, 0]
MASK_B = [1, 1, 0, 0, 1, 0, 0, 0]
# Table rows in order: field 0 id 0, field 0 id 1, field 1 id 0, field 1 id 1.
TABLE = [[1, 1, 1, -1], [1, 1, -1, -1], [-1, -1, -1, -1], [1, -1, -1, -1]]


def designed_model() -> tuple[DLRM, InstanceWiseGate]:
    torch.manual_seed(0)
    model = DLRM(FIELD_DIMS, embed_dim=EMBED_DIM, mlp_dims=(4,))
    gate = InstanceWiseGate(len(FIELD_DIMS) * EMBED_DIM)
    with torch.no_grad():
        model.embedding.table.weight.copy_(torch.tensor(TABLE, dtype=torch.float32))
        gate.linear.weight.copy_(100.0 * torch.eye(8))
        gate.linear.bias.zero_()
    return model, gate


def masked_point(mask: list[int], ids: tuple[int, int]) -> torch.Tensor:
    """Return mask * embedding of the row with `ids`: the point K-Means sees for it."""
    e = torch.tensor(TABLE[ids[0]] + TABLE[2 + ids[1]], dtype=torch.float32)
    return e * torch.tensor(mask, dtype=torch.float32)


def split(rows: list[tuple[int, int]], labels: list[int]) -> Split:
    return Split(x=np.array(rows, dtype=np.int32).reshape(-1, 2), y=np.array(labels, dtype=np.float32))


def dataset(train: Split, valid: Split, test: Split | None = None) -> PreparedDataset:
    return PreparedDataset(field_names=("f0", "f1"), field_dims=FIELD_DIMS, train=train, valid=valid,
                           test=test if test is not None else valid, metadata={"fingerprint": "designed"})
