"""Summary files of a finished tuning study, computed from its Optuna storage.

- `best_trial`: the COMPLETE trial with the highest finite validation AUC. PRUNED and FAIL
  trials are never candidates, and a NaN value is never best.
- `param_importances`: Optuna's fANOVA importance of each searched value, or the reason it could
  not be computed (it needs at least two complete trials that differ).
- `plot_history`: a PNG of the value of each trial in order, the best value so far, and the
  pruned and failed trials marked.
- `write_trials_csv`: one row per trial with its state, value, parameters and how it ended.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from pathlib import Path
from typing import Any, Callable

import optuna
from optuna.trial import FrozenTrial, TrialState

from ihas.atomic import atomic_write
from tune.searcher import END_ATTR, INTERRUPTED, TUNE_TRIAL_ATTR
from tune.space import PARAM_NAMES

logger = logging.getLogger(__name__)


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    """Return the COMPLETE trial with the highest finite value; the lowest number wins a tie."""
    candidates = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                  if t.value is not None and math.isfinite(t.value)]
    if not candidates:
        return None
    return max(candidates, key=lambda t: (t.value, -t.number))


def state_counts(study: optuna.Study) -> dict[str, int]:
    """Count trials per Optuna state; FAIL trials of an interrupted driver count as INTERRUPTED instead."""
    counts = {name: 0 for name in ("COMPLETE", "PRUNED", "FAIL", INTERRUPTED.upper(), "RUNNING", "WAITING")}
    for trial in study.get_trials(deepcopy=False):
        name = trial.state.name
        if trial.user_attrs.get(END_ATTR) == INTERRUPTED:
            name = INTERRUPTED.upper()
        counts[name] = counts.get(name, 0) + 1
    return counts


def param_importances(study: optuna.Study) -> dict[str, Any]:
    """Importance of each searched value, or `{"status": "unavailable", "reason": ...}`."""
    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                if t.value is not None and math.isfinite(t.value)]
    if len(complete) < 2:
        return {"status": "unavailable",
                "reason": f"importance needs at least 2 complete trials with a finite value, got {len(complete)}"}
    try:
        # A fixed seed makes the fANOVA forest, and so the figures, reproducible.
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
        values = optuna.importance.get_param_importances(study, evaluator=evaluator)
    except (ValueError, RuntimeError) as error:
        return {"status": "unavailable", "reason": f"optuna could not compute importances: {error}"}
    return {"status": "ok", "evaluator": "fanova", "num_trials": len(complete),
            "importances": {name: float(values.get(name, 0.0)) for name in PARAM_NAMES}}


def plot_history(study: optuna.Study, path: Path, title: str) -> None:
    """Write the optimization history as a PNG: value per trial, best so far, pruned and failed marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    fig, ax = plt.subplots(figsize=(7, 4))
    try:
        complete = [(t.number, t.value) for t in trials
                    if t.state == TrialState.COMPLETE and t.value is not None and math.isfinite(t.value)]
        # A pruned trial has no final value; it is drawn at its last search-stage validation AUC.
        pruned = [(t.number, _last_intermediate(t)) for t in trials if t.state == TrialState.PRUNED]
        pruned = [(n, v) for n, v in pruned if v is not None]
        failed = [t.number for t in trials if t.state == TrialState.FAIL]
        if complete:
            ax.scatter(*zip(*complete), color="tab:blue", label="complete (validation AUC)", zorder=3)
            best_x, best_y, best = [], [], -math.inf
            for number, value in complete:
                best = max(best, value)
                best_x.append(number)
                best_y.append(best)
            ax.step(best_x, best_y, where="post", color="tab:red", label="best so far")
        if pruned:
            ax.scatter(*zip(*pruned), marker="x", color="tab:gray",
                       label="pruned by ASHA (last search-epoch AUC)", zorder=3)
        for number in failed:
            ax.axvline(number, color="tab:orange", alpha=0.4, linestyle=":")
        if failed:
            ax.plot([], [], color="tab:orange", linestyle=":", label="failed or NaN")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("trial number")
        ax.set_ylabel("validation AUC")
        ax.set_title(title)
        if complete or pruned or failed:
            ax.legend(loc="best", fontsize="small")
        _ensure_parent_and_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight"))
    finally:
        plt.close(fig)


def write_trials_csv(study: optuna.Study, path: Path) -> None:
    columns = ["number", "state", "value", *PARAM_NAMES, "ended_by", "tune_trial_id", "last_search_epoch_auc"]
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)

    def write(tmp: str) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(columns)
            for t in trials:
                writer.writerow([t.number, t.state.name, "" if t.value is None else t.value,
                                 *[t.params.get(name, "") for name in PARAM_NAMES],
                                 t.user_attrs.get(END_ATTR, ""), t.user_attrs.get(TUNE_TRIAL_ATTR, ""),
                                 _last_intermediate(t) or ""])

    _ensure_parent_and_write(path, write)


def write_json(path: Path, payload: Any) -> None:
    """Write `payload` as JSON through a temporary file, so a crash never leaves half a file."""
    text = json.dumps(payload, indent=2, sort_keys=True, allow_nan=False)

    def write(tmp: str) -> None:
        Path(tmp).write_text(text + "\n", encoding="utf-8")

    _ensure_parent_and_write(path, write)


def _last_intermediate(trial: FrozenTrial) -> float | None:
    if not trial.intermediate_values:
        return None
    return trial.intermediate_values[max(trial.intermediate_values)]




def _ensure_parent_and_write(target: Path, write: Callable[[str], None]) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(target, write)
