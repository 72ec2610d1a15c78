"""Progress output of a tuning run: one line per trial event (started, pruned, finished, failed)."""

from __future__ import annotations

import math
from typing import Any, Callable

from ray import tune

from ablations.progress import error_text
from ablations.trial import DONE_KEY, last_line
from tune.space import PARAM_NAMES


class TuneProgress(tune.Callback):
    """Prints `[finished/total] EVENT trial ID (values): detail` for each trial event."""

    def __init__(self, total: int, echo: Callable[[str], None], already_finished: frozenset[str] = frozenset()) -> None:
        self.total = total
        self.echo = echo
        self.already_finished = already_finished  # Tune trial ids whose outcome Optuna already has
        self.finished = 0
        self.last_search_epoch: dict[str, tuple[int, float]] = {}

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if trial.trial_id in self.already_finished:
            return
        self.echo(f"[{self.finished}/{self.total}] started   {_label(trial)}")

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if result.get("stage") == "search" and "epoch" in result:
            self.last_search_epoch[trial.trial_id] = (int(result["epoch"]), result.get("valid_auc", math.nan))

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.echo(f"[{self.finished}/{self.total}] retrying  {_label(trial)} after: {last_line(error_text(trial))}")

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if trial.trial_id in self.already_finished:
            return
        self.finished += 1
        result = trial.last_result or {}
        if result.get(DONE_KEY) == 1:
            self.echo(f"[{self.finished}/{self.total}] finished  {_label(trial)}: validation AUC "
                      f"{_fmt(result.get('valid_auc'))}")
            return
        epoch, auc = self.last_search_epoch.get(trial.trial_id, (-1, math.nan))
        where = f"after search epoch {epoch} (validation AUC {_fmt(auc)})" if epoch >= 0 else "before its search stage"
        self.echo(f"[{self.finished}/{self.total}] pruned    {_label(trial)} by ASHA {where}")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.finished += 1
        self.echo(f"[{self.finished}/{self.total}] FAILED    {_label(trial)}: {last_line(error_text(trial))}")


def _label(trial: Any) -> str:
    values = ", ".join(f"{name}={_fmt(trial.config.get(name))}" for name in PARAM_NAMES)
    return f"trial {trial.trial_id} ({values})"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "n/a" if value is None else str(value)
