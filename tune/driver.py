"""Orchestration of one tuning study: the search on Ray Tune, then best.json, fresh runs, importance, plot.

Output directory layout:
- `optuna.db`: the Optuna study (RDB storage on SQLite), named after the tuning study. Inspect it
  with Optuna's own tools, e.g. `optuna.load_study(study_name=NAME, storage="sqlite:///.../optuna.db")`.
- `study.json`: the resolved tuning study; a rerun with a different study in the same directory
  is rejected.
- `ray/search-N/`: the Tune experiment of the N-th search run in this directory.
- `best.json`, `trials.csv`, `importance.json`, `history.png`, and `final/` (the ablation runner's
  results of fresh runs with the best config over `final_seeds`, with their test metrics).

Resuming: when the latest Tune experiment can be restored and `num_samples` did not change, the
driver restores it with `Tuner.restore`, which keeps the searcher's state and Tune's count of
created trials. Otherwise it marks interrupted Optuna trials as FAIL and starts a new Tune
experiment for the trials still missing from `num_samples`. Both paths keep the study's history
and end with `num_samples` counted trials (interrupted ones are not counted).
"""

from __future__ import annotations

import json
import math
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import optuna
import ray
from ray import tune

from ablations import ray_env
from ablations.driver import check_resources, locate_dataset, max_parallel_trials, run_study
from ablations.study import DatasetSpec, Study
from ablations.trial import TrialSpec
from ihas.data.dataset import load_prepared
from tune.params import apply_params
from tune.progress import TuneProgress
from tune.scheduler import SearchStageASHA
from tune.searcher import TUNE_TRIAL_ATTR, PruneAwareOptunaSearch, counted_trials, fail_orphaned_trials
from tune.space import PARAM_NAMES, IhasSearchSpace, to_overrides
from tune.study import TuneStudy, TuneStudyError
from tune.trial import run_tuning_trial
from tune.summary import (best_trial, param_importances, plot_history, state_counts, write_json,
                          write_trials_csv)

OBJECTIVE = "valid_auc"  # validation AUC of the finished pipeline; the test split is never searched on
STORAGE_FILE = "optuna.db"
STUDY_FILE = "study.json"
BEST_FILE = "best.json"
EXPERIMENT_PREFIX = "search-"



@dataclass
class TuneOutcome:
    """Outcome of `run_tuning`: trial counts, the best.json contents and the final runs' rows."""

    output_dir: Path
    counts: dict[str, int]
    best: dict[str, Any] | None  # the contents of best.json; None when no trial completed
    final_rows: list[dict[str, Any]] = field(default_factory=list)
    complete: bool = True  # False when the search stopped before num_samples trials finished


def run_tuning(study: TuneStudy, output_dir: str | os.PathLike[str], *, address: str | None = None,
               run_final: bool = True, echo: Callable[[str], None] = print) -> TuneOutcome:
    """Run (or continue) the search of `study` in `output_dir`, then write its summary files."""
    output = Path(output_dir).resolve()
    _check_same_study(study, output)
    data_path = locate_dataset(study.dataset, echo)
    output.mkdir(parents=True, exist_ok=True)
    echo(ray_env.init_ray(address))

    storage = optuna_storage(output)
    optuna_study = optuna.create_study(study_name=study.name, storage=storage, direction="maximize",
                                       load_if_exists=True)
    _run_search(study, output, data_path, storage, optuna_study, echo)

    optuna_study = optuna.load_study(study_name=study.name, storage=storage)
    finished = [t for t in counted_trials(optuna_study) if t.state.is_finished()]
    if len(finished) < study.num_samples:
        # Tune returns normally after Ctrl-C; the summary waits for the full budget.
        echo(f"the search stopped after {len(finished)} of {study.num_samples} trials; "
             f"rerun the same command to continue it")
        return TuneOutcome(output_dir=output, counts=state_counts(optuna_study), best=None, complete=False)
    return summarize(study, optuna_study, output, run_final=run_final, echo=echo)


def optuna_storage(output: Path) -> optuna.storages.RDBStorage:
    # A generous SQLite timeout: only this driver writes, but Optuna tools may read at the same time.
    return optuna.storages.RDBStorage(f"sqlite:///{output / STORAGE_FILE}",
                                      engine_kwargs={"connect_args": {"timeout": 60}})


def _run_search(study: TuneStudy, output: Path, data_path: Path, storage: optuna.storages.RDBStorage,
                optuna_study: optuna.Study, echo: Callable[[str], None]) -> None:
    # The scheduler's and searcher's metrics appear only in some results (search-stage epochs and
    # the final report), so Tune's check that every result carries them must be off.
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    data = load_prepared(data_path)
    refs = {study.dataset.name: {"ref": ray.put(data)}}
    finished_ids = frozenset(str(t.user_attrs[TUNE_TRIAL_ATTR]) for t in optuna_study.get_trials(deepcopy=False)
                             if t.state.is_finished() and TUNE_TRIAL_ATTR in t.user_attrs)
    trainable = tune.with_parameters(run_tuning_trial, datasets=refs, finished_trial_ids=finished_ids)
    trainable = tune.with_resources(trainable, ray_env.trial_driver_resources(study.resources.driver_cpus))
    previous = _latest_experiment(output)
    progress = TuneProgress(study.num_samples, echo, already_finished=finished_ids)

    ended = len([t for t in counted_trials(optuna_study) if t.state.is_finished()])
    if ended >= study.num_samples:
        echo(f"all {study.num_samples} trial(s) of tuning study {study.name} are already finished")
        _write_study_file(study, output)
        return

    stored = _read_json(output / STUDY_FILE)
    same_budget = stored is not None and stored.get("num_samples") == study.num_samples
    if previous is not None and same_budget and tune.Tuner.can_restore(str(previous)):
        echo(f"resuming: restoring the Tune experiment {previous.name} "
             f"({_describe_counts(optuna_study)} so far)")
        progress.finished = ended
        if finished_ids:
            echo(f"trials that ended before the interruption keep their outcome: {', '.join(sorted(finished_ids))}")
        tuner = tune.Tuner.restore(str(previous), trainable=trainable, resume_unfinished=True,
                                   resume_errored=False, restart_errored=False)
        # The restored run config contains unpickled copies of the interrupted run's callbacks, whose
        # output goes elsewhere. NOTE: Ray 2.60 has no public way to replace them on restore.
        tuner._local_tuner.get_run_config().callbacks = [progress]
        _write_study_file(study, output)
        tuner.fit()
        return

    interrupted = fail_orphaned_trials(optuna_study)
    if interrupted:
        echo(f"marked {len(interrupted)} interrupted Optuna trial(s) as FAIL; they do not count toward num_samples")
    done = len(counted_trials(optuna_study))
    remaining = study.num_samples - done
    if remaining <= 0:
        echo(f"all {study.num_samples} trial(s) of tuning study {study.name} are already finished")
        _write_study_file(study, output)
        return
    if done:
        echo(f"resuming: {done} trial(s) of {study.num_samples} already in {output / STORAGE_FILE}; "
             f"running {remaining} more")
    progress.finished = done

    config = study.pipeline_config(study.seed)
    spec = TrialSpec(method=study.method, dataset=study.dataset.name, seed=study.seed, pipeline=config.to_dict(),
                     num_workers=study.resources.num_workers, cpus_per_worker=study.resources.cpus_per_worker,
                     use_gpu=study.resources.use_gpu, gpus_per_worker=study.resources.gpus_per_worker,
                     storage_path=str(output / "ray"))
    # Seeded with the number of trials so far, so a continued study does not replay the random
    # startup draws of the interrupted run, and a rerun of the same history draws the same values.
    all_trials = len(optuna_study.get_trials(deepcopy=False))
    sampler = optuna.samplers.TPESampler(seed=study.sampler_seed + all_trials, n_startup_trials=study.startup_trials)
    searcher = PruneAwareOptunaSearch(IhasSearchSpace(study.space), metric=OBJECTIVE, mode="max",
                                      sampler=sampler, study_name=study.name, storage=storage)
    scheduler = SearchStageASHA(max_t=study.scheduler_max_t(config), grace_period=study.asha.grace_period,
                                reduction_factor=study.asha.reduction_factor)
    check_resources(study.resources, ray_env.trial_driver_resources(study.resources.driver_cpus), echo)
    concurrency = study.max_concurrent_trials or _parallel_slots(study)
    name = f"{EXPERIMENT_PREFIX}{_next_experiment_index(output)}"
    echo(f"running {remaining} trial(s) of tuning study {study.name} ({study.method} on {study.dataset.name}), "
         f"up to {concurrency} at a time; Tune experiment {name}")
    tuner = tune.Tuner(
        trainable,
        param_space={"trial": spec.to_config()},
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=remaining,
                                    max_concurrent_trials=concurrency),
        run_config=tune.RunConfig(name=name, storage_path=str(output / "ray"), verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=study.max_retries),
                                  callbacks=[progress]),
    )
    _write_study_file(study, output)
    tuner.fit()


def summarize(study: TuneStudy, optuna_study: optuna.Study, output: Path, *, run_final: bool = True,
              echo: Callable[[str], None] = print) -> TuneOutcome:
    """Write best.json, trials.csv, importance.json and history.png; run the fresh final runs."""
    counts = state_counts(optuna_study)
    write_trials_csv(optuna_study, output / "trials.csv")
    plot_history(optuna_study, output / "history.png", title=f"{study.name}: validation AUC per trial")
    importance = param_importances(optuna_study)
    write_json(output / "importance.json", importance)
    echo(f"trials: {_describe_counts(optuna_study)}")
    if importance["status"] == "ok":
        echo("importance: " + ", ".join(f"{k} {v:.3f}" for k, v in importance["importances"].items()))
    else:
        echo(f"importance not computed: {importance['reason']}")

    best = best_trial(optuna_study)
    if best is None:
        payload = {"study": study.name, "status": "no complete trial with a finite validation AUC",
                   "counts": counts}
        write_json(output / BEST_FILE, payload)
        echo(f"no complete trial with a finite validation AUC; {output / BEST_FILE} says so")
        return TuneOutcome(output_dir=output, counts=counts, best=None)

    params = {name: best.params[name] for name in PARAM_NAMES}
    payload: dict[str, Any] = {
        "study": study.name, "status": "ok", "method": study.method, "dataset": study.dataset.name,
        "objective": OBJECTIVE, "valid_auc": best.value, "params": params,
        "pipeline_overrides": to_overrides(params), "optuna_trial": best.number,
        "tune_trial_id": best.user_attrs.get("tune_trial_id", ""), "counts": counts,
        "pipeline_config": study.pipeline_config(study.seed, params).to_dict(),
    }
    write_json(output / BEST_FILE, payload)
    echo(f"best: trial {best.number}, validation AUC {best.value:.4f}, "
         + ", ".join(f"{k}={_fmt_param(v)}" for k, v in params.items()))

    rows: list[dict[str, Any]] = []
    if run_final:
        rows = run_final_seeds(study, params, output, echo)
        payload["final"] = final_summary(rows, study.final_seeds)
        write_json(output / BEST_FILE, payload)
    return TuneOutcome(output_dir=output, counts=counts, best=payload, final_rows=rows)


def run_final_seeds(study: TuneStudy, params: Mapping[str, Any], output: Path,
                    echo: Callable[[str], None]) -> list[dict[str, Any]]:
    """Run the best config afresh over `final_seeds` through the ablation runner; return its rows."""
    echo(f"fresh runs of the best config over seeds {list(study.final_seeds)}")
    wait_for_released_resources(echo)
    final = Study(name=f"{study.name}-final", version=study.version,
                  description=f"fresh runs of the best config of tuning study {study.name}",
                  datasets=(DatasetSpec(name=study.dataset.name, path=study.dataset.path),),
                  methods=(study.method,), seeds=tuple(study.final_seeds), resources=study.resources,
                  max_concurrent_trials=study.max_concurrent_trials, max_retries=study.max_retries,
                  overrides=dict(study.overrides))
    # The same path as `python -m ablations --params-from best.json`.
    final = apply_params(final, params)
    outcome = run_study(final, output / "final", echo=echo)
    return [dict(row) for row in outcome.rows]


def wait_for_released_resources(echo: Callable[[str], None], timeout_s: float = 60.0) -> None:
    """Wait until every CPU and GPU of the cluster is free again, or `timeout_s` passed.

    After a search, Ray can keep a stopped trial's resources for a while: one CPU stayed in use for
    over 60 s on a loaded 2-core machine. A Train run started meanwhile waits for its workers and
    fails after RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S (60 s by default in Ray 2.60). On a cluster
    shared with other jobs the wait ends at the timeout, and the runs start anyway.
    """
    deadline = time.monotonic() + timeout_s
    announced = False
    while time.monotonic() < deadline:
        total, free = ray.cluster_resources(), ray.available_resources()
        busy = {key: total[key] - free.get(key, 0.0) for key in ("CPU", "GPU")
                if total.get(key, 0.0) - free.get(key, 0.0) > 1e-6}
        if not busy:
            return
        if not announced:
            echo(f"waiting up to {timeout_s:.0f} s for Ray to release the resources of stopped trials "
                 f"(in use: {', '.join(f'{v:g} {k}' for k, v in busy.items())})")
            announced = True
        time.sleep(1.0)


def final_summary(rows: list[Mapping[str, Any]], seeds: tuple[int, ...]) -> dict[str, Any]:
    """Test metrics of the fresh runs: per seed, and mean and sample std over the finished seeds."""
    per_seed = {int(row["seed"]): row for row in rows}
    summary: dict[str, Any] = {"seeds": list(seeds), "per_seed": {}}
    for seed in seeds:
        row = per_seed.get(seed)
        summary["per_seed"][str(seed)] = {
            "status": row.get("status") if row else "missing",
            "test_auc": _finite(row.get("test_auc")) if row else None,
            "test_logloss": _finite(row.get("test_logloss")) if row else None,
            "valid_auc": _finite(row.get("valid_auc")) if row else None,
        }
    for metric in ("test_auc", "test_logloss"):
        values = [v[metric] for v in summary["per_seed"].values() if v[metric] is not None]
        summary[f"{metric}_mean"] = statistics.fmean(values) if values else None
        summary[f"{metric}_std"] = statistics.stdev(values) if len(values) > 1 else None
    return summary


def _check_same_study(study: TuneStudy, output: Path) -> None:
    stored = _read_json(output / STUDY_FILE)
    if stored is None:
        return
    if stored.get("identity") != _jsonable(study.identity()):
        raise TuneStudyError(
            f"{output} contains tuning study {stored.get('identity', {}).get('name')!r} with other settings "
            f"(see {output / STUDY_FILE}); continue it with the same study file, or pass another --output")


def _write_study_file(study: TuneStudy, output: Path) -> None:
    write_json(output / STUDY_FILE, {"identity": _jsonable(study.identity()), "num_samples": study.num_samples,
                                     "study": study.to_dict()})


def _latest_experiment(output: Path) -> Path | None:
    runs = sorted((output / "ray").glob(f"{EXPERIMENT_PREFIX}*"), key=lambda p: _experiment_index(p))
    runs = [p for p in runs if _experiment_index(p) >= 0]
    return runs[-1] if runs else None


def _next_experiment_index(output: Path) -> int:
    latest = _latest_experiment(output)
    return 0 if latest is None else _experiment_index(latest) + 1


def _experiment_index(path: Path) -> int:
    suffix = path.name[len(EXPERIMENT_PREFIX):]
    return int(suffix) if suffix.isdigit() else -1


def _parallel_slots(study: TuneStudy) -> int:
    probe = Study(name=study.name, version=1, description="", datasets=(study.dataset,), methods=(study.method,),
                  seeds=(study.seed,), resources=study.resources)
    return max_parallel_trials(probe, ray_env.trial_driver_resources(study.resources.driver_cpus))


def _describe_counts(optuna_study: optuna.Study) -> str:
    counts = state_counts(optuna_study)
    return ", ".join(f"{n} {state.lower()}" for state, n in counts.items() if n)  or "no trials"


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def _finite(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _fmt_param(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
