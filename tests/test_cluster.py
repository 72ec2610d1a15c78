"""Tests of the clustering stage: streaming batches, K > rows, empty clusters, seeded fits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ihas.config import ClusterConfig, PipelineConfig
from ihas.data.dataset import PreparedDataset, Split
from ihas.gates import InstanceWiseGate
from ihas.models.dlrm import DLRM
from ihas.stages.cluster import assign_clusters, batch_bounds, nearest_centroid, run_cluster


def build(field_dims, seed: int = 0) -> tuple[DLRM, InstanceWiseGate]:
    torch.manual_seed(seed)
    return DLRM(field_dims, embed_dim=4, mlp_dims=(4,)), InstanceWiseGate(len(field_dims) * 4)


def dataset(train_x: np.ndarray, field_dims) -> PreparedDataset:
    y = (np.arange(len(train_x)) % 2).astype(np.float32)
    split = Split(x=train_x.astype(np.int32), y=y)
    return PreparedDataset(field_names=tuple(f"f{i}" for i in range(len(field_dims))),
                           field_dims=tuple(field_dims), train=split, valid=split, test=split, metadata={})


def test_batch_bounds_merges_short_last_batch():
    assert batch_bounds(10, 4, min_rows=3) == [(0, 4), (4, 10)]
    assert batch_bounds(10, 4, min_rows=2) == [(0, 4), (4, 8), (8, 10)]
    assert batch_bounds(3, 4, min_rows=3) == [(0, 3)]


def test_nearest_centroid_hand_computed():
    points = torch.tensor([[0.0, 0.0], [2.9, 3.0], [1.0, 1.0], [10.0, -1.0]])
    centroids = torch.tensor([[0.0, 0.0], [3.0, 3.0], [1.0, 1.0]])
    assert nearest_centroid(points, centroids).tolist() == [0, 1, 2, 1]


def test_k_larger_than_training_rows_raises():
    data = dataset(np.array([[0, 1], [1, 0], [1, 1]]), (2, 2))
    model, gate = build(data.field_dims)
    config = PipelineConfig(cluster=ClusterConfig(num_clusters=4))
    with pytest.raises(ValueError, match=r"num_clusters=4 is larger than the 3 training rows"):
        run_cluster(model, gate, data, config)


def test_empty_cluster_is_dropped():
    # Every row has the same ids, so every masked embedding is the same point and at most one of
    # the two clusters can receive rows; the other is dropped.
    data = dataset(np.ones((50, 2)), (3, 3))
    model, gate = build(data.field_dims)
    config = PipelineConfig(cluster=ClusterConfig(num_clusters=2, batch_size=16))
    result = run_cluster(model, gate, data, config)
    assert result.requested_k == 2
    assert result.effective_k == 1
    assert result.num_dropped == 1
    assert result.counts == [50]
    assert result.centroids.shape == (1, 8)


def test_run_cluster_seeded_and_consistent(criteo_data):
    model, gate = build(criteo_data.field_dims)
    config = PipelineConfig(seed=3, cluster=ClusterConfig(num_clusters=3, batch_size=1000))
    first = run_cluster(model, gate, criteo_data, config)
    second = run_cluster(model, gate, criteo_data, config)
    assert torch.equal(first.centroids, second.centroids)
    assert sum(first.counts) == len(criteo_data.train)
    assert first.effective_k == len(first.counts) == first.centroids.shape[0]
    assert first.centroids.shape[1] == criteo_data.num_fields * 4
    x, _ = criteo_data.train.tensors()
    assignment = assign_clusters(model, gate, first.centroids, x, bins=config.search.bins, batch_size=777)
    counts = torch.bincount(assignment, minlength=first.effective_k).tolist()
    assert counts == first.counts
