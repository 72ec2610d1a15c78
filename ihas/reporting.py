"""The interface through which stages report metrics and persist their state.

Stage code calls `report` once per epoch and `latest_checkpoint` once when it starts. The local
implementation below writes the checkpoint to a directory; the Ray runner binds the same two calls
to `ray.train.report` and `ray.train.get_checkpoint`, so the stage code never imports Ray.

A checkpoint is a nested dict of tensors, numbers, strings, lists and dicts: whatever
`torch.load(weights_only=True)` accepts, so loading it never runs pickled code.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Mapping, Protocol

import torch

from ihas.atomic import atomic_write

logger = logging.getLogger(__name__)

Metrics = Mapping[str, float | int | str]
Checkpoint = dict[str, Any]


class Reporter(Protocol):
    """Receives per-epoch metrics and the state needed to resume after an interruption."""

    def report(self, metrics: Metrics, checkpoint: Checkpoint | None = None) -> None:
        """Record one epoch's metrics and, when given, the latest resumable state."""

    def latest_checkpoint(self) -> Checkpoint | None:
        """Return the last state passed to `report`, by this or an interrupted earlier run."""


class LocalReporter:
    """Logs metrics and keeps the latest checkpoint in `directory/checkpoint.pt` (atomic replace)."""

    FILENAME = "checkpoint.pt"

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        self.directory = Path(directory) if directory is not None else None
        self.history: list[dict[str, float | int | str]] = []
        self._checkpoint: Checkpoint | None = None

    def report(self, metrics: Metrics, checkpoint: Checkpoint | None = None) -> None:
        self.history.append(dict(metrics))
        logger.info("metrics %s", " ".join(f"{k}={_format(v)}" for k, v in metrics.items()))
        if checkpoint is None:
            return
        self._checkpoint = checkpoint
        if self.directory is None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        atomic_write(self.directory / self.FILENAME, lambda path: torch.save(checkpoint, path))

    def latest_checkpoint(self) -> Checkpoint | None:
        if self._checkpoint is not None:
            return self._checkpoint
        if self.directory is None:
            return None
        path = self.directory / self.FILENAME
        if not path.exists():
            return None
        return torch.load(path, map_location="cpu", weights_only=True)


def _format(value: float | int | str) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)
