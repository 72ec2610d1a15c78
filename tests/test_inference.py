"""Tests of routed inference and of saving and loading a routed model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ihas.config import ModelConfig, PipelineConfig
from ihas.metrics import log_loss, roc_auc
from ihas.models.dlrm import MixedDimDLRM
from ihas.serialize import load_routed_model, save_routed_model
from ihas.stages.inference import RoutedModel, evaluate_routed
from tests.designed import (FIELD_DIMS, MASK_A, MASK_B, ROW_A, ROW_B, designed_model, masked_point, split)

REPO_ROOT = Path(__file__).resolve().parents[1]


def routed_two_clusters(own_model_for_b: bool = True) -> RoutedModel:
    model, gate = designed_model()
    centroids = torch.stack([masked_point(MASK_A, ROW_A), masked_point(MASK_B, ROW_B)])
    torch.manual_seed(1)
    cluster_a = MixedDimDLRM(FIELD_DIMS, [3, 0], (4,))
    cluster_b = MixedDimDLRM(FIELD_DIMS, [2, 1], (4,)) if own_model_for_b else None
    return RoutedModel(model, gate, centroids, [cluster_a, cluster_b], bins=20)


def test_rows_go_to_their_cluster_model():
    routed = routed_two_clusters().eval()
    x = torch.tensor([ROW_A, ROW_B, ROW_B, ROW_A], dtype=torch.int32)
    logits, clusters = routed.predict_with_clusters(x)
    assert clusters.tolist() == [0, 1, 1, 0]
    with torch.no_grad():
        expected_a = routed.cluster_models["0"](x[[0, 3]])
        expected_b = routed.cluster_models["1"](x[[1, 2]])
    torch.testing.assert_close(logits[[0, 3]], expected_a)
    torch.testing.assert_close(logits[[1, 2]], expected_b)
    assert routed.assign(x).tolist() == [0, 1, 1, 0]


def test_fallback_cluster_uses_masked_base_model():
    routed = routed_two_clusters(own_model_for_b=False).eval()
    x = torch.tensor([ROW_B, ROW_A], dtype=torch.int32)
    logits = routed.predict_logits(x)
    with torch.no_grad():
        expected_b = routed.base(x[:1], mask=torch.tensor(MASK_B, dtype=torch.float32))
    torch.testing.assert_close(logits[:1], expected_b)


def test_parameter_counts_hand_computed():
    routed = routed_two_clusters(own_model_for_b=False)
    counts = routed.parameter_counts()
    # Base embedding table 4 rows x 4 dims = 16; gate 8 x 8 + 8 = 72; centroids 2 x 8 = 16.
    assert counts["num_params_routing"] == 16 + 72 + 16
    # Base MLP: Linear(8, 4) = 36 and Linear(4, 1) = 5, used because cluster 1 falls back to it.
    assert counts["num_params_base_scorer"] == 36 + 5
    # Cluster 0: field 0 with 3 dims = 2 x 3 = 6 table entries; MLP Linear(3, 4) = 16, Linear(4, 1) = 5.
    assert counts["num_params_cluster_0"] == 6 + 16 + 5
    assert counts["num_params_cluster_1"] == 0
    assert counts["num_params"] == 104 + 41 + 27


def test_single_retrained_model_needs_no_routing():
    torch.manual_seed(0)
    only = MixedDimDLRM(FIELD_DIMS, [2, 1], (4,))
    routed = RoutedModel(None, None, None, [only], bins=20)
    assert routed.parameter_counts() == {"num_params_cluster_0": only.num_parameters(),
                                         "num_params": only.num_parameters()}


def test_routed_model_rejects_inconsistent_parts():
    model, gate = designed_model()
    with pytest.raises(ValueError, match="need centroids"):
        RoutedModel(model, gate, None, [None, None], bins=20)
    with pytest.raises(ValueError, match="2 centroids but 1 cluster models"):
        RoutedModel(model, gate, torch.zeros(2, 8), [None], bins=20)


def test_evaluate_routed_global_and_per_cluster_metrics():
    routed = routed_two_clusters()
    rows = [ROW_A] * 6 + [ROW_B] * 4
    labels = [0, 1, 0, 1, 1, 1, 0, 0, 1, 0]
    metrics = evaluate_routed(routed, split(rows, labels), batch_size=3)
    with torch.no_grad():
        probs = torch.sigmoid(routed.predict_logits(torch.tensor(rows, dtype=torch.int32))).numpy()
    y = np.array(labels, dtype=np.float64)
    # Global figures are computed over all rows at once, not averaged over clusters or batches.
    assert metrics["test_auc"] == pytest.approx(roc_auc(y, probs))
    assert metrics["test_logloss"] == pytest.approx(log_loss(y, probs))
    assert metrics["cluster_0_test_rows"] == 6
    assert metrics["cluster_1_test_rows"] == 4
    assert metrics["cluster_0_test_label_rate"] == pytest.approx(4 / 6)
    assert metrics["cluster_1_test_label_rate"] == pytest.approx(1 / 4)
    assert metrics["cluster_1_test_auc"] == pytest.approx(roc_auc(y[6:], probs[6:]))
    assert metrics["inference_seconds"] > 0
    assert metrics["inference_samples_per_s"] == pytest.approx(10 / metrics["inference_seconds"])


def test_saved_model_files_hold_tensors_only(tmp_path):
    routed = routed_two_clusters(own_model_for_b=False)
    config = PipelineConfig(model=ModelConfig(embed_dim=4, mlp_dims=(4,)))
    save_routed_model(routed, tmp_path, variant="ihas", config=config, field_names=("f0", "f1"),
                      field_dims=FIELD_DIMS)
    state = torch.load(tmp_path / "model.pt", weights_only=True)
    assert all(isinstance(value, torch.Tensor) for value in state.values())
    description = json.loads((tmp_path / "model.json").read_text())
    assert description["cluster_dims"] == [[3, 0], None]
    assert description["gate_kind"] == "instance"
    assert description["num_clusters"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.json", "model.pt"]


def test_loaded_model_in_fresh_process_predicts_same(tmp_path):
    routed = routed_two_clusters(own_model_for_b=False).eval()
    config = PipelineConfig(model=ModelConfig(embed_dim=4, mlp_dims=(4,)))
    save_routed_model(routed, tmp_path / "model", variant="ihas", config=config, field_names=("f0", "f1"),
                      field_dims=FIELD_DIMS)
    x = torch.tensor([ROW_A, ROW_B, ROW_B, ROW_A, ROW_A], dtype=torch.int32)
    torch.save({"x": x}, tmp_path / "rows.pt")
    script = (
        "import sys, torch\n"
        "from ihas.serialize import load_routed_model\n"
        "routed = load_routed_model(sys.argv[1] + '/model')\n"
        "x = torch.load(sys.argv[1] + '/rows.pt', weights_only=True)['x']\n"
        "torch.save({'logits': routed.predict_logits(x)}, sys.argv[1] + '/logits.pt')\n")
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True, cwd=REPO_ROOT)
    loaded_logits = torch.load(tmp_path / "logits.pt", weights_only=True)["logits"]
    torch.testing.assert_close(loaded_logits, routed.predict_logits(x), rtol=0, atol=0)


def test_load_missing_model_names_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="model.json not found"):
        load_routed_model(tmp_path)
