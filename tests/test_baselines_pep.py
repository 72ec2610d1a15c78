"""PEP: the soft threshold, the budget stop and the lottery-ticket retraining on real data."""

from __future__ import annotations

import math

import pytest
import torch

from ihas.baselines.common import MaskedModel
from ihas.baselines.config import PEPConfig
from ihas.baselines.pep import PEPModel, _BudgetReached, _BudgetWatch, run_pep, soft_threshold
from ihas.config import PipelineConfig
from ihas.models.dlrm import DLRM
from ihas.reporting import LocalReporter


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def test_soft_threshold_zeroes_entries_below_it():
    values = torch.tensor([0.5, -0.5, 0.1, -0.1, 0.3, 0.0])
    s = torch.full_like(values, _logit(0.2))  # threshold sigmoid(s) = 0.2 for every entry
    out = soft_threshold(values, s)
    # sign(v) * max(|v| - 0.2, 0): 0.5 -> 0.3, -0.5 -> -0.3, |0.1| < 0.2 -> 0, 0.3 -> 0.1, 0 -> 0.
    expected = torch.tensor([0.3, -0.3, 0.0, 0.0, 0.1, 0.0])
    assert torch.allclose(out, expected, atol=1e-6)
    assert torch.equal(out == 0, values.abs() <= 0.2)


def test_soft_threshold_per_entry_thresholds():
    values = torch.tensor([[0.4, 0.4], [-0.4, -0.4]])
    s = torch.tensor([[_logit(0.5), _logit(0.1)], [_logit(0.1), _logit(0.5)]])
    out = soft_threshold(values, s)
    # 0.4 is below threshold 0.5 (zeroed) and above 0.1 (0.4 - 0.1 = 0.3, sign kept).
    expected = torch.tensor([[0.0, 0.3], [-0.3, 0.0]])
    assert torch.allclose(out, expected, atol=1e-6)


def test_soft_threshold_gradient_reaches_threshold():
    values = torch.tensor([0.5, 0.05])
    s = torch.full((2,), 0.0, requires_grad=True)  # threshold sigmoid(0) = 0.5
    soft_threshold(values, s).sum().backward()
    # Both entries are <= 0.5, so both outputs are 0 and no gradient flows.
    assert torch.equal(s.grad, torch.zeros(2))
    s2 = torch.full((2,), _logit(0.1), requires_grad=True)
    soft_threshold(values, s2).sum().backward()
    # Kept entry: d/ds (|v| - sigmoid(s)) = -sigmoid'(s) = -0.1 * 0.9; the pruned entry gets 0.
    assert s2.grad[0].item() == pytest.approx(-0.09, abs=1e-6)
    assert s2.grad[1].item() == 0.0


def test_kept_mask_counts_entries_above_threshold():
    torch.manual_seed(0)
    model = PEPModel(DLRM([3, 4], embed_dim=2), PEPConfig(threshold_init=_logit(0.005)))
    table = model.backbone.embedding.table.weight
    assert torch.equal(model.kept_mask(), table.abs() > 0.005)


def test_budget_watch_stops_at_budget():
    torch.manual_seed(0)
    model = PEPModel(DLRM([3, 4], embed_dim=2), PEPConfig())
    total = model.threshold.numel()
    watch = _BudgetWatch(model, budget=total - 1, check_every=1)
    watch.on_epoch_start(0)  # nothing pruned yet: all entries kept, above the budget
    with torch.no_grad():
        model.threshold[0, 0] = 50.0  # threshold ~1 prunes that entry
    with pytest.raises(_BudgetReached):
        watch.after_step(0)
    assert int(watch.mask.sum()) == total - 1
    assert not bool(watch.mask[0, 0])


def test_pep_reaches_budget_and_retrains_masked(criteo_data):
    # A threshold init near the embedding scale makes the budget reachable in one small epoch.
    config = PipelineConfig.from_dict({
        "variant": "pep", "train": {"max_epochs": 2},
        "baseline": {"pep": {"threshold_init": -4.0, "budget_ratio": 0.9, "search_epochs": 3, "check_every": 1}}})
    reporter = LocalReporter()
    metrics = run_pep(config, criteo_data, reporter)
    assert metrics["budget_reached"] == 1
    total = sum(criteo_data.field_dims) * 16
    assert metrics["kept_entries"] <= int(0.9 * total)
    assert math.isfinite(metrics["test_auc"])
    assert math.isfinite(metrics["test_logloss"])
    # With a check after every batch the budget is met inside the first search epoch, so the search
    # reports only its end, then retraining reports each epoch.
    stages = [row["stage"] for row in reporter.history]
    assert stages[0] == "pep-search-done"
    assert stages.count("pep-retrain") == 2
    assert stages[-1] == "test"


def test_masked_model_folds_into_backbone():
    torch.manual_seed(0)
    mask = torch.rand(7, 4) > 0.5
    masked = MaskedModel(DLRM([3, 4], embed_dim=4), mask)
    x = torch.tensor([[0, 1], [2, 3], [1, 0]], dtype=torch.int32)
    folded = masked.folded()
    assert torch.allclose(folded(x), masked(x))
    # Pruned entries are zeros of the folded table; the masked model's own table is unchanged.
    assert torch.count_nonzero(folded.embedding.table.weight[~mask]) == 0
    assert torch.count_nonzero(masked.backbone.embedding.table.weight[~mask]) > 0


def test_masked_entries_get_no_gradient():
    torch.manual_seed(0)
    mask = torch.zeros(7, 4, dtype=torch.bool)
    mask[:, :2] = True
    masked = MaskedModel(DLRM([3, 4], embed_dim=4), mask)
    x = torch.tensor([[0, 1], [2, 3]], dtype=torch.int32)
    masked(x).sum().backward()
    grad = masked.backbone.embedding.table.weight.grad
    assert torch.count_nonzero(grad[:, 2:]) == 0
    assert torch.count_nonzero(grad[:, :2]) > 0
