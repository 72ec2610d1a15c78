"""`OptunaSearch` that records how each trial ended: complete, pruned or failed.

Ray Tune 2.60's `OptunaSearch` records a trial stopped by a scheduler as COMPLETE in Optuna, with
the score of its last epoch, so a trial that ASHA cut after one search epoch can become the best.
This subclass decides the state from the last result itself:
- COMPLETE only when the result is the trial's final report (`trial_done = 1`) and the objective
  is a finite number;
- FAIL when the trial raised, or finished with a NaN or infinite objective. FAIL trials have no
  value, so Optuna never picks one as best;
- PRUNED in every other case, which is a trial that a scheduler stopped before its final report.

Intermediate values are the search stage's per-epoch validation AUC (step = search epoch), so
Optuna's own plots show the curves that ASHA acted on.

On restore from a Tune experiment checkpoint, Optuna trials that are still RUNNING in the
storage but unknown to the restored searcher are marked FAIL. Such a trial was asked for after
the last checkpoint and will never be told; Tune creates a new trial in its place.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Mapping

import optuna
from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch

from ablations.trial import DONE_KEY

logger = logging.getLogger(__name__)

# User attributes written on each Optuna trial; `python -m tune` and the tests read them.
END_ATTR = "ended_by"  # "final report", "scheduler", "error", "non-finite objective", "interrupted"
TUNE_TRIAL_ATTR = "tune_trial_id"
INTERRUPTED = "interrupted"


def is_final_result(result: Mapping[str, Any] | None) -> bool:
    """True for the last report of a trial that ran its pipeline to the end."""
    return bool(result) and result.get(DONE_KEY) == 1


def finite_or_none(value: Any) -> float | None:
    """Return the value as a float when it is a finite number, else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


class PruneAwareOptunaSearch(OptunaSearch):
    """`OptunaSearch` with explicit COMPLETE / PRUNED / FAIL states; see the module docstring."""

    def __init__(self, *args: Any, intermediate_stage: str = "search", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._intermediate_stage = intermediate_stage

    def suggest(self, trial_id: str) -> dict | None:
        config = super().suggest(trial_id)
        ot_trial = self._ot_trials[trial_id]
        ot_trial.set_user_attr(TUNE_TRIAL_ATTR, trial_id)
        return config

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        """Record the search stage's per-epoch validation AUC as Optuna's intermediate value."""
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        if result.get("stage") != self._intermediate_stage or "epoch" not in result:
            return
        value = finite_or_none(result.get("valid_auc"))
        if value is None:
            return
        ot_trial = self._ot_trials[trial_id]
        step = int(result["epoch"])
        # A trial resumed after an interruption reports its epochs again; Optuna warns on a
        # repeated step, so report only new steps.
        known = self._ot_study._storage.get_trial(ot_trial._trial_id).intermediate_values
        if step not in known:
            ot_trial.report(value, step)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self._completed_trials:
            return
        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is None:
            logger.warning("trial %s ended but this searcher never suggested it; Optuna is not updated", trial_id)
            return
        objective = finite_or_none(result.get(self._metric)) if result else None
        if error:
            state, value, ended_by = TrialState.FAIL, None, "error"
        elif is_final_result(result) and objective is None:
            state, value, ended_by = TrialState.FAIL, None, "non-finite objective"
        elif is_final_result(result):
            state, value, ended_by = TrialState.COMPLETE, objective, "final report"
        else:
            state, value, ended_by = TrialState.PRUNED, None, "scheduler"
        self._completed_trials.add(trial_id)
        stored = self._ot_study._storage.get_trial(ot_trial._trial_id)
        if stored.state.is_finished():
            # Recorded before an interruption that came ahead of Tune's next experiment checkpoint.
            # Tune then reruns the trial, and the first outcome is kept.
            logger.info("optuna trial %d (tune trial %s) already ended as %s; keeping that",
                        ot_trial.number, trial_id, stored.state.name)
            return
        ot_trial.set_user_attr(END_ATTR, ended_by)
        if state == TrialState.FAIL and result is not None and result.get(self._metric) is not None:
            ot_trial.set_user_attr("reported_objective", str(result.get(self._metric)))
        self._ot_study.tell(ot_trial, value, state=state)
        logger.info("optuna trial %d (tune trial %s): %s, value %s", ot_trial.number, trial_id,
                    state.name, value)

    def restore(self, checkpoint_path: str) -> None:
        super().restore(checkpoint_path)
        fail_orphaned_trials(self._ot_study, known_numbers={t.number for t in self._ot_trials.values()})
        for trial_id, ot_trial in self._ot_trials.items():
            if self._ot_study._storage.get_trial(ot_trial._trial_id).state.is_finished():
                self._completed_trials.add(trial_id)

    @property
    def study(self) -> optuna.Study:
        return self._ot_study


def fail_orphaned_trials(study: optuna.Study, known_numbers: set[int] = frozenset()) -> list[int]:
    """Mark RUNNING trials not in `known_numbers` as FAIL (ended by interruption); return their numbers."""
    orphaned = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if trial.number in known_numbers:
            continue
        study._storage.set_trial_user_attr(trial._trial_id, END_ATTR, INTERRUPTED)
        study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
        orphaned.append(trial.number)
    if orphaned:
        logger.info("marked interrupted Optuna trial(s) %s as FAIL", orphaned)
    return orphaned


def counted_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Trials that count toward the study's budget: every trial except interrupted ones."""
    return [t for t in study.get_trials(deepcopy=False)
            if t.user_attrs.get(END_ATTR) != INTERRUPTED]
