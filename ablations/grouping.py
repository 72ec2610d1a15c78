"""Packing of a study's trials into Ray Train runs.

Each run starts its own Train controller and workers, which costs seconds, so packing several
short trials into one run cuts a study's wall time. But a packed run's trials are fixed when the
study starts, so runs whose trials take longer finish later while other slots idle. Hence:
- `trials_per_run = 0` (the default) chooses by where the study runs. On the embedded local Ray
  (a laptop or one machine, small data) it packs the trials into as many runs as run at once, so
  each parallel slot starts Train once. On a cluster (`--address` or `RAY_ADDRESS`), where trials
  usually train for hours, it gives every trial its own run, and Tune starts the next trial on
  whichever slot frees up first.
- `trials_per_run = 1` always gives every trial its own run; any other N puts at most N trials in
  a run.

Trials go to runs in snake order (0, 1, ..., R-1, R-1, ..., 1, 0, 0, 1, ...) over the study's order
(dataset, method, seed). The seeds of one method take about as long as each other, so this spreads
them over the runs, and the runs take about as long as each other.
"""

from __future__ import annotations

import math
from typing import Sequence, TypeVar

T = TypeVar("T")


def count_runs(num_trials: int, slots: int, trials_per_run: int, embedded: bool = True) -> int:
    """Return how many runs `num_trials` trials are packed into (see the module docstring).

    `embedded` is true when the study runs on the embedded local Ray; it matters only when
    `trials_per_run` is 0.
    """
    if num_trials < 0:
        raise ValueError(f"num_trials must be >= 0, got {num_trials}")
    if slots < 1:
        raise ValueError(f"slots must be >= 1, got {slots}")
    if trials_per_run < 0:
        raise ValueError(f"trials_per_run must be >= 0 (0 chooses by where the study runs), got {trials_per_run}")
    if num_trials == 0:
        return 0
    if trials_per_run == 0:
        return min(num_trials, slots) if embedded else num_trials
    return math.ceil(num_trials / trials_per_run)


def pack_trials(trials: Sequence[T], runs: int) -> list[list[T]]:
    """Deal `trials` into `runs` lists in snake order, keeping their order inside each list."""
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    packed: list[list[T]] = [[] for _ in range(min(runs, len(trials)))]
    width = len(packed)
    for position, trial in enumerate(trials):
        lap, offset = divmod(position, width)
        packed[offset if lap % 2 == 0 else width - 1 - offset].append(trial)
    return packed
