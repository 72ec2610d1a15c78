"""The driver's view of a study's runs: one line per trial event, and each trial's row recorded at once.

Each Tune trial is one Ray Train run of several study trials (see `ablations.trial`), and this
callback turns the run's reports back into study trials. A trial's final report is written to the results store as soon as it
arrives, so a crash of the driver loses no finished trial. A trial that the run never finished
(the run failed before it, or ended without its final report) is recorded as failed with the
reason, never dropped.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any, Callable, Mapping

from ray import tune

from ablations.reporter import TRIAL_INDEX_KEY
from ablations.results import STATUS_FAILED, STATUS_OK, ResultsStore
from ablations.trial import (ATTEMPTS_KEY, DONE_KEY, ERROR_KEY, EVENT_KEY, EVENT_RETRYING, EVENT_STARTED,
                             STATUS_KEY, TrialSpec, last_line, run_specs, trial_name)
from ihas.atomic import atomic_write_text
from ihas.data.dataset import PreparedDataset

ERRORS_DIR = "errors"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_CLUSTER_REASON = re.compile(r"cluster_\d+_reason")

# Keys that Tune adds to every result, and the run's own bookkeeping; they describe the report, not the trial.
_NOT_METRICS = {"timestamp", "checkpoint_dir_name", "done", "training_iteration", "trial_id", "date",
                "time_this_iter_s", "time_total_s", "pid", "hostname", "node_ip", "time_since_restore",
                "iterations_since_restore", "experiment_tag", "config", "checkpoint_path", "should_checkpoint",
                "stage", "epoch", DONE_KEY, TRIAL_INDEX_KEY, EVENT_KEY, STATUS_KEY, ERROR_KEY, ATTEMPTS_KEY}


class ProgressCallback(tune.Callback):
    """Records each finished or finally failed trial in the store at once and prints one line per event."""

    def __init__(self, store: ResultsStore, datasets: Mapping[str, PreparedDataset], max_retries: int,
                 total: int, output: Path, echo: Callable[[str], None]) -> None:
        self.store = store
        self.datasets = datasets
        self.max_retries = max_retries
        self.total = total
        self.output = output
        self.echo = echo
        self.finished = 0
        self.failed = 0
        self._recorded: set[tuple[str, str, int]] = set()
        self._mark: dict[str, float] = {}  # per run: when its last trial ended (or the run started)
        self._running: dict[str, int] = {}  # per run: index of the trial it is running
        self.ended_runs: set[str] = set()  # Tune trial ids of the runs that Tune ended (complete or error)
        self._attempts: dict[tuple[str, str, int], int] = {}  # per trial: number of its latest attempt
        self._last_error: dict[tuple[str, str, int], str] = {}  # per trial: error of its latest failed run

    def recorded(self, spec: TrialSpec) -> bool:
        """Whether this callback has written `spec`'s row (finished or failed) during this study run."""
        return spec.key in self._recorded

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._mark.setdefault(trial.trial_id, time.time())

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        index = result.get(TRIAL_INDEX_KEY)
        if index is None:
            return
        specs = run_specs(trial.config)
        spec = specs[int(index)]
        event = result.get(EVENT_KEY)
        if event == EVENT_STARTED:
            self._running[trial.trial_id] = int(index)
            self._attempts[spec.key] = int(result.get(ATTEMPTS_KEY, 1))
            if self._attempts[spec.key] == 1:
                self.echo(f"[{self.finished}/{self.total}] started   {spec.label}")
        elif event == EVENT_RETRYING:
            self.echo(f"[{self.finished}/{self.total}] retrying  {spec.label} (attempt {result.get(ATTEMPTS_KEY)} "
                      f"of {self.max_retries + 1}) after: {result.get(ERROR_KEY)}")
        elif result.get(DONE_KEY):
            self._running.pop(trial.trial_id, None)
            if result.get(STATUS_KEY) == STATUS_OK:
                self._record_finished(trial, spec, result)
            else:
                error = result.get(ERROR_KEY) or self._last_error.get(spec.key) or "failed on every attempt"
                self.record_failure(spec, str(error), attempts=int(result.get(ATTEMPTS_KEY, 1)),
                                    train_run=trial.trial_id)
            self._mark[trial.trial_id] = time.time()

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        specs = run_specs(trial.config)
        index = self._running.get(trial.trial_id)
        error = error_text(trial)
        if index is None:
            where = "before its first trial"
        else:
            where = f"at {specs[index].label} (attempt {self._attempts.get(specs[index].key, 1)} of " \
                    f"{self.max_retries + 1} failed)"
            self._last_error[specs[index].key] = error
        self.echo(f"[{self.finished}/{self.total}] retrying  the Train run of {len(specs)} trial(s) {where} "
                  f"after: {last_line(error)}")

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.ended_runs.add(trial.trial_id)
        for spec in run_specs(trial.config):
            if not self.recorded(spec):
                self.record_failure(spec, "its Train run ended without this trial's final metrics", attempts=0,
                                    train_run=trial.trial_id)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.ended_runs.add(trial.trial_id)
        error = error_text(trial)
        specs = run_specs(trial.config)
        index = self._running.pop(trial.trial_id, None)
        if index is None:
            # No start was seen (the run failed while starting): charge the first unfinished trial.
            index = self._first_unrecorded(specs)
        for position, spec in enumerate(specs):
            if self.recorded(spec):
                continue
            if position == index:
                self.record_failure(spec, error, attempts=self._attempts.get(spec.key, 1), train_run=trial.trial_id)
            else:
                self.record_failure(spec, f"not run: its Train run failed earlier ({last_line(error)}); run the "
                                          "study again to run it", attempts=0, train_run=trial.trial_id)

    def record_failure(self, spec: TrialSpec, error: str, attempts: int, train_run: str = "") -> None:
        errors_dir = self.output / ERRORS_DIR
        errors_dir.mkdir(parents=True, exist_ok=True)
        error_file = errors_dir / f"{trial_name(spec)}.txt"
        atomic_write_text(error_file, error)
        row = self._row(spec, STATUS_FAILED, last_line(error), attempts=attempts)
        row["train_run"] = train_run
        self.store.record(row)
        self._recorded.add(spec.key)
        self.finished += 1
        self.failed += 1
        self.echo(f"[{self.finished}/{self.total}] FAILED    {spec.label} after {attempts} attempt(s): "
                  f"{last_line(error)} (full error in {error_file})")

    def _record_finished(self, trial: Any, spec: TrialSpec, result: Mapping[str, Any]) -> None:
        wall = time.time() - self._mark.get(trial.trial_id, time.time())
        row = self._row(spec, STATUS_OK, "", attempts=int(result.get(ATTEMPTS_KEY, 1)))
        row.update({k: v for k, v in result.items() if k not in _NOT_METRICS and not isinstance(v, dict)})
        row["inference_s"] = result.get("inference_seconds")
        row["wall_s"] = wall
        row["train_overhead_s"] = wall - float(result.get("pipeline_s", 0.0))
        row["train_run"] = trial.trial_id
        self.store.record(row)
        # An error file left by an earlier failed attempt of this trial no longer applies.
        (self.output / ERRORS_DIR / f"{trial_name(spec)}.txt").unlink(missing_ok=True)
        self._recorded.add(spec.key)
        self.finished += 1
        self.echo(f"[{self.finished}/{self.total}] finished  {spec.label}: test AUC {_fmt(result.get('test_auc'))}, "
                  f"logloss {_fmt(result.get('test_logloss'))}, {wall:.0f} s")
        for key in sorted(k for k in result if _CLUSTER_REASON.fullmatch(k) and result[k]):
            # Clusters trained or scored in a special way (too small, one-class validation, no dims).
            self.echo(f"          note: {spec.label}, cluster {key.split('_')[1]}: {result[key]}")

    def _first_unrecorded(self, specs: list[TrialSpec]) -> int:
        return next((i for i, spec in enumerate(specs) if not self.recorded(spec)), -1)

    def _row(self, spec: TrialSpec, status: str, error: str, attempts: int) -> dict[str, Any]:
        data = self.datasets.get(spec.dataset)
        return {"method": spec.method, "dataset": spec.dataset, "seed": spec.seed, "status": status,
                "error": error, "dataset_fingerprint": data.fingerprint if data is not None else "",
                "attempts": attempts, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "config": {"pipeline": dict(spec.pipeline), "overrides": dict(spec.overrides),
                           "num_workers": spec.num_workers, "use_gpu": spec.use_gpu}}


def error_text(trial: Any) -> str:
    """Return the error that Tune kept for `trial`, without terminal colour codes."""
    error = trial.get_error()
    if error is None:
        # Tune writes the error to the trial's local folder first and copies it to the storage that
        # `get_error` reads later, so right after a failure only the local file may exist.
        local = Path(trial.error_file) if getattr(trial, "error_file", None) else None
        if local is not None and local.is_file():
            error = local.read_text(errors="replace")
    text = str(error) if error is not None else "unknown error (Ray Tune kept no error for this trial)"
    return _ANSI.sub("", text)


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else "n/a"
