"""OptFS: the temperature schedule, the hard mask and resume on real data."""

from __future__ import annotations

import math

import pytest
import torch

from ihas.baselines.config import OptFSConfig
from ihas.baselines.optfs import OptFSModel, run_optfs, search_temperature
from ihas.config import PipelineConfig
from ihas.models.dlrm import DLRM
from ihas.reporting import LocalReporter


def test_temperature_rises_geometrically_to_final():
    epochs, final = 5, 200.0
    temps = [search_temperature(e, epochs, final) for e in range(epochs)]
    assert temps[0] == 1.0
    assert temps[-1] == pytest.approx(final)
    ratio = final ** (1 / (epochs - 1))
    for before, after in zip(temps, temps[1:]):
        assert after / before == pytest.approx(ratio)


def test_one_epoch_search_uses_final_temperature():
    assert search_temperature(0, 1, 200.0) == 200.0


def test_gates_start_at_one():
    torch.manual_seed(0)
    model = OptFSModel(DLRM([2, 3], embed_dim=2), OptFSConfig())
    # sigmoid(1 * 0.5) / sigmoid(0.5) = 1 for every feature value at the start.
    assert torch.allclose(model.gates(model.gate_logits), torch.ones(5, 1))
    assert model.regularizer().item() == pytest.approx(5.0)


def test_hard_mask_keeps_positive_logits():
    model = OptFSModel(DLRM([2, 3], embed_dim=2), OptFSConfig())
    with torch.no_grad():
        model.gate_logits.copy_(torch.tensor([[0.3], [-0.1], [0.0], [2.0], [-5.0]]))
    assert model.hard_mask().squeeze(1).tolist() == [True, False, False, True, False]


def _config(**optfs):
    return PipelineConfig.from_dict({"variant": "optfs", "train": {"max_epochs": 2},
                                     "baseline": {"optfs": {"search_epochs": 3, **optfs}}})


@pytest.fixture(scope="module")
def full_run(criteo_data, tmp_path_factory):
    """One uninterrupted OptFS run on the Criteo sample: (metrics, reported rows)."""
    reporter = LocalReporter(tmp_path_factory.mktemp("optfs-full"))
    return run_optfs(_config(), criteo_data, reporter), reporter.history


def test_temperature_reaches_final_in_last_search_epoch(full_run):
    metrics, history = full_run
    search = [row for row in history if row["stage"] == "optfs-search"]
    assert [row["epoch"] for row in search] == [0, 1, 2]
    assert search[0]["temperature"] == 1.0
    assert search[-1]["temperature"] == pytest.approx(200.0)
    assert math.isfinite(metrics["test_auc"])
    assert math.isfinite(metrics["test_logloss"])


class _Interrupt(Exception):
    pass


class _FailingReporter(LocalReporter):
    """Stores checkpoints like LocalReporter, then raises on report `fail_at`, as a killed process would stop."""

    def __init__(self, directory, fail_at: int) -> None:
        super().__init__(directory)
        self.calls = 0
        self.fail_at = fail_at

    def report(self, metrics, checkpoint=None):
        self.calls += 1
        if self.calls == self.fail_at:
            raise _Interrupt
        super().report(metrics, checkpoint)


def test_resume_matches_uninterrupted_run(criteo_data, full_run, tmp_path):
    expected, _ = full_run
    # Report 3 is the last search epoch's: the run stops before saving it, so the saved state is
    # that of epoch 1, which already contains the rewind weights (taken when epoch 1 started).
    with pytest.raises(_Interrupt):
        run_optfs(_config(), criteo_data, _FailingReporter(tmp_path / "cut", fail_at=3))
    resumed = LocalReporter(tmp_path / "cut")
    metrics = run_optfs(_config(), criteo_data, resumed)
    assert resumed.history[0]["stage"] == "optfs-search"
    assert resumed.history[0]["epoch"] == 2
    assert metrics["test_auc"] == expected["test_auc"]
    assert metrics["kept_features"] == expected["kept_features"]
