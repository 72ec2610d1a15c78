"""Clustering stage: MiniBatchKMeans over the masked embeddings of the training split, fitted by streaming.

A row's masked embedding is its deterministic gate mask times its flattened embedding. The split is
streamed in seeded random order, `cluster.batch_size` rows per `partial_fit` call, so memory does not
grow with the number of rows.

Defined outcomes of the edge cases:
- K larger than the number of training rows raises ValueError naming both and the setting to change.
- A cluster that no training row is assigned to is dropped with a warning. The remaining centroids
  are renumbered in their order, `effective_k` counts them and `num_dropped` the dropped ones.
  Dropping an empty cluster changes no row's assignment, since no row was nearest to it.
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sklearn.cluster import MiniBatchKMeans
from sklearn.exceptions import ConvergenceWarning
from torch import nn

from ihas.config import PipelineConfig
from ihas.data.dataset import PreparedDataset
from ihas.gates import deterministic_probs
from ihas.models.base import CTRModel
from ihas.threshold import deterministic_mask
from ihas.training import mix_seed

logger = logging.getLogger(__name__)


@dataclass
class ClusterResult:
    """Fitted centroids and how the training rows fall into them."""

    centroids: torch.Tensor  # float32 [K, N*], K = effective_k
    counts: list[int]  # training rows per cluster
    num_fallback: int  # training rows whose histogram had no valley (threshold 0.5 used)
    requested_k: int
    effective_k: int
    num_dropped: int  # empty clusters removed after assignment

    def to_state(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "ClusterResult":
        return cls(**state)


@torch.no_grad()
def masked_embeddings(model: CTRModel, gate: nn.Module, x: torch.Tensor, bins: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Return (masked embedding [B, N*], deterministic mask [B, N*], number of fallback rows) of ids x."""
    e = model.embed(x)
    mask, num_fallback = deterministic_mask(deterministic_probs(gate(e)), bins)
    return e * mask, mask, int(num_fallback)


def nearest_centroid(points: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Return the index (int64 [B]) of the nearest centroid in Euclidean distance; ties go to the lower index."""
    # |p - c|^2 = |p|^2 - 2 p.c + |c|^2, and |p|^2 is the same for every centroid of a row.
    scores = (centroids * centroids).sum(dim=1) - 2.0 * points @ centroids.T
    return scores.argmin(dim=1)


@torch.no_grad()
def assign_clusters(model: CTRModel, gate: nn.Module, centroids: torch.Tensor, x: torch.Tensor, *,
                    bins: int, batch_size: int) -> torch.Tensor:
    """Return the cluster id (int64 [N]) of each row of ids x (int [N, F])."""
    model.eval()
    gate.eval()
    centroids = centroids.to(x.device)
    parts = []
    for start in range(0, x.shape[0], batch_size):
        points, _, _ = masked_embeddings(model, gate, x[start:start + batch_size], bins)
        parts.append(nearest_centroid(points, centroids))
    if not parts:
        return torch.empty(0, dtype=torch.int64, device=x.device)
    return torch.cat(parts)


def batch_bounds(num_rows: int, batch_size: int, min_rows: int) -> list[tuple[int, int]]:
    """Split [0, num_rows) into batches of `batch_size`; a last batch under `min_rows` joins the one before."""
    bounds = [(start, min(start + batch_size, num_rows)) for start in range(0, num_rows, batch_size)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < min_rows:
        last = bounds.pop()
        bounds[-1] = (bounds[-1][0], last[1])
    return bounds


def run_cluster(model: CTRModel, gate: nn.Module, data: PreparedDataset, config: PipelineConfig) -> ClusterResult:
    """Fit K-Means on the training split's masked embeddings and drop clusters left empty."""
    k = config.cluster.num_clusters
    num_rows = len(data.train)
    if k > num_rows:
        raise ValueError(f"cluster.num_clusters={k} is larger than the {num_rows} training rows; "
                         f"set cluster.num_clusters to at most {num_rows}")
    device = torch.device(config.device)
    model.to(device).eval()
    gate.to(device).eval()
    x, _ = data.train.tensors(device)
    bins = config.search.bins
    batch_size = max(config.cluster.batch_size, k)
    kmeans = MiniBatchKMeans(n_clusters=k, random_state=config.seed, batch_size=batch_size, n_init=3)

    num_fallback = 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        for pass_index in range(config.cluster.passes):
            generator = torch.Generator().manual_seed(mix_seed(config.seed + 3, pass_index))
            order = torch.randperm(num_rows, generator=generator).to(device)
            for start, stop in batch_bounds(num_rows, batch_size, k):
                points, _, fallback = masked_embeddings(model, gate, x.index_select(0, order[start:stop]), bins)
                if pass_index == 0:
                    num_fallback += fallback
                kmeans.partial_fit(points.cpu().numpy().astype(np.float32))
    for warning in caught:
        logger.warning("MiniBatchKMeans: %s", warning.message)

    centroids = torch.as_tensor(kmeans.cluster_centers_, dtype=torch.float32)
    assignment = assign_clusters(model, gate, centroids, x, bins=bins, batch_size=batch_size)
    counts = torch.bincount(assignment.cpu(), minlength=k)
    keep = counts > 0
    num_dropped = int((~keep).sum())
    if num_dropped:
        logger.warning("clustering: %d of %d clusters have no training rows and are dropped; "
                       "%d clusters remain (lower cluster.num_clusters to avoid this)",
                       num_dropped, k, int(keep.sum()))
    centroids, counts = centroids[keep], counts[keep]
    logger.info("clustering: K=%d, rows per cluster %s, %d rows fell back to threshold 0.5",
                len(counts), counts.tolist(), num_fallback)
    return ClusterResult(centroids=centroids, counts=[int(c) for c in counts], num_fallback=num_fallback,
                         requested_k=k, effective_k=int(keep.sum()), num_dropped=num_dropped)
