"""AutoField: top-k fields by keep log-odds, the temperature decay, no noise at evaluation."""

from __future__ import annotations

import json
import math

import pytest
import torch

from ihas.baselines.autofield import FieldGatedModel, run_autofield, search_temperature, top_fields
from ihas.config import PipelineConfig
from ihas.models.dlrm import DLRM


def test_top_fields_by_keep_log_odds():
    # Columns (drop, keep); log-odds keep - drop: 1, -2, 3, 0.
    arch = torch.tensor([[0.0, 1.0], [2.0, 0.0], [0.0, 3.0], [1.0, 1.0]])
    assert top_fields(arch, 2) == [0, 2]
    assert top_fields(arch, 3) == [0, 2, 3]


def test_top_fields_ranks_log_odds_not_keep_logit():
    # Field 0 has the larger keep logit (4) but a larger drop logit: log-odds -1 against 1.
    arch = torch.tensor([[5.0, 4.0], [0.0, 1.0]])
    assert top_fields(arch, 1) == [1]


def test_top_fields_ties_go_to_lower_index():
    arch = torch.zeros(4, 2)
    assert top_fields(arch, 2) == [0, 1]


def test_temperature_decays_from_one_to_final():
    assert search_temperature(0, 4, 1.0, 0.01) == pytest.approx(1.0)
    assert search_temperature(3, 4, 1.0, 0.01) == pytest.approx(0.01)
    assert search_temperature(1, 4, 1.0, 0.01) == pytest.approx(0.01 ** (1 / 3))


def test_evaluation_has_no_noise():
    torch.manual_seed(0)
    model = FieldGatedModel(DLRM([3, 4, 5], embed_dim=2), 3).eval()
    with torch.no_grad():
        model.arch.copy_(torch.tensor([[0.0, 2.0], [1.0, 0.0], [0.0, 0.0]]))
    model.tau = 0.5
    model.generator = torch.Generator().manual_seed(1)
    weights = model.keep_weights(4, stochastic=False)
    expected = torch.softmax(model.arch / 0.5, dim=1)[:, 1]
    assert torch.allclose(weights, expected.expand(4, 3))
    x = torch.tensor([[1, 2, 3], [0, 1, 4]], dtype=torch.int32)
    assert torch.equal(model.score(x, stochastic=False), model.score(x, stochastic=False))
    # The training draw does use noise: two draws differ.
    assert not torch.equal(model.keep_weights(4, stochastic=True), model.keep_weights(4, stochastic=True))


def test_autofield_end_to_end_keeps_half(criteo_data):
    config = PipelineConfig.from_dict({"variant": "autofield", "train": {"max_epochs": 1},
                                       "baseline": {"autofield": {"search_epochs": 2, "val_every": 1}}})
    metrics = run_autofield(config, criteo_data)
    assert math.isfinite(metrics["test_auc"])
    assert math.isfinite(metrics["test_logloss"])
    selection = json.loads(metrics["selection"])
    assert selection["num_fields_kept"] == criteo_data.num_fields // 2
    # The kept fields are the ones with the largest keep log-odds.
    odds = selection["keep_log_odds"]
    kept = set(selection["fields_kept"])
    assert min(odds[f] for f in kept) >= max(odds[f] for f in odds if f not in kept)
    assert all(selection["dims_per_field"][f] == (16 if f in kept else 0) for f in odds)
