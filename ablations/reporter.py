"""`ihas.reporting.Reporter` bound to Ray Train: per-epoch metrics and checkpoints of a Train run."""

from __future__ import annotations

import tempfile
from pathlib import Path

import ray.train
import torch

from ihas.reporting import Checkpoint, Metrics

CHECKPOINT_FILE = "state.pt"


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
