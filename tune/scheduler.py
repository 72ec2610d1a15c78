"""ASHA that acts only on the search stage's per-epoch validation AUC.

A trial reports one result per epoch of every stage (pretrain, search, cluster models, test) and a
final one. Only the search stage's epochs measure how good lambda, tau and the bin count are, so
this scheduler shows ASHA just those results, as (search epoch + 1, validation AUC), and lets
every other result pass.
"""

from __future__ import annotations

from typing import Any

from ray.tune.schedulers import AsyncHyperBandScheduler, TrialScheduler

TIME_ATTR = "search_epochs_done"
METRIC = "search_epoch_valid_auc"


class SearchStageASHA(AsyncHyperBandScheduler):
    """`AsyncHyperBandScheduler` over search-stage epochs; `max_t` and `grace_period` count them."""

    def __init__(self, *, max_t: int, grace_period: int, reduction_factor: float, stage: str = "search") -> None:
        super().__init__(time_attr=TIME_ATTR, metric=METRIC, mode="max", max_t=max_t,
                         grace_period=grace_period, reduction_factor=reduction_factor,
                         # A trial that reaches max_t search epochs has still to cluster and
                         # retrain; stopping it there would discard a finished search.
                         stop_last_trials=False)
        self._stage = stage

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        view = self._search_view(result)
        if view is None:
            return TrialScheduler.CONTINUE
        return super().on_trial_result(tune_controller, trial, view)

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        view = self._search_view(result)
        if view is None:
            self._trial_info.pop(trial.trial_id, None)
            return
        super().on_trial_complete(tune_controller, trial, view)

    def _search_view(self, result: dict | None) -> dict | None:
        if not result or result.get("stage") != self._stage or "epoch" not in result:
            return None
        value = result.get("valid_auc")
        if not isinstance(value, (int, float)):
            return None
        return {TIME_ATTR: int(result["epoch"]) + 1, METRIC: float(value)}
