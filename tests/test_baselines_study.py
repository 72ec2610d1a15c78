"""The `paper-table2` study end to end through the ablation driver on the real Criteo 10k sample."""

from __future__ import annotations

import dataclasses
import json
import math

import pandas as pd

from ablations.driver import run_study
from ablations.study import Resources, load_study
from ablations.table import display_name

# Tiny epoch caps so that the eight trials fit the test budget; the study file itself sets none.
CAPS = {
    "train": {"max_epochs": 1},
    "search": {"pretrain_epochs": 1, "max_epochs": 1},
    "baseline": {
        "pep": {"search_epochs": 1},
        "autofield": {"search_epochs": 1},
        "optembed": {"supernet_epochs": 1, "iterations": 1, "mutation_num": 2, "crossover_num": 2,
                     "population": 4},
        "adafs-soft": {"pretrain_epochs": 1},
        "adafs-hard": {"pretrain_epochs": 1},
        "optfs": {"search_epochs": 2},
    },
}
BASELINES = ["pep", "autofield", "optembed", "adafs-soft", "adafs-hard", "optfs"]


def test_paper_table2_study_on_criteo(ray_session, prepared_criteo_dir, tmp_path):
    study = load_study("paper-table2").replace_datasets([str(prepared_criteo_dir)]).replace_seeds(1)
    # Half a CPU per trial lets four trials start at once on two cores: most of a small trial's
    # time is the start of its Ray Train run, not training.
    study = dataclasses.replace(study, resources=Resources(cpus_per_worker=0.5), max_concurrent_trials=4)
    assert set(BASELINES) | {"ihas", "base"} == set(study.methods)
    lines: list[str] = []
    outcome = run_study(study, tmp_path / "out", extra_overrides=CAPS, echo=lines.append)

    frame = pd.read_parquet(tmp_path / "out" / "results.parquet")
    assert outcome.failed == 0, frame[["method", "error"]].to_string()
    assert sorted(frame["method"]) == sorted(study.methods)
    for row in frame.to_dict(orient="records"):
        assert row["status"] == "ok", row
        for column in ("test_auc", "test_logloss", "valid_auc", "num_params", "inference_s"):
            assert math.isfinite(float(row[column])), (row["method"], column, row[column])
        assert 0.0 <= row["test_auc"] <= 1.0

    table = (tmp_path / "out" / "table.md").read_text()
    assert "## Methods x datasets" in table
    assert "## Published figures" in table
    for method in study.methods:
        assert f"| {display_name(method)} |" in table
    # iHAS on Criteo in the iHAS paper (CIKM 2023), Table 2: AUC 0.8043, logloss 0.4478.
    assert "0.8043" in table
    assert "0.4478" in table

    selection_md = (tmp_path / "out" / "selection.md").read_text()
    for method in BASELINES:
        assert f"## {display_name(method)} on" in selection_md
        selection = json.loads(frame.loc[frame["method"] == method, "selection"].iloc[0])
        assert selection["fields_kept"], method
