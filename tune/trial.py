"""The Tune function trainable of a tuning trial: the ablation runner's trial with the searched values applied.

Kept apart from `tune.driver` so that Ray workers, which import this module to run a trial, do not
import the driver's dependencies.
"""

from __future__ import annotations

from typing import Any, Mapping

from ray import tune

from ablations.trial import TrialSpec, run_config, run_trials
from ihas.config import PipelineConfig, override
from tune.space import PARAM_NAMES, to_overrides


def run_tuning_trial(config: Mapping[str, Any], datasets: Mapping[str, Mapping[str, Any]],
                     finished_trial_ids: frozenset[str] = frozenset()) -> None:
    """Set the values that the searcher put in `config` on `config["trial"]`'s pipeline, then run that trial.

    A trial in `finished_trial_ids` returns at once without a result: it already ended, and Optuna
    has its outcome, but the interrupted driver stopped before Tune's experiment checkpoint recorded that.
    """
    if tune.get_context().get_trial_id() in finished_trial_ids:
        return
    params = {name: config[name] for name in PARAM_NAMES}
    trial = dict(config["trial"])
    pipeline = override(PipelineConfig.from_dict(trial["pipeline"]), to_overrides(params))
    trial["pipeline"] = pipeline.to_dict()
    trial["overrides"] = to_overrides(params)
    # One trial per Train run: the scheduler stops trials one by one, and an error must reach Tune.
    run_trials({"run": run_config([TrialSpec.from_config(trial)], catch_errors=False)}, datasets)
