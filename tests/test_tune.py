"""The tuning runner: search space, study files, trial states recorded in Optuna, ASHA's view, outputs,
`--params-from`, and an interrupted study on real local Ray with the real Criteo 10k sample.

Expected values come from the definitions. A trial is COMPLETE only with its final report and a
finite validation AUC. ASHA with reduction factor 2 stops a trial below the median of its rung.
The best trial is the COMPLETE one with the highest validation AUC.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.trial import TrialState

from ablations.study import StudyError, load_study
from tune.params import apply_params, load_best_params
from tune.space import PARAM_NAMES, IhasSearchSpace, SearchRanges, to_overrides
from tune.study import TuneStudyError, load_tune_study, tune_study_from_dict
from tune.summary import best_trial, param_importances, plot_history, state_counts, write_trials_csv

REPO_ROOT = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DISTRIBUTIONS = {"reg_lambda": FloatDistribution(1e-3, 1.0, log=True), "tau": FloatDistribution(0.01, 1.0, log=True),
                 "num_clusters": IntDistribution(2, 8), "bins": IntDistribution(5, 50)}

OK_PARAMS = {"reg_lambda": 0.2, "tau": 0.3, "num_clusters": 3, "bins": 12}


def minimal_study(**changes):
    raw = {"name": "t", "datasets": {"d": {"path": "/nonexistent"}}, **changes}
    return tune_study_from_dict(raw)


# --- space and study files --------------------------------------------------------------------


def test_space_overrides_by_section():
    assert to_overrides(OK_PARAMS) == {"search": {"reg_lambda": 0.2, "tau": 0.3, "bins": 12},
                                       "cluster": {"num_clusters": 3}}
    with pytest.raises(ValueError, match="unknown tuned parameter"):
        to_overrides({"lr": 0.1})


def test_space_draws_within_ranges():
    ranges = SearchRanges(reg_lambda=(0.01, 0.02), tau=(0.5, 0.5), num_clusters=(4, 4), bins=(7, 9))
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=3))
    space = IhasSearchSpace(ranges)
    for _ in range(20):
        trial = study.ask()
        space(trial)
        assert 0.01 <= trial.params["reg_lambda"] <= 0.02
        assert trial.params["tau"] == 0.5
        assert trial.params["num_clusters"] == 4
        assert trial.params["bins"] in (7, 8, 9)
        study.tell(trial, 0.5)
    assert study.trials[0].distributions["reg_lambda"].log


@pytest.mark.parametrize("raw, message", [
    ({"tau": [0.0, 1.0]}, "space.tau"),
    ({"reg_lambda": [1.0, 0.1]}, "space.reg_lambda"),
    ({"bins": [2, 10]}, "space.bins"),
    ({"num_clusters": [1.5, 4]}, "space.num_clusters"),
    ({"gate_lr": [0.1, 1.0]}, "unknown key"),
    ({"tau": 0.5}, "must be a list"),
])
def test_ranges_reject_invalid(raw, message):
    with pytest.raises(ValueError, match=message):
        SearchRanges.from_dict(raw)


@pytest.mark.parametrize("changes, message", [
    ({"datasets": {"a": {"path": "x"}, "b": {"path": "y"}}}, "exactly one"),
    ({"method": "base"}, "cannot be tuned"),
    ({"overrides": {"search": {"tau": 0.5}}}, "searched by this study"),
    ({"overrides": {"cluster": {"num_clusters": 3}}}, "searched by this study"),
    ({"overrides": {"search": {"max_epochs": 2}}, "asha": {"grace_period": 3}}, "exceeds the search epochs"),
    ({"num_samples": 0}, "num_samples"),
    ({"final_seeds": [0, 0]}, "twice"),
    ({"trials": 3}, "unknown tuning study key"),
    ({"asha": {"brackets": 2}}, r"unknown key\(s\) \['brackets'\] in \[asha\]"),
])
def test_study_rejects_invalid(changes, message):
    with pytest.raises(TuneStudyError, match=message):
        minimal_study(**changes)


def test_shipped_studies_load():
    movielens = load_tune_study("ihas-movielens")
    criteo = load_tune_study("ihas-criteo")
    assert movielens.scheduler_max_t() == 6  # search.max_epochs of its overrides
    assert criteo.resources.gpus_per_worker == 0.25
    assert criteo.pipeline_config(0, OK_PARAMS).cluster.num_clusters == 3
    with pytest.raises(TuneStudyError, match="unknown tuning study"):
        load_tune_study("no-such-study")


# --- searcher: what Optuna records ------------------------------------------------------------


def make_searcher(storage=None, seed=0):
    from tune.searcher import PruneAwareOptunaSearch

    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=10)
    return PruneAwareOptunaSearch(IhasSearchSpace(), metric="valid_auc", mode="max", sampler=sampler,
                                  study_name="s", storage=storage)


def search_epoch(epoch, auc):
    return {"stage": "search", "epoch": epoch, "valid_auc": auc}


def final(auc):
    return {"stage": "test", "epoch": 0, "valid_auc": auc, "test_auc": 0.99, "trial_done": 1}


def test_searcher_states_and_best():
    from tune.searcher import END_ATTR

    searcher = make_searcher()
    for trial_id in ("done", "nan", "inf", "cut", "error"):
        searcher.suggest(trial_id)
    searcher.on_trial_result("done", {"stage": "pretrain", "epoch": 0, "valid_auc": 0.55})
    searcher.on_trial_result("done", search_epoch(0, 0.60))
    searcher.on_trial_result("done", search_epoch(1, 0.65))
    searcher.on_trial_complete("done", final(0.70))
    searcher.on_trial_complete("nan", final(math.nan))
    searcher.on_trial_complete("inf", final(math.inf))
    searcher.on_trial_result("cut", search_epoch(0, 0.90))
    # The scheduler stopped it: its last result is a search epoch, not the final report.
    searcher.on_trial_complete("cut", search_epoch(0, 0.90))
    searcher.on_trial_complete("error", None, error=True)

    trials = {t.user_attrs["tune_trial_id"]: t for t in searcher.study.get_trials()}
    assert trials["done"].state == TrialState.COMPLETE
    assert trials["done"].value == 0.70
    assert trials["done"].intermediate_values == {0: 0.60, 1: 0.65}
    assert trials["nan"].state == TrialState.FAIL
    assert trials["nan"].user_attrs[END_ATTR] == "non-finite objective"
    assert trials["inf"].state == TrialState.FAIL
    assert trials["cut"].state == TrialState.PRUNED
    assert trials["cut"].user_attrs[END_ATTR] == "scheduler"
    assert trials["error"].state == TrialState.FAIL
    assert trials["error"].user_attrs[END_ATTR] == "error"
    best = best_trial(searcher.study)
    assert best.user_attrs["tune_trial_id"] == "done"


def test_best_trial_is_none_without_complete():
    searcher = make_searcher()
    searcher.suggest("nan")
    searcher.on_trial_complete("nan", final(math.nan))
    assert best_trial(searcher.study) is None


def test_searcher_restore_continues_sampler(tmp_path):
    """A restored searcher draws what the interrupted one drew next, and fails the orphaned trial."""
    from tune.searcher import END_ATTR, INTERRUPTED, counted_trials

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    first = make_searcher(optuna.storages.RDBStorage(storage), seed=7)
    first.suggest("a")
    first.suggest("b")
    first.on_trial_complete("a", final(0.6))
    checkpoint = tmp_path / "searcher.pkl"
    first.save(str(checkpoint))
    # Asked after the checkpoint: the interrupted run's next trial, never completed.
    next_params = first.suggest("c")

    restored = make_searcher(optuna.storages.RDBStorage(storage), seed=999)
    restored.restore(str(checkpoint))
    assert restored.suggest("c2") == next_params
    restored.on_trial_complete("b", final(0.7))

    study = optuna.load_study(study_name="s", storage=storage)
    by_id = {t.user_attrs["tune_trial_id"]: t for t in study.get_trials()}
    assert by_id["a"].state == TrialState.COMPLETE
    assert by_id["b"].state == TrialState.COMPLETE
    assert by_id["b"].value == 0.7
    assert by_id["c"].state == TrialState.FAIL
    assert by_id["c"].user_attrs[END_ATTR] == INTERRUPTED
    assert by_id["c2"].state == TrialState.RUNNING
    assert sorted(t.user_attrs["tune_trial_id"] for t in counted_trials(study)) == ["a", "b", "c2"]
    assert state_counts(study) == {"COMPLETE": 2, "PRUNED": 0, "FAIL": 0, "INTERRUPTED": 1, "RUNNING": 1,
                                   "WAITING": 0}


# --- scheduler ----------------------------------------------------------------------------------


def test_asha_acts_on_search_epochs_only():
    from ray.tune.experiment import Trial
    from ray.tune.schedulers import TrialScheduler

    from tune.scheduler import SearchStageASHA

    scheduler = SearchStageASHA(max_t=3, grace_period=1, reduction_factor=2)
    trials = {name: Trial("fn", trial_id=name, stub=True) for name in ("a", "b", "c")}
    for trial in trials.values():
        scheduler.on_trial_add(None, trial)

    def decide(name, result):
        return scheduler.on_trial_result(None, trials[name], result)

    assert decide("b", {"stage": "pretrain", "epoch": 0, "valid_auc": 0.1}) == TrialScheduler.CONTINUE
    assert decide("a", search_epoch(0, 0.7)) == TrialScheduler.CONTINUE
    # Rung 1 contains {a: 0.7}; its cutoff is the median 0.7, and 0.5 is below it.
    assert decide("b", search_epoch(0, 0.5)) == TrialScheduler.STOP
    assert decide("c", search_epoch(0, 0.8)) == TrialScheduler.CONTINUE
    # Reaching max_t search epochs does not stop a trial: it still has to cluster and retrain.
    assert decide("a", search_epoch(2, 0.75)) == TrialScheduler.CONTINUE
    assert decide("a", {"stage": "retrain", "epoch": 0, "valid_auc": 0.2}) == TrialScheduler.CONTINUE


# --- summary files ------------------------------------------------------------------------------


def add_trial(study, state, value, params, intermediate=None):
    study.add_trial(optuna.trial.create_trial(state=state, value=value, params=params,
                                              distributions=DISTRIBUTIONS, intermediate_values=intermediate))


def test_importance_and_plot(tmp_path):
    study = optuna.create_study(direction="maximize")
    add_trial(study, TrialState.COMPLETE, 0.70, OK_PARAMS)
    assert param_importances(study)["status"] == "unavailable"

    add_trial(study, TrialState.COMPLETE, 0.60, {**OK_PARAMS, "tau": 0.05, "bins": 30})
    add_trial(study, TrialState.COMPLETE, 0.65, {**OK_PARAMS, "reg_lambda": 0.01, "num_clusters": 6})
    add_trial(study, TrialState.PRUNED, None, {**OK_PARAMS, "tau": 0.9}, intermediate={0: 0.55})
    add_trial(study, TrialState.FAIL, None, {**OK_PARAMS, "bins": 40})
    importance = param_importances(study)
    assert importance["status"] == "ok"
    assert sorted(importance["importances"]) == sorted(PARAM_NAMES)
    assert math.isclose(sum(importance["importances"].values()), 1.0, rel_tol=1e-6)

    plot_history(study, tmp_path / "history.png", title="t")
    assert (tmp_path / "history.png").read_bytes()[:8] == PNG_MAGIC
    write_trials_csv(study, tmp_path / "trials.csv")
    table = pd.read_csv(tmp_path / "trials.csv")
    assert list(table["state"]) == ["COMPLETE", "COMPLETE", "COMPLETE", "PRUNED", "FAIL"]
    assert table.loc[3, "last_search_epoch_auc"] == 0.55


def test_final_summary_mean_std():
    from tune.driver import final_summary

    rows = [{"seed": 0, "status": "ok", "test_auc": 0.70, "test_logloss": 0.40, "valid_auc": 0.71},
            {"seed": 1, "status": "ok", "test_auc": 0.74, "test_logloss": 0.44, "valid_auc": 0.72}]
    summary = final_summary(rows, (0, 1, 2))
    assert math.isclose(summary["test_auc_mean"], 0.72)
    # Sample std of {0.70, 0.74}: sqrt((0.02^2 + 0.02^2) / 1).
    assert math.isclose(summary["test_auc_std"], math.sqrt(0.0008))
    assert summary["per_seed"]["2"]["status"] == "missing"


# --- --params-from --------------------------------------------------------------------------------


def write_best(path: Path, **changes) -> Path:
    payload = {"status": "ok", "params": dict(OK_PARAMS), "valid_auc": 0.7, **changes}
    path.write_text(json.dumps(payload))
    return path


ABLATION_STUDY = """
name = "abl"
methods = ["base", "ihas-2", "ihas-3", "ihas-4", "ihas"]
seeds = [0]
[datasets.d]
path = "/nonexistent"
[overrides.search]
max_epochs = 6
[method_overrides.ihas.search]
pretrain_epochs = 1
"""


def test_params_from_sets_ihas_methods_only(tmp_path):
    (tmp_path / "abl.toml").write_text(ABLATION_STUDY)
    study = load_study(tmp_path / "abl.toml")
    study = apply_params(study, load_best_params(write_best(tmp_path / "best.json")))
    for method in ("ihas", "ihas-2", "ihas-3", "ihas-4"):
        config = study.pipeline_config(method, 0)
        assert config.search.reg_lambda == 0.2
        assert config.search.tau == 0.3
        assert config.search.bins == 12
        assert config.cluster.num_clusters == 3
        # The study-wide overrides still apply.
        assert config.search.max_epochs == 6
    # The method's own override of another setting is kept.
    assert study.pipeline_config("ihas", 0).search.pretrain_epochs == 1
    base = study.pipeline_config("base", 0)
    assert base.search.tau == 0.1
    assert base.cluster.num_clusters == 2


@pytest.mark.parametrize("changes, message", [
    ({"status": "no complete trial with a finite validation AUC"}, "contains no best config"),
    ({"params": {"tau": 0.3}}, "must list params"),
    ({"params": {**OK_PARAMS, "tau": "fast"}}, "params.tau must be a finite number"),
])
def test_params_from_rejects_unusable(tmp_path, changes, message):
    with pytest.raises(StudyError, match=message):
        load_best_params(write_best(tmp_path / "best.json", **changes))


def test_ablations_cli_params_from_error(tmp_path, capsys):
    from ablations.__main__ import main

    code = main(["--study", "paper-table4", "--params-from", str(tmp_path / "missing.json")])
    assert code == 2
    assert "missing.json not found" in capsys.readouterr().err


# --- end to end on local Ray: interrupted, then continued -----------------------------------------

TINY_STUDY = """
name = "tiny"
num_samples = 3
max_concurrent_trials = 2
# One retry: on a loaded 2-core machine a Train worker can miss Ray Train's 60 s start timeout.
max_retries = 1
startup_trials = 2
final_seeds = [0]
[datasets.criteo-10k]
path = "{data}"
[asha]
grace_period = 1
reduction_factor = 2
[space]
num_clusters = [2, 3]
[overrides.train]
max_epochs = 1
batch_size = 1024
[overrides.search]
pretrain_epochs = 0
max_epochs = 3
val_every = 1
"""


def finished_in_db(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=5) as connection:
            return connection.execute(
                "SELECT COUNT(*) FROM trials WHERE state IN ('COMPLETE', 'PRUNED', 'FAIL')").fetchone()[0]
    except sqlite3.OperationalError:  # the driver has not created the tables yet
        return 0


def frozen(trial):
    return (trial.number, trial.state, trial.value, dict(trial.params))


def test_interrupted_study_resumes_to_budget(ray_session, criteo_10k_prepared, tmp_path):
    import ray

    from tune.driver import run_tuning
    from tune.searcher import END_ATTR

    study_file = tmp_path / "tiny.toml"
    study_file.write_text(TINY_STUDY.format(data=criteo_10k_prepared))
    output = tmp_path / "out"
    db = output / "optuna.db"
    env = {**os.environ, "RAY_AUTH_MODE": "token", "PYTHONPATH": str(REPO_ROOT)}
    command = [sys.executable, "-m", "tune", "--study", str(study_file), "--output", str(output),
               "--address", ray.get_runtime_context().gcs_address, "--skip-final"]

    driver = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, start_new_session=True)
    try:
        while driver.poll() is None and finished_in_db(db) < 1:
            time.sleep(0.2)
        assert driver.poll() is None, f"the driver ended before it could be killed:\n{driver.stdout.read()}"
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait()
    finally:
        if driver.poll() is None:
            os.kill(driver.pid, signal.SIGKILL)
            driver.wait()
    storage = f"sqlite:///{db}"
    before = optuna.load_study(study_name="tiny", storage=storage).get_trials()
    earlier = [frozen(t) for t in before if t.state.is_finished()]
    assert 1 <= len(earlier) < 3
    earlier_ids = [t.user_attrs["tune_trial_id"] for t in before if t.state.is_finished()]

    lines: list[str] = []
    started = time.monotonic()
    outcome = run_tuning(load_tune_study(study_file), output,
                         echo=lambda line: lines.append(f"{time.monotonic() - started:6.1f} {line}"))
    log = "\n".join(lines)
    assert "resuming" in log, log
    for trial_id in earlier_ids:
        assert f"started   trial {trial_id}" not in log

    study = optuna.load_study(study_name="tiny", storage=storage)
    trials = study.get_trials()
    after = {t.number: frozen(t) for t in trials}
    for trial in earlier:
        assert after[trial[0]] == trial
    counted = [t for t in trials if t.user_attrs.get(END_ATTR) != "interrupted"]
    assert len(counted) == 3
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL) for t in trials)
    for trial in counted:
        expected = {TrialState.COMPLETE: "final report", TrialState.PRUNED: "scheduler"}.get(trial.state, "error")
        assert trial.user_attrs[END_ATTR] in (expected, "non-finite objective")

    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert complete, log
    top = max(complete, key=lambda t: t.value)
    best = json.loads((output / "best.json").read_text())
    assert best["status"] == "ok"
    assert best["valid_auc"] == top.value
    assert math.isfinite(best["valid_auc"])
    assert best["params"] == top.params
    assert outcome.complete

    per_seed = best["final"]["per_seed"]["0"]
    assert per_seed["status"] == "ok", log
    assert 0.0 <= per_seed["test_auc"] <= 1.0
    rows = pd.read_parquet(output / "final" / "results.parquet")
    config = json.loads(rows.loc[0, "config"])["pipeline"]
    assert config["search"]["tau"] == top.params["tau"]
    assert config["cluster"]["num_clusters"] == top.params["num_clusters"]

    assert json.loads((output / "importance.json").read_text())["status"] in ("ok", "unavailable")
    assert (output / "history.png").read_bytes()[:8] == PNG_MAGIC


def test_unlimited_concurrency_counts_slots(ray_session):
    # ihas-movielens sets max_concurrent_trials = 0: as many trials as the 2-CPU test Ray holds,
    # one Train worker on one CPU each, with the trial driver on its own custom resource.
    from tune.driver import _parallel_slots

    study = load_tune_study("ihas-movielens")
    assert study.max_concurrent_trials == 0
    assert _parallel_slots(study) == 2
