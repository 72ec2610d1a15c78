"""How a study's trials are packed into Ray Train runs.

Each run starts its own Train controller and workers, which costs seconds, so packing several
short trials into one run cuts a study's wall time. `trials_per_run = 0` (the default) packs the
trials into as many runs as the cluster runs at once, so each parallel slot starts Train once;
`trials_per_run = 1` gives every trial its own run (finest retries and load balance, for trials
that train for hours); any other N puts at most N trials in a run.

Trials go to runs in snake order (0, 1, ..., R-1, R-1, ..., 1, 0, 0, 1, ...) over the study's order
(dataset, method, seed), so the seeds of one method, which take about as long as each other, are
spread over the runs and the runs take about as long as each other.
"""

from __future__ import annotations

import math
from typing import Sequence, TypeVar

T = TypeVar("T")


def count_runs(num_trials: int, slots: int, trials_per_run: int) -> int:
    """Return how many runs `num_trials` trials are packed into (see the module docstring)."""
    if num_trials < 0:
        raise ValueError(f"num_trials must be >= 0, got {num_trials}")
    if slots < 1:
        raise ValueError(f"slots must be >= 1, got {slots}")
    if trials_per_run < 0:
        raise ValueError(f"trials_per_run must be >= 0 (0 packs the trials into one run per parallel slot), "
                         f"got {trials_per_run}")
    if num_trials == 0:
        return 0
    if trials_per_run == 0:
        return min(num_trials, slots)
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
