"""The console lines and result rows that `ProgressCallback` makes from a run's reports.

The trial is a real Ray Tune `Trial` (a stub, which needs no cluster) whose config has a real
`run_config` as the driver passes it, and the store is a real `ResultsStore` on disk. The reports are the ones
`ablations.trial.run_trials` sends: a "started" event, then a final report with the metrics.
"""

from __future__ import annotations

import pandas as pd
from ray.tune.experiment import Trial

from ablations.progress import ProgressCallback
from ablations.reporter import TRIAL_INDEX_KEY
from ablations.results import PARQUET_FILE, ResultsStore
from ablations.trial import (ATTEMPTS_KEY, DONE_KEY, EVENT_KEY, EVENT_STARTED, STATUS_KEY, TrialSpec, run_config)

REASON = "keeps no embedding dim (every mean mask bit < 0.5); it predicts one constant"


def finish_one_trial(tmp_path, metrics):
    spec = TrialSpec(method="ihas", dataset="movielens-100k", seed=0, pipeline={"variant": "ihas", "seed": 0})
    trial = Trial("__fake", config={"run": run_config([spec])}, trial_id="run0", stub=True)
    lines: list[str] = []
    callback = ProgressCallback(ResultsStore(tmp_path), datasets={}, max_retries=0, total=1, output=tmp_path,
                                echo=lines.append)
    callback.on_trial_start(0, [trial], trial)
    callback.on_trial_result(0, [trial], trial, {TRIAL_INDEX_KEY: 0, EVENT_KEY: EVENT_STARTED, ATTEMPTS_KEY: 1})
    final = {TRIAL_INDEX_KEY: 0, DONE_KEY: 1, STATUS_KEY: "ok", ATTEMPTS_KEY: 1, "test_auc": 0.75,
             "test_logloss": 0.55, **metrics}
    callback.on_trial_result(0, [trial], trial, final)
    return lines


def test_progress_cluster_reason_note(tmp_path):
    lines = finish_one_trial(tmp_path, {"cluster_0_reason": "", "cluster_1_reason": REASON})
    assert lines[0] == "[0/1] started   ihas on movielens-100k, seed 0"
    assert lines[1].startswith("[1/1] finished  ihas on movielens-100k, seed 0: test AUC 0.7500, logloss 0.5500")
    # Only the cluster with a reason gets a note; cluster 0's empty reason prints nothing.
    assert lines[2:] == [f"          note: ihas on movielens-100k, seed 0, cluster 1: {REASON}"]
    row = pd.read_parquet(tmp_path / PARQUET_FILE).iloc[0]
    assert row["cluster_1_reason"] == REASON
    assert row["status"] == "ok"


def test_progress_no_reason_no_note(tmp_path):
    lines = finish_one_trial(tmp_path, {"cluster_0_reason": ""})
    assert len(lines) == 2
    assert not any("note:" in line for line in lines)
