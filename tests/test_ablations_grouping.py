"""Packing a study's trials into Ray Train runs, and the per-trial checkpoints inside one run.

Expected values follow the definitions in `ablations.grouping` (snake order) and
`ablations.reporter.TrialRunReporter` (a restarted run skips finished trials and resumes the
interrupted one). The run's own reporter here is `ihas.reporting.LocalReporter` on a real
directory, which has the same two calls as the Ray Train reporter.
"""

from __future__ import annotations

import pytest

from ablations.grouping import count_runs, pack_trials
from ablations.reporter import TRIAL_INDEX_KEY, TrialRunReporter
from ihas.reporting import LocalReporter


@pytest.mark.parametrize("trials, slots, per_run, expected", [
    (18, 2, 0, 2),   # 0: one run per parallel slot
    (1, 8, 0, 1),    # never more runs than trials
    (18, 2, 1, 18),  # 1: every trial its own run
    (18, 2, 4, 5),   # at most 4 per run: ceil(18 / 4)
    (0, 2, 0, 0),
])
def test_count_runs(trials, slots, per_run, expected):
    assert count_runs(trials, slots, per_run) == expected


def test_count_runs_on_cluster():
    # On a cluster, 0 means one run per trial, so Tune balances the slots; explicit values stay.
    assert count_runs(18, 2, 0, embedded=False) == 18
    assert count_runs(18, 2, 4, embedded=False) == 5


@pytest.mark.parametrize("trials, slots, per_run, message", [
    (3, 0, 0, "slots must be >= 1"),
    (3, 2, -1, "trials_per_run must be >= 0"),
    (-1, 2, 0, "num_trials must be >= 0"),
])
def test_count_runs_rejects_bad_values(trials, slots, per_run, message):
    with pytest.raises(ValueError, match=message):
        count_runs(trials, slots, per_run)


def test_pack_trials_snake_order():
    # Positions 0-2 go to runs 0, 1, 2; positions 3-5 come back 2, 1, 0; position 6 goes to run 0.
    assert pack_trials(list(range(7)), 3) == [[0, 5, 6], [1, 4], [2, 3]]


def test_pack_trials_spreads_seeds_of_a_method():
    # Three seeds of each of two methods on two runs: every run gets three trials, and each
    # method's seeds are split over both runs.
    trials = [(method, seed) for method in ("base", "ihas") for seed in range(3)]
    runs = pack_trials(trials, 2)
    assert runs == [[("base", 0), ("ihas", 0), ("ihas", 1)], [("base", 1), ("base", 2), ("ihas", 2)]]


def test_pack_trials_more_runs_than_trials():
    assert pack_trials(["a", "b"], 5) == [["a"], ["b"]]


def test_pack_trials_rejects_zero_runs():
    with pytest.raises(ValueError, match="runs must be >= 1"):
        pack_trials(["a"], 0)


def test_restarted_run_skips_finished_and_resumes_interrupted(tmp_path):
    first = TrialRunReporter(LocalReporter(tmp_path))
    first.begin(0)
    first.report({"epoch": 0}, {"stage": "train", "epoch": 0})
    first.finish({"test_auc": 0.7})
    first.begin(1)
    first.report({"epoch": 0}, {"stage": "search", "epoch": 3})
    # The run dies here, inside trial 1. A restarted run reads the run's checkpoint back.
    restarted = TrialRunReporter(LocalReporter(tmp_path))
    assert restarted.is_finished(0)
    assert not restarted.is_finished(1)
    restarted.begin(1)
    assert restarted.latest_checkpoint() == {"stage": "search", "epoch": 3}
    restarted.finish({"test_auc": 0.6})
    restarted.begin(2)
    assert restarted.latest_checkpoint() is None


def test_reports_carry_trial_index_and_retry_forgets_state(tmp_path):
    inner = LocalReporter(tmp_path)
    reporter = TrialRunReporter(inner)
    reporter.begin(2)
    reporter.report({"epoch": 0}, {"stage": "search", "epoch": 0})
    assert inner.history[-1] == {"epoch": 0, TRIAL_INDEX_KEY: 2}
    assert reporter.latest_checkpoint() == {"stage": "search", "epoch": 0}
    reporter.restart_trial()
    assert reporter.latest_checkpoint() is None


def test_throttled_reports_fold_until_the_final_report(tmp_path):
    inner = LocalReporter(tmp_path)
    reporter = TrialRunReporter(inner, min_interval_s=3600.0)
    reporter.begin(0)
    reporter.event({"trial_event": "started"})
    reporter.report({"epoch": 0}, {"stage": "train", "epoch": 0})
    reporter.report({"epoch": 1}, {"stage": "train", "epoch": 1})
    # Within the hour after the event, both epoch reports are folded: nothing new went out, and
    # the run's checkpoint on disk is still absent.
    assert inner.history == [{"trial_event": "started", TRIAL_INDEX_KEY: 0}]
    assert reporter.reports_folded == 2
    assert inner.latest_checkpoint() is None
    # The trial still resumes from its newest state inside this process.
    assert reporter.latest_checkpoint() == {"stage": "train", "epoch": 1}
    reporter.finish({"test_auc": 0.7})
    assert inner.history[-1] == {"test_auc": 0.7, TRIAL_INDEX_KEY: 0}
    assert inner.latest_checkpoint() == {"finished": [0], "current": -1, "state": None, "attempts": {}}


def test_unthrottled_reports_carry_the_run_checkpoint(tmp_path):
    inner = LocalReporter(tmp_path)
    reporter = TrialRunReporter(inner, min_interval_s=0.0)
    reporter.begin(1)
    reporter.report({"epoch": 0}, {"stage": "train", "epoch": 0})
    reporter.report({"epoch": 1})
    assert [h["epoch"] for h in inner.history] == [0, 1]
    assert reporter.reports_folded == 0
    assert LocalReporter(tmp_path).latest_checkpoint() == {
        "finished": [], "current": 1, "state": {"stage": "train", "epoch": 0}, "attempts": {}}


def test_negative_report_interval_rejected(tmp_path):
    with pytest.raises(ValueError, match="min_interval_s must be >= 0"):
        TrialRunReporter(LocalReporter(tmp_path), min_interval_s=-1.0)


def test_attempts_and_retry_reset_survive_restart(tmp_path):
    reporter = TrialRunReporter(LocalReporter(tmp_path))
    reporter.begin(0)
    assert reporter.start_attempt() == 1
    reporter.event({"trial_event": "started"})
    reporter.report({"epoch": 0}, {"stage": "search", "epoch": 2})
    # The attempt fails and is retried in-process: the retry event saves the run checkpoint
    # without the failed attempt's state.
    reporter.restart_trial()
    reporter.event({"trial_event": "retrying"})
    assert reporter.start_attempt() == 2
    reporter.event({"trial_event": "started"})
    # The worker dies here. The restarted run counts on from attempt 2 and starts the trial afresh.
    restarted = TrialRunReporter(LocalReporter(tmp_path))
    restarted.begin(0)
    assert restarted.latest_checkpoint() is None
    assert restarted.start_attempt() == 3
