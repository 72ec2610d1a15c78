"""AdaFS: hard mode keeps exactly k fields per sample; both modes run end to end on real data."""

from __future__ import annotations

import json
import math

import pytest
import torch

from ihas.baselines.adafs import AdaFSModel, hard_weights, run_adafs_hard, run_adafs_soft
from ihas.config import PipelineConfig
from ihas.models.dlrm import DLRM


def test_hard_weights_keep_top_k_renormalized():
    weights = torch.tensor([[0.1, 0.4, 0.2, 0.3],
                            [0.25, 0.25, 0.25, 0.25]])
    out = hard_weights(weights, 2)
    # Row 0 keeps 0.4 and 0.3, renormalized by their sum 0.7.
    assert torch.allclose(out[0], torch.tensor([0.0, 0.4 / 0.7, 0.0, 0.3 / 0.7]))
    # Row 1 is all ties: still exactly two fields, each with half the weight.
    assert int((out[1] > 0).sum()) == 2
    assert torch.allclose(out[1][out[1] > 0], torch.tensor([0.5, 0.5]))


def test_hard_weights_reject_bad_k():
    with pytest.raises(ValueError, match="k must be in"):
        hard_weights(torch.ones(2, 3) / 3, 4)


def test_hard_mode_keeps_half_the_fields_per_sample(criteo_data):
    torch.manual_seed(0)
    num_fields = criteo_data.num_fields
    k = num_fields // 2
    model = AdaFSModel(DLRM(criteo_data.field_dims, 16), num_fields, 16, k).eval()
    x, _ = criteo_data.valid.tensors()
    with torch.no_grad():
        weights = model.field_weights(model.backbone.embed(x))
    kept = (weights > 0).sum(dim=1)
    assert torch.equal(kept, torch.full_like(kept, k))
    assert torch.allclose(weights.sum(dim=1), torch.ones(x.shape[0]), atol=1e-5)


def test_soft_mode_weights_every_field(criteo_data):
    torch.manual_seed(0)
    model = AdaFSModel(DLRM(criteo_data.field_dims, 16), criteo_data.num_fields, 16, None).eval()
    x, _ = criteo_data.valid.tensors()
    with torch.no_grad():
        weights = model.field_weights(model.backbone.embed(x[:64]))
    assert bool((weights > 0).all())
    assert torch.allclose(weights.sum(dim=1), torch.ones(64), atol=1e-5)


@pytest.mark.parametrize("runner, kept", [(run_adafs_soft, None), (run_adafs_hard, 19)])
def test_adafs_end_to_end(criteo_data, runner, kept):
    config = PipelineConfig.from_dict({"train": {"max_epochs": 1}, "baseline": {
        "adafs-soft": {"pretrain_epochs": 1}, "adafs-hard": {"pretrain_epochs": 1}}})
    metrics = runner(config, criteo_data)
    assert math.isfinite(metrics["test_auc"])
    assert math.isfinite(metrics["test_logloss"])
    selection = json.loads(metrics["selection"])
    assert selection["fields_kept_per_sample"] == (kept or criteo_data.num_fields)
