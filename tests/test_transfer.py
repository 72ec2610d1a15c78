"""Tests of the transfer study: fixed-dim cluster models, the transfer methods, and Table 3 through the runner."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from ablations.results import PARQUET_FILE
from ablations.study import load_study, study_from_dict
from ablations.transfer_table import render_transfer_table
from ihas.config import ModelConfig
from ihas.models.deepfm import DeepFM
from ihas.models.dlrm import DLRM, MixedDimDLRM
from ihas.models.fm import FM
from ihas.models.fixed_dims import FixedDimsModel, build_cluster_model, prefix_mask
from ihas.data.dataset import load_prepared
from ihas.serialize import load_routed_model
from ihas.stages.inference import evaluate_routed
from ihas.transfer import method_name, parse_method

SMALL = ModelConfig(embed_dim=2, mlp_dims=(4,))


def test_prefix_mask_hand_computed():
    assert prefix_mask([2, 0, 1], 3).tolist() == [1, 1, 0, 0, 0, 0, 1, 0, 0]


def test_fm_pairwise_uses_shared_leading_dims():
    model = FixedDimsModel("fm", (1, 1), [2, 1], SMALL)
    with torch.no_grad():
        model.backbone.embedding.table.weight.copy_(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
    # Field 1 keeps its first dim only: <[1, 2], [3, 0]> = 3; the linear part starts at 0.
    logit = model(torch.tensor([[0, 0]], dtype=torch.int32))
    assert logit.tolist() == [3.0]


def test_masked_dims_do_not_change_logits():
    torch.manual_seed(0)
    model = FixedDimsModel("deepfm", (3, 2), [2, 1], SMALL).eval()
    x = torch.tensor([[0, 1], [2, 0]], dtype=torch.int32)
    before = model(x)
    with torch.no_grad():
        weight = model.backbone.embedding.table.weight
        weight[3:, 1] += 5.0  # field 1's second dim, which dims [2, 1] drops
    torch.testing.assert_close(model(x), before)


def test_kept_parameter_counts_hand_computed():
    deepfm = FixedDimsModel("deepfm", (3, 2), [2, 1], SMALL)
    # Full DeepFM: table 5 x 2 = 10, linear 5 + bias 1 = 6, MLP Linear(4, 4) = 20 and Linear(4, 1) = 5.
    assert sum(p.numel() for p in deepfm.parameters()) == 41
    # Hidden: field 1's 2 rows x 1 dropped dim = 2, and that dim's column of Linear(4, 4) = 4.
    assert deepfm.num_parameters() == 35
    fm = FixedDimsModel("fm", (3, 2), [2, 1], SMALL)
    assert fm.num_parameters() == 10 + 6 - 2


def test_fixed_dims_rejects_mask_and_bad_dims():
    model = FixedDimsModel("wide_deep", (3, 2), [2, 1], SMALL)
    with pytest.raises(ValueError, match="takes no mask"):
        model(torch.zeros((1, 2), dtype=torch.int32), mask=torch.ones(4))
    with pytest.raises(ValueError, match=r"in \[0, 2\]"):
        FixedDimsModel("fm", (3, 2), [3, 1], SMALL)
    with pytest.raises(ValueError, match="one dim count per field"):
        FixedDimsModel("fm", (3, 2), [1], SMALL)
    with pytest.raises(ValueError, match="unknown backbone"):
        build_cluster_model("xdeepfm", (3, 2), [1, 1], SMALL)


def test_build_cluster_model_types():
    assert isinstance(build_cluster_model("dlrm", (3, 2), [2, 1], SMALL), MixedDimDLRM)
    model = build_cluster_model("deepfm", (3, 2), [2, 1], SMALL)
    assert isinstance(model, FixedDimsModel)
    assert isinstance(model.backbone, DeepFM)


def test_transfer_method_names():
    assert method_name("original", "fm") == "fm"
    assert method_name("adafs-soft", "wide_deep") == "adafs-soft-wide_deep"
    assert parse_method("ihas-deepfm") == ("ihas", "deepfm")
    assert parse_method("ihas") is None
    with pytest.raises(ValueError, match="unknown transfer backbone"):
        method_name("ihas", "dlrm")


def test_paper_table3_study_loads():
    study = load_study("paper-table3")
    assert len(study.methods) == 9
    assert {parse_method(m) for m in study.methods} == {
        (family, backbone) for family in ("original", "adafs-soft", "ihas")
        for backbone in ("fm", "wide_deep", "deepfm")}
    assert set(study.reference.datasets["avazu"]) == {"auc", "logloss"}


def test_transfer_table_hand_computed():
    study = study_from_dict({"name": "t3", "methods": ["fm", "ihas-fm"], "seeds": [0, 1],
                             "datasets": {"d": {"path": "unused"}},
                             "reference": {"datasets": {"d": {"auc": {"ihas-fm": 0.7826}}}}})
    rows = [{"method": "fm", "dataset": "d", "seed": 0, "status": "ok", "test_auc": 0.70, "test_logloss": 0.5},
            {"method": "fm", "dataset": "d", "seed": 1, "status": "ok", "test_auc": 0.72, "test_logloss": 0.5},
            {"method": "ihas-fm", "dataset": "d", "seed": 0, "status": "failed"}]
    text = render_transfer_table(study, rows)
    lines = text.splitlines()
    # Mean 0.71, sample std sqrt(((0.01)^2 * 2) / 1) = 0.0141; AdaFS-soft is not in the study.
    assert "| FM | AUC | 0.7100 ± 0.0141 | not run | n/a |  |  | 0.7826 |" in lines
    assert "|  | Logloss | 0.5000 ± 0.0000 | not run | n/a |  |  |  |" in lines
    assert "W&D" not in text


def test_transfer_table_absent_without_transfer_methods():
    study = study_from_dict({"name": "t4", "methods": ["base"], "datasets": {"d": {"path": "unused"}}})
    assert render_transfer_table(study, []) is None


def test_driver_runs_every_transfer_row(transfer_study_run):
    outcome, lines = transfer_study_run
    assert outcome.failed == 0, "\n".join(lines)
    frame = pd.read_parquet(outcome.output_dir / PARQUET_FILE).set_index("method")
    assert sorted(frame.index) == ["adafs-soft-fm", "fm", "ihas-3", "ihas-fm"]
    for method in frame.index:
        assert frame.loc[method, "status"] == "ok"
        assert 0.0 < frame.loc[method, "test_auc"] < 1.0
        assert math.isfinite(frame.loc[method, "test_logloss"])
        assert frame.loc[method, "num_params"] > 0


def test_driver_table_has_transfer_grid(transfer_study_run):
    outcome, _ = transfer_study_run
    table = (outcome.output_dir / "table.md").read_text()
    grid = table.split("## Transfer of the searched gates to other backbones: criteo-10k")[1]
    auc_line = next(line for line in grid.splitlines() if line.startswith("| FM | AUC |"))
    cells = [cell.strip() for cell in auc_line.strip("|").split("|")]
    assert len(cells) == 5
    for cell in cells[2:]:
        assert 0.0 < float(cell.split()[0]) < 1.0


def test_transferred_model_reloads(transfer_study_run, criteo_10k_prepared):
    outcome, _ = transfer_study_run
    data = load_prepared(criteo_10k_prepared)
    directory = outcome.output_dir / "models" / "ihas-fm-criteo-10k-seed0"
    routed = load_routed_model(directory)
    # The gates were searched on the DLRM; each cluster with its own model retrained an FM.
    assert isinstance(routed.base, DLRM)
    assert len(routed.cluster_models) >= 1
    for model in routed.cluster_models.values():
        assert isinstance(model, FixedDimsModel)
        assert isinstance(model.backbone, FM)
    # The reloaded model scores the test split as the trial did.
    metrics = evaluate_routed(routed, data.test, batch_size=4096)
    frame = pd.read_parquet(outcome.output_dir / PARQUET_FILE).set_index("method")
    assert metrics["test_auc"] == pytest.approx(frame.loc["ihas-fm", "test_auc"], abs=1e-9)
    assert metrics["num_params"] == frame.loc["ihas-fm", "num_params"]
