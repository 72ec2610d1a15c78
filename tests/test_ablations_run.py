"""The ablation runner end to end on a real local Ray with the real Criteo 10k sample.

Epochs are capped hard, so each trial trains for seconds. The checks are on the runner. Every trial
ends in the results files and the table, and failures are recorded with their error after the
configured retries. A rerun after a killed driver skips the trials already finished.
"""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import ray

from ablations.driver import InfeasibleResourcesError, run_study
from ablations.results import CSV_FILE, PARQUET_FILE, ResultsMismatchError
from ablations.study import load_study
from ihas.data.dataset import load_prepared

REPO_ROOT = Path(__file__).resolve().parents[1]

TINY_CAPS = """
[overrides.train]
max_epochs = 2
[overrides.search]
pretrain_epochs = 1
max_epochs = 1
"""


def write_study(directory: Path, name: str, methods: list[str], data: Path, extra: str = "",
                max_retries: int = 0, max_concurrent: int = 0, trials_per_run: int = 0) -> Path:
    text = (f'name = "{name}"\nmethods = {methods!r}\nseeds = [0]\nmax_retries = {max_retries}\n'
            f"max_concurrent_trials = {max_concurrent}\ntrials_per_run = {trials_per_run}\n"
            f'[datasets.criteo-10k]\npath = "{data}"\n' + TINY_CAPS + extra)
    path = directory / f"{name}.toml"
    path.write_text(text.replace("'", '"'))
    return path


@pytest.fixture(scope="module")
def finished_study(ray_session, criteo_10k_prepared, tmp_path_factory):
    """Base and iHAS-1 that succeed, and iHAS-2 set to a CUDA device this CPU-only build cannot use.

    At most two trials per Train run: base runs alone, and iHAS-2 fails in the same run before
    iHAS-1, which must still run after it.
    """
    directory = tmp_path_factory.mktemp("study")
    failing = '[method_overrides.ihas-2]\ndevice = "cuda:0"\n'
    study = load_study(write_study(directory, "two-plus-failing", ["base", "ihas-2", "ihas-1"],
                                   criteo_10k_prepared, extra=failing, max_retries=1, trials_per_run=2))
    lines: list[str] = []
    outcome = run_study(study, directory / "out", echo=lines.append)
    return outcome, lines


def test_study_writes_each_trial(finished_study):
    outcome, _ = finished_study
    frame = pd.read_parquet(outcome.output_dir / PARQUET_FILE)
    assert sorted(frame["method"]) == ["base", "ihas-1", "ihas-2"]
    assert set(frame["dataset"]) == {"criteo-10k"}
    assert set(frame["seed"]) == {0}
    csv = pd.read_csv(outcome.output_dir / CSV_FILE)
    assert sorted(csv["method"]) == ["base", "ihas-1", "ihas-2"]


def test_trials_share_train_runs(finished_study):
    outcome, lines = finished_study
    frame = pd.read_parquet(outcome.output_dir / PARQUET_FILE).set_index("method")
    assert any("3 trial(s) of study two-plus-failing in 2 Ray Train run(s)" in line for line in lines)
    # Snake order over [base, ihas-2, ihas-1] on two runs: run 0 gets base, run 1 ihas-2 then ihas-1.
    assert frame.loc["ihas-1", "status"] == "ok"
    assert isinstance(frame.loc["base", "train_run"], str)
    assert frame.loc["base", "train_run"] != frame.loc["ihas-1", "train_run"]
    assert frame.loc["ihas-2", "train_run"] == frame.loc["ihas-1", "train_run"]
    started = [line.split("started")[1].strip() for line in lines if "] started" in line]
    assert started.index("ihas-1 on criteo-10k, seed 0") > started.index("ihas-2 on criteo-10k, seed 0")


def test_successful_trials_have_finite_metrics(finished_study):
    outcome, _ = finished_study
    frame = pd.read_parquet(outcome.output_dir / PARQUET_FILE).set_index("method")
    for method in ("base", "ihas-1"):
        row = frame.loc[method]
        assert row["status"] == "ok"
        assert 0.0 < row["test_auc"] < 1.0
        assert math.isfinite(row["test_logloss"])
        assert row["num_params"] > 0
        assert row["wall_s"] > 0
        assert row["pipeline_s"] > 0
        assert row["peak_rss_mb"] > 0
        assert len(row["dataset_fingerprint"]) == 64
        assert f'"variant": "{method}"' in row["config"]


def test_first_trial_of_run_includes_start(finished_study):
    # base runs alone in its Train run, so its wall time includes the run's start on top of the pipeline.
    outcome, _ = finished_study
    row = pd.read_parquet(outcome.output_dir / PARQUET_FILE).set_index("method").loc["base"]
    assert row["wall_s"] > row["pipeline_s"]
    assert row["train_overhead_s"] > 0


def test_failing_trial_recorded_after_retries(finished_study):
    outcome, lines = finished_study
    frame = pd.read_parquet(outcome.output_dir / PARQUET_FILE).set_index("method")
    row = frame.loc["ihas-2"]
    assert row["status"] == "failed"
    assert "CUDA" in row["error"]
    assert row["attempts"] == 2  # the first attempt and max_retries = 1 retry
    assert outcome.failed == 1
    assert any(line.startswith("[") and "retrying" in line and "ihas-2" in line for line in lines)
    assert any("FAILED" in line and "ihas-2" in line for line in lines)
    assert (outcome.output_dir / "errors" / "ihas-2-criteo-10k-seed0.txt").is_file()


def test_table_lists_methods_and_failure(finished_study):
    outcome, _ = finished_study
    table = (outcome.output_dir / "table.md").read_text()
    assert table == outcome.table
    assert "| Base | 0." in table
    assert "| iHAS-1 | 0." in table
    assert "| iHAS-2 | n/a |" in table
    assert "## Failed trials" in table
    assert "CUDA" in table.split("## Failed trials")[1]


def test_rerun_skips_finished_trials(finished_study):
    outcome, _ = finished_study
    study = load_study(next(outcome.output_dir.parent.glob("*.toml")))
    before = pd.read_parquet(outcome.output_dir / PARQUET_FILE).set_index("method")
    # Only the failed trial is run again; it fails again, and the finished rows stay untouched.
    lines: list[str] = []
    again = run_study(study.replace_retries(0), outcome.output_dir, echo=lines.append)
    after = pd.read_parquet(outcome.output_dir / PARQUET_FILE).set_index("method")
    assert again.skipped == 2
    assert again.ran == 1
    assert any("resuming: 2 finished trial(s)" in line for line in lines)
    for method in ("base", "ihas-1"):
        assert after.loc[method, "finished_at"] == before.loc[method, "finished_at"]
        assert after.loc[method, "test_auc"] == before.loc[method, "test_auc"]
    assert after.loc["ihas-2", "attempts"] == 1


def test_rerun_with_changed_settings_rejected(finished_study):
    outcome, _ = finished_study
    study = load_study(next(outcome.output_dir.parent.glob("*.toml")))
    changed = dataclasses.replace(study, overrides={**study.overrides, "train": {"max_epochs": 2, "lr": 0.01}})
    before = (outcome.output_dir / PARQUET_FILE).read_bytes()
    with pytest.raises(ResultsMismatchError) as caught:
        run_study(changed, outcome.output_dir, echo=lambda line: None)
    message = str(caught.value)
    assert "train.lr is 0.001 there and 0.01 now" in message
    assert "new --output" in message
    assert (outcome.output_dir / PARQUET_FILE).read_bytes() == before


def test_fixed_trial_clears_its_error_file(finished_study):
    outcome, _ = finished_study
    study = load_study(next(outcome.output_dir.parent.glob("*.toml")))
    errors = outcome.output_dir / "errors"
    assert (errors / "ihas-2-criteo-10k-seed0.txt").is_file()
    # Without the CUDA device, ihas-2 now finishes: its old error file and the empty folder go.
    fixed = dataclasses.replace(study, method_overrides={})
    again = run_study(fixed, outcome.output_dir, echo=lambda line: None)
    frame = pd.read_parquet(outcome.output_dir / PARQUET_FILE).set_index("method")
    assert again.ran == 1
    assert frame.loc["ihas-2", "status"] == "ok"
    assert not errors.exists()
    assert "errors/" not in (outcome.output_dir / "README.md").read_text()


def test_missing_dataset_leaves_no_output(ray_session, tmp_path):
    study = load_study(write_study(tmp_path, "missing", ["base"], tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="no prepared dataset"):
        run_study(study, tmp_path / "out", echo=lambda line: None)
    assert not (tmp_path / "out").exists()


def test_trial_larger_than_machine_rejected(ray_session, criteo_10k_prepared, tmp_path):
    extra = "[resources]\ncpus_per_worker = 64\n"
    study = load_study(write_study(tmp_path, "huge", ["base"], criteo_10k_prepared, extra=extra))
    with pytest.raises(InfeasibleResourcesError) as caught:
        run_study(study, tmp_path / "out", echo=lambda line: None)
    assert "asks for 64 CPUs (resources.cpus_per_worker) but the largest node has 2" in str(caught.value)


def test_interrupted_study_resumes(ray_session, criteo_10k_prepared, tmp_path):
    # Ctrl-C (SIGINT) after the first finished trial: the unfinished trial is not reported as
    # failed, the driver exits with 130, and the rerun runs only what is left.
    study = write_study(tmp_path, "interrupted", ["base", "ihas-1"], criteo_10k_prepared, max_concurrent=1)
    output = tmp_path / "out"
    env = {**os.environ, "RAY_AUTH_MODE": "token", "PYTHONPATH": str(REPO_ROOT)}
    command = [sys.executable, "-m", "ablations", "--study", str(study), "--output", str(output),
               "--address", ray.get_runtime_context().gcs_address]

    driver = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, start_new_session=True)
    try:
        while driver.poll() is None and not (output / PARQUET_FILE).exists():
            time.sleep(0.2)
        assert driver.poll() is None, f"the driver ended before it could be interrupted:\n{driver.stdout.read()}"
        os.kill(driver.pid, signal.SIGINT)
        stdout, _ = driver.communicate(timeout=120)
    finally:
        if driver.poll() is None:
            os.kill(driver.pid, signal.SIGKILL)
            driver.wait()

    assert driver.returncode == 130, stdout
    assert "interrupted: 1 trial(s) did not finish" in stdout
    assert "FAILED" not in stdout
    first = pd.read_parquet(output / PARQUET_FILE)
    assert list(first["status"]) == ["ok"]

    rerun = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "resuming: 1 finished trial(s)" in rerun.stdout
    final = pd.read_parquet(output / PARQUET_FILE)
    assert sorted(final["method"]) == ["base", "ihas-1"]
    assert (final["status"] == "ok").all()


def test_resume_after_killed_driver(ray_session, criteo_10k_prepared, tmp_path):
    study = write_study(tmp_path, "killed", ["base", "ihas-1"], criteo_10k_prepared, max_concurrent=1)
    output = tmp_path / "out"
    env = {**os.environ, "RAY_AUTH_MODE": "token", "PYTHONPATH": str(REPO_ROOT)}
    address = ray.get_runtime_context().gcs_address
    command = [sys.executable, "-m", "ablations", "--study", str(study), "--output", str(output),
               "--address", address]

    driver = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, start_new_session=True)
    try:
        parquet = output / PARQUET_FILE
        while driver.poll() is None and not parquet.exists():
            time.sleep(0.2)
        assert driver.poll() is None, f"the driver ended before it could be killed:\n{driver.stdout.read()}"
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait()
    finally:
        if driver.poll() is None:
            os.kill(driver.pid, signal.SIGKILL)
            driver.wait()
    first = pd.read_parquet(parquet)
    assert len(first) == 1
    assert first.loc[0, "status"] == "ok"
    done_method = first.loc[0, "method"]

    rerun = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "resuming: 1 finished trial(s)" in rerun.stdout
    assert f"started   {done_method} on" not in rerun.stdout
    final = pd.read_parquet(parquet).set_index("method")
    assert sorted(final.index) == ["base", "ihas-1"]
    assert (final["status"] == "ok").all()
    assert final.loc[done_method, "finished_at"] == first.loc[0, "finished_at"]
    assert final.loc[done_method, "test_auc"] == first.loc[0, "test_auc"]
    assert "| Base | 0." in rerun.stdout


def test_two_worker_run_retries_per_trial(ray_session, criteo_10k_prepared, tmp_path):
    # Two Train workers per run, one run of [ihas-2, base]. ihas-2 fails on both workers, which
    # ends the run; Tune restarts it, and ihas-2 fails again (attempt 2 of 2). On the next restart
    # the run's checkpoint shows ihas-2 out of attempts, so it is recorded as failed and base
    # still trains, data-parallel, in the same run.
    extra = '[resources]\nnum_workers = 2\n[method_overrides.ihas-2]\ndevice = "cuda:0"\n'
    study = load_study(write_study(tmp_path, "two-workers", ["ihas-2", "base"], criteo_10k_prepared,
                                   extra=extra, max_retries=1, max_concurrent=1, trials_per_run=2))
    lines: list[str] = []
    outcome = run_study(study, tmp_path / "out", echo=lines.append)
    frame = pd.read_parquet(outcome.output_dir / PARQUET_FILE).set_index("method")
    assert frame.loc["ihas-2", "status"] == "failed"
    assert "CUDA" in frame.loc["ihas-2", "error"]
    assert frame.loc["ihas-2", "attempts"] == 2
    assert frame.loc["base", "status"] == "ok"
    assert 0.5 < frame.loc["base", "test_auc"] < 1.0
    assert '"num_workers": 2' in frame.loc["base", "config"]
    assert frame.loc["base", "train_run"] == frame.loc["ihas-2", "train_run"]
    assert sum("retrying  the Train run" in line and "ihas-2" in line for line in lines) == 2
    assert outcome.failed == 1


@ray.remote
def _read_shared(wrapper: dict) -> tuple[bool, bool, int]:
    data = ray.get(wrapper["ref"])
    x = data.train.x
    return bool(x.flags.writeable), bool(x.flags.owndata), int(x.sum())


def test_dataset_shared_without_copy(ray_session, criteo_10k_prepared):
    # The trials receive the dataset the way this task does: a reference inside a dict, read with
    # ray.get in another process. Read-only arrays that do not own their memory are views of
    # Ray's shared-memory object store, not copies.
    data = load_prepared(criteo_10k_prepared)
    writeable, owns_memory, total = ray.get(_read_shared.remote({"ref": ray.put(data)}))
    assert writeable is False
    assert owns_memory is False
    assert total == int(data.train.x.sum())
