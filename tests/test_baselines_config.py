"""Baseline settings in PipelineConfig, the Table 2 reference figures of a study, and the Markdown outputs."""

from __future__ import annotations

import json

import pytest

from ablations.study import StudyError, load_study, study_from_dict
from ablations.table import render_selection, render_table
from ihas.baselines.config import AdaFSConfig, OptFSConfig, PEPConfig, baseline_config
from ihas.config import PipelineConfig, override


def test_defaults_are_the_published_ones():
    assert PEPConfig().threshold_init == -150.0
    assert PEPConfig().threshold_type == "feature_dim"
    optfs = OptFSConfig()
    assert (optfs.mask_init, optfs.final_temp, optfs.search_epochs, optfs.rewind_epoch, optfs.reg_lambda) == \
        (0.5, 200.0, 20, 1, 1e-8)
    assert AdaFSConfig().pretrain_epochs == 2
    assert AdaFSConfig().val_every == 10


def test_overrides_merge_per_method():
    config = override(PipelineConfig(), {"baseline": {"pep": {"budget_ratio": 0.3}}})
    config = override(config, {"baseline": {"pep": {"search_epochs": 2}, "optfs": {"search_epochs": 3}}})
    assert config.baseline == {"pep": {"budget_ratio": 0.3, "search_epochs": 2}, "optfs": {"search_epochs": 3}}
    settings = baseline_config(config.baseline, "pep")
    assert (settings.budget_ratio, settings.search_epochs, settings.threshold_init) == (0.3, 2, -150.0)
    assert PipelineConfig.from_dict(config.to_dict()) == config


def test_unknown_key_is_rejected_by_name():
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['bogus'\] in baseline.pep"):
        PipelineConfig.from_dict({"baseline": {"pep": {"bogus": 1}}})


def test_unknown_method_is_rejected():
    with pytest.raises(ValueError, match="unknown baseline 'pepp'"):
        PipelineConfig.from_dict({"baseline": {"pepp": {}}})


def test_invalid_value_is_rejected():
    with pytest.raises(ValueError, match="optfs.rewind_epoch must be in"):
        PipelineConfig.from_dict({"baseline": {"optfs": {"search_epochs": 2, "rewind_epoch": 2}}})


def test_paper_table2_study_loads_with_reference_figures():
    study = load_study("paper-table2")
    assert study.methods == ("pep", "autofield", "optembed", "adafs-soft", "adafs-hard", "optfs", "ihas", "base")
    assert study.reference.datasets["avazu"]["auc"]["adafs-soft"] == 0.7777
    assert study.reference.datasets["criteo"]["logloss"]["adafs-hard"] == 0.4560


def test_reference_rejects_unknown_metric():
    raw = {"name": "s", "methods": ["pep"], "datasets": {"d": {"path": "x"}},
           "reference": {"datasets": {"d": {"recall": {"pep": 0.5}}}}}
    with pytest.raises(StudyError, match=r"unknown metric\(s\) \['recall'\]"):
        study_from_dict(raw)


def _row(method, dataset, seed, auc, logloss, selection=None):
    row = {"method": method, "dataset": dataset, "seed": seed, "status": "ok", "test_auc": auc,
           "test_logloss": logloss, "num_params": 100, "inference_s": 0.1}
    if selection is not None:
        row["selection"] = json.dumps(selection)
    return row


def test_table_prints_grid_and_paper_figures():
    study = study_from_dict({"name": "t2", "methods": ["pep", "ihas"], "datasets": {"criteo": {"path": "x"}},
                             "reference": {"source": "Table 2",
                                           "datasets": {"criteo": {"auc": {"pep": 0.8006}, "logloss": {"pep": 0.4507}}}}})
    rows = [_row("pep", "criteo", 0, 0.70, 0.50), _row("pep", "criteo", 1, 0.72, 0.48),
            _row("ihas", "criteo", 0, 0.75, 0.45)]
    table = render_table(study, rows)
    # Mean and sample std over the two PEP seeds: 0.71 ± 0.0141, 0.49 ± 0.0141.
    assert "| PEP | 0.7100 ± 0.0141 | 0.4900 ± 0.0141 |" in table
    assert "| PEP | 0.8006 | 0.4507 |" in table  # the published figures
    assert "paper AUC | paper logloss" in table


def test_selection_note_lists_each_method():
    study = study_from_dict({"name": "t2", "methods": ["autofield", "base"], "datasets": {"d": {"path": "x"}}})
    rows = [_row("autofield", "d", 0, 0.7, 0.5, {"fields_kept": ["C1", "C3"], "num_fields_kept": 2}),
            _row("base", "d", 0, 0.7, 0.5)]
    note = render_selection(study, rows)
    assert "## AutoField on d, seed 0" in note
    assert "- fields_kept: C1, C3" in note
    assert "Base" not in note  # no selection reported
    assert render_selection(study, [_row("base", "d", 0, 0.7, 0.5)]) is None
