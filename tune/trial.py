"""The Tune function trainable of a tuning trial: the ablation runner's trial with the searched values applied.

Kept apart from `tune.driver` so that Ray workers, which import this module to run a trial, do not
import the driver's dependencies.
"""

from __future__ import annotations

from typing import Any, Mapping

from ablations.trial import run_trial
from ihas.config import PipelineConfig, override
from tune.space import PARAM_NAMES, to_overrides


def run_tuning_trial(config: Mapping[str, Any], datasets: Mapping[str, Mapping[str, Any]]) -> None:
    """Set the values that the searcher put in `config` on `config["trial"]`'s pipeline, then run that trial."""
    params = {name: config[name] for name in PARAM_NAMES}
    trial = dict(config["trial"])
    pipeline = override(PipelineConfig.from_dict(trial["pipeline"]), to_overrides(params))
    trial["pipeline"] = pipeline.to_dict()
    trial["overrides"] = to_overrides(params)
    run_trial({"trial": trial}, datasets)
