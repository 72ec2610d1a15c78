"""Tests of the retraining stage: per-cluster dims from mask averages, and clusters that cannot train."""

from __future__ import annotations

import math

import pytest
import torch

from ihas.config import ModelConfig, PipelineConfig, RetrainConfig, TrainConfig
from ihas.gates import InstanceAgnosticGate
from ihas.stages.retrain import FALLBACK, GLOBAL_VALID, TRAINED, cluster_mask_means, run_retrain
from tests.designed import MASK_A, MASK_B, ROW_A, ROW_B, dataset, designed_model, masked_point, split


def config(min_train_rows: int = 1, keep_ratio: float = 0.5) -> PipelineConfig:
    return PipelineConfig(model=ModelConfig(embed_dim=4, mlp_dims=(4,)), train=TrainConfig(batch_size=8, max_epochs=1, patience=1),
                          retrain=RetrainConfig(keep_ratio=keep_ratio, min_train_rows=min_train_rows))


def test_designed_masks_are_exact():
    model, gate = designed_model()
    x = torch.tensor([ROW_A, ROW_B], dtype=torch.int32)
    centroids = torch.stack([masked_point(MASK_A, ROW_A), masked_point(MASK_B, ROW_B)])
    assignment, means = cluster_mask_means(model, gate, x, centroids, bins=20, batch_size=10)
    assert assignment.tolist() == [0, 1]
    assert means.tolist() == [MASK_A, MASK_B]


def test_cluster_mask_mean_hand_computed():
    model, gate = designed_model()
    x = torch.tensor([ROW_A, ROW_A, ROW_A, ROW_B], dtype=torch.int32)
    _, means = cluster_mask_means(model, gate, x, None, bins=20, batch_size=3)
    # Three rows of mask A and one of mask B: (3 * A + B) / 4.
    assert means[0].tolist() == [1.0, 1.0, 0.75, 0.0, 0.25, 0.0, 0.0, 0.0]


@pytest.mark.parametrize("keep_ratio, expected_dims", [(0.5, [3, 1]), (0.75, [2, 0]), (0.4, [3, 1])])
def test_retrain_dims_from_global_mask_average(keep_ratio, expected_dims):
    # Equal numbers of rows A and B: field 0 mean [1, 1, 0.5, 0], field 1 mean [0.5, 0, 0, 0].
    train = split([ROW_A, ROW_B] * 10, [0, 1] * 10)
    valid = split([ROW_A, ROW_B] * 3, [0, 1, 1, 0, 0, 1])
    model, gate = designed_model()
    result = run_retrain(model, gate, dataset(train, valid), config(keep_ratio=keep_ratio), centroids=None)
    assert len(result.clusters) == 1
    cluster = result.clusters[0]
    assert cluster.dims == expected_dims
    assert cluster.status == TRAINED
    assert cluster.train_rows == 20
    assert cluster.model_state is not None


def test_small_cluster_falls_back_and_one_class_valid_uses_global():
    centroids = torch.stack([masked_point(MASK_A, ROW_A), masked_point(MASK_B, ROW_B)])
    train = split([ROW_A] * 20 + [ROW_B] * 3, [0, 1] * 10 + [1, 1, 0])
    valid = split([ROW_A] * 4 + [ROW_B] * 2, [1, 1, 1, 1, 0, 1])  # cluster 0's validation rows are all 1
    model, gate = designed_model()
    result = run_retrain(model, gate, dataset(train, valid), config(min_train_rows=5), centroids=centroids)

    first, second = result.clusters
    assert first.status == GLOBAL_VALID
    assert "all of class 1" in first.reason
    assert first.dims == [3, 0]
    assert math.isfinite(first.best_valid_auc)  # early stopping scored the whole validation split
    assert second.status == FALLBACK
    assert "3 training rows" in second.reason
    assert second.model_state is None
    assert second.train_rows == 3


def test_cluster_without_validation_rows_uses_global():
    centroids = torch.stack([masked_point(MASK_A, ROW_A), masked_point(MASK_B, ROW_B)])
    train = split([ROW_A] * 10 + [ROW_B] * 10, [0, 1] * 10)
    valid = split([ROW_A] * 4, [0, 1, 0, 1])
    model, gate = designed_model()
    result = run_retrain(model, gate, dataset(train, valid), config(), centroids=centroids)
    assert result.clusters[0].status == TRAINED
    assert result.clusters[1].status == GLOBAL_VALID
    assert result.clusters[1].reason.startswith("no validation rows")
    assert result.clusters[1].dims == [2, 1]


def test_cluster_keeping_no_dim_says_so():
    # A closed instance-agnostic gate: every probability is sigmoid(-20), all in bin 0, so the
    # histogram has no valley, the 0.5 fallback keeps nothing, and every field gets 0 dims.
    model, _ = designed_model()
    closed = InstanceAgnosticGate(8)
    with torch.no_grad():
        closed.logits.fill_(-20.0)
    train = split([ROW_A, ROW_B] * 10, [0, 1] * 10)
    valid = split([ROW_A, ROW_B] * 3, [0, 1, 1, 0, 0, 1])
    result = run_retrain(model, closed, dataset(train, valid), config(), centroids=None)
    cluster = result.clusters[0]
    assert cluster.dims == [0, 0]
    assert cluster.status == TRAINED
    assert "keeps no dim at keep_ratio 0.5" in cluster.reason
    assert "single learned bias" in cluster.reason
