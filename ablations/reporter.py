"""`ihas.reporting.Reporter` bound to Ray Train: per-epoch metrics and checkpoints of a Train run and of its trials."""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path

import ray.train
import torch

from ihas.reporting import Checkpoint, Metrics, Reporter

CHECKPOINT_FILE = "state.pt"
TRIAL_INDEX_KEY = "trial_index"  # position of the reporting trial in its run


class RayTrainReporter:
    """Sends each report to `ray.train.report`; only rank 0 writes the checkpoint to storage.

    Every rank must call `report` the same number of times, because Ray Train waits for all
    workers at each report. `latest_checkpoint` returns the state of the last checkpoint that this
    Train run saved, which Ray Train hands back after a worker restart or a retried trial.
    """

    def __init__(self) -> None:
        self._restored: Checkpoint | None = None
        self._restored_loaded = False

    def report(self, metrics: Metrics, checkpoint: Checkpoint | None = None) -> None:
        values = dict(metrics)
        if checkpoint is not None:
            self._restored, self._restored_loaded = checkpoint, True
        if checkpoint is None or ray.train.get_context().get_world_rank() != 0:
            ray.train.report(values)
            return
        with tempfile.TemporaryDirectory(prefix="ihas-checkpoint-") as directory:
            torch.save(checkpoint, Path(directory) / CHECKPOINT_FILE)
            ray.train.report(values, checkpoint=ray.train.Checkpoint.from_directory(directory))

    def latest_checkpoint(self) -> Checkpoint | None:
        if self._restored_loaded:
            return self._restored
        self._restored_loaded = True
        saved = ray.train.get_checkpoint()
        if saved is None:
            return None
        with saved.as_directory() as directory:
            self._restored = torch.load(Path(directory) / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
        return self._restored


class TrialRunReporter:
    """The `Reporter` of each trial in a run of several, on top of the run's own reporter (a `RayTrainReporter`).

    The Train checkpoint of the run contains `finished` (indices of the trials the run has
    finished), the latest stage checkpoint of the trial running then (`current`, `state`), and the
    attempts made at each trial (`attempts`). Every report
    carries the running trial's index. `latest_checkpoint` hands a trial only its own state, so a
    run restarted by Ray resumes the interrupted trial and starts the next ones fresh.

    Each `ray.train.report` waits until Ray Train's controller has taken the previous one, which it
    does at its health-check interval. Stages of small datasets report many epochs per second, so
    with `min_interval_s` > 0 a stage report is passed on only when that many seconds have gone by
    since the last one passed on; the ones in between are folded into the next (its metrics, and
    the newest checkpoint). Events and final reports always go out. Throttle only runs with one
    worker: Ray Train needs every worker to report the same number of times.
    """

    def __init__(self, train_reporter: Reporter, min_interval_s: float = 0.0) -> None:
        if min_interval_s < 0:
            raise ValueError(f"min_interval_s must be >= 0, got {min_interval_s}")
        self._inner = train_reporter
        self._min_interval_s = float(min_interval_s)
        saved = train_reporter.latest_checkpoint() or {}
        self._finished: list[int] = [int(i) for i in saved.get("finished", [])]
        self._current = int(saved.get("current", -1))
        self._state: Checkpoint | None = saved.get("state")
        self._attempts: dict[int, int] = {int(k): int(v) for k, v in (saved.get("attempts") or {}).items()}
        self._last_sent = -math.inf
        self._unsent_checkpoint = False  # a stage checkpoint arrived after the last report passed on
        self.index = -1
        self.report_seconds = 0.0  # spent passing on the running trial's reports
        self.reports_folded = 0  # stage reports of the running trial folded into later ones

    def is_finished(self, index: int) -> bool:
        return index in self._finished

    def begin(self, index: int) -> None:
        """Make `index` the running trial; reports and `latest_checkpoint` refer to it from now on."""
        self.index = index
        self.report_seconds = 0.0
        self.reports_folded = 0
        self._unsent_checkpoint = False
        if self._current != index:
            self._current, self._state = index, None

    def start_attempt(self) -> int:
        """Count one more attempt of the running trial and return its number (1 for the first).

        The count lives in the run's checkpoint, which the next report carries, so attempts made
        before Ray restarted the run count too.
        """
        self._attempts[self.index] = self._attempts.get(self.index, 0) + 1
        self._unsent_checkpoint = True
        return self._attempts[self.index]

    def restart_trial(self) -> None:
        """Forget the running trial's state, so that its next attempt starts from the beginning.

        The next report carries a run checkpoint without that state, so a run that Ray restarts
        later does not resume the failed attempt either.
        """
        self._state = None
        self._unsent_checkpoint = True

    def report(self, metrics: Metrics, checkpoint: Checkpoint | None = None) -> None:
        """Pass on a stage's per-epoch report, or fold it into the next (see the class docstring)."""
        if checkpoint is not None:
            self._state = checkpoint
            self._unsent_checkpoint = True
        if time.perf_counter() - self._last_sent < self._min_interval_s:
            self.reports_folded += 1
            return
        self._send(metrics, self._run_checkpoint(self.index, self._state) if self._unsent_checkpoint else None)

    def event(self, metrics: Metrics) -> None:
        """Pass on an event of the running trial at once, with the run checkpoint when it changed."""
        self._send(metrics, self._run_checkpoint(self.index, self._state) if self._unsent_checkpoint else None)

    def latest_checkpoint(self) -> Checkpoint | None:
        return self._state if self._current == self.index else None

    def finish(self, metrics: Metrics) -> None:
        """Report the running trial's final metrics and checkpoint it as finished."""
        self._finished.append(self.index)
        self._current, self._state = -1, None
        self._send(metrics, self._run_checkpoint(-1, None))

    def _run_checkpoint(self, current: int, state: Checkpoint | None) -> Checkpoint:
        return {"finished": list(self._finished), "current": current, "state": state,
                "attempts": {str(k): v for k, v in self._attempts.items()}}

    def _send(self, metrics: Metrics, checkpoint: Checkpoint | None) -> None:
        started = time.perf_counter()
        self._inner.report({**dict(metrics), TRIAL_INDEX_KEY: self.index}, checkpoint)
        self._last_sent = time.perf_counter()
        self._unsent_checkpoint = False
        self.report_seconds += self._last_sent - started
