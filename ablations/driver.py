"""Orchestration of one study: datasets into the object store, trials through Ray Tune, results, table.

`run_study` skips the trials that `results.parquet` already lists as finished, runs the others as
parallel Tune trials (each one Ray Train run), records every finished or finally failed trial at
once, prints one line per trial event, and writes `table.md`, the figures and a `README.md` that
links them at the end.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import ray
from ray import tune

from ihas.atomic import atomic_write_text
from ablations import ray_env
from ablations.figures import README_FILE, render_readme, write_figures
from ablations.results import CSV_FILE, PARQUET_FILE, STATUS_FAILED, STATUS_OK, ResultsStore
from ablations.study import DatasetSpec, Study
from ablations.table import render_selection, render_table
from ablations.transfer_table import render_transfer_table
from ablations.trial import DONE_KEY, TrialSpec, run_trial, trial_name
from ihas.data.dataset import METADATA_FILE, PreparedDataset, load_prepared

TABLE_FILE = "table.md"
SELECTION_FILE = "selection.md"  # written when methods report what they selected (the baselines do)
ERRORS_DIR = "errors"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass
class StudyOutcome:
    """Summary of one `run_study` call: trials run and skipped, the rows of every trial, and the table text."""

    output_dir: Path
    ran: int
    skipped: int
    failed: int
    table: str
    rows: list[dict[str, Any]] = field(default_factory=list)


def run_study(study: Study, output_dir: str | os.PathLike[str], *, address: str | None = None,
              storage_path: str | None = None, extra_overrides: Mapping[str, Any] | None = None,
              echo: Callable[[str], None] = print) -> StudyOutcome:
    """Run every trial of `study` not yet finished in `output_dir`, then write and return the table."""
    output = Path(output_dir).resolve()
    output.mkdir(parents=True, exist_ok=True)
    store = ResultsStore(output)
    done = store.completed_keys()

    paths = {spec.name: locate_dataset(spec, echo) for spec in study.datasets}
    echo(ray_env.init_ray(address))
    datasets = {name: load_prepared(path) for name, path in paths.items()}
    refs = {name: {"ref": ray.put(data)} for name, data in datasets.items()}

    storage = storage_path or str(output / "ray")
    specs: list[TrialSpec] = []
    skipped = 0
    for dataset in datasets:
        for method in study.methods:
            for seed in study.seeds:
                if (method, dataset, seed) in done:
                    skipped += 1
                    continue
                config = study.pipeline_config(method, seed, extra_overrides)
                specs.append(TrialSpec(
                    method=method, dataset=dataset, seed=seed, pipeline=config.to_dict(),
                    num_workers=study.resources.num_workers, cpus_per_worker=study.resources.cpus_per_worker,
                    use_gpu=study.resources.use_gpu, gpus_per_worker=study.resources.gpus_per_worker,
                    storage_path=storage, models_dir=str(output / "models"),
                    overrides=dict(extra_overrides or {})))
    if skipped:
        echo(f"resuming: {skipped} finished trial(s) found in {output}, skipping them")

    if specs:
        driver_resources = ray_env.trial_driver_resources(study.resources.driver_cpus)
        concurrency = study.max_concurrent_trials or max_parallel_trials(study, driver_resources)
        echo(f"running {len(specs)} trial(s) of study {study.name}, up to {concurrency} at a time")
        progress = ProgressCallback(store, datasets, study.max_retries, len(specs), output, echo)
        trainable = tune.with_parameters(run_trial, datasets=refs)
        trainable = tune.with_resources(trainable, driver_resources)
        tuner = tune.Tuner(
            trainable,
            param_space={"trial": tune.grid_search([spec.to_config() for spec in specs])},
            tune_config=tune.TuneConfig(num_samples=1, max_concurrent_trials=concurrency),
            run_config=tune.RunConfig(
                name=f"{study.name}-{time.strftime('%Y%m%d-%H%M%S')}",
                storage_path=storage,
                verbose=0,
                failure_config=tune.FailureConfig(max_failures=study.max_retries),
                callbacks=[progress],
            ),
        )
        tuner.fit()
        for spec in specs:
            # A trial that Tune ended without calling back (for example when it was never started)
            # must still appear in the table.
            if (spec.method, spec.dataset, spec.seed) not in store.rows:
                progress.record_failure(spec, "the trial ended without reporting a result", attempts=0)
        failed = progress.failed
    else:
        echo(f"all {skipped} trial(s) of study {study.name} are already finished")
        failed = 0

    table = render_table(study, store.rows.values())
    transfer = render_transfer_table(study, store.rows.values())
    if transfer is not None:
        table = f"{table.rstrip()}\n\n{transfer}"
    _write_text(output / TABLE_FILE, table)
    selection = render_selection(study, store.rows.values())
    if selection is not None:
        _write_text(output / SELECTION_FILE, selection)
    write_results_readme(study, output, list(store.rows.values()), datasets, has_selection=selection is not None)
    return StudyOutcome(output_dir=output, ran=len(specs), skipped=skipped, failed=failed, table=table,
                        rows=list(store.rows.values()))


def write_results_readme(study: Study, output: Path, rows: list[dict[str, Any]],
                         datasets: Mapping[str, PreparedDataset], *, has_selection: bool) -> None:
    """Draw the study's figures into `output` and write the `README.md` that lists every result file."""
    figures = write_figures(output, rows, methods=study.methods, datasets=datasets, models_dir=output / "models",
                            name_of=lambda method, dataset, seed: trial_name(
                                TrialSpec(method=method, dataset=dataset, seed=seed, pipeline={})))
    files = [(TABLE_FILE, "test AUC and logloss per method and dataset (mean ± std over seeds), beside "
                          "published figures where the study lists them")]
    if has_selection:
        files.append((SELECTION_FILE, "what each baseline selected (fields, dims), per dataset and seed"))
    files += [(PARQUET_FILE, "one row per trial: metrics, config, seed, dataset fingerprint, parameter "
                             "count, wall time, status and error"),
              (CSV_FILE, f"the rows of {PARQUET_FILE} as CSV"),
              ("models/", "per trial, the saved model (model.pt and model.json) or a baseline's selection.json")]
    if (output / "ray").is_dir():
        files.append(("ray/", "Ray Tune's experiment state and the Train checkpoints of the trials; "
                              "the study resumes from results.parquet, so this folder can go once the study is done"))
    if (output / ERRORS_DIR).is_dir():
        files.append((f"{ERRORS_DIR}/", "the full error of each failed trial"))
    text = render_readme(study.name, study.description, figures, files)
    _write_text(output / README_FILE, text)


def locate_dataset(spec: DatasetSpec, echo: Callable[[str], None] = print) -> Path:
    """Return the prepared directory of `spec`, running `ihas prepare` first when it has a preset and is missing."""
    path = Path(spec.path)
    if (path / METADATA_FILE).is_file():
        return path
    if spec.preset is None:
        raise FileNotFoundError(
            f"dataset {spec.name!r}: {path} contains no prepared dataset ({METADATA_FILE} missing). "
            f"Run `ihas prepare --preset PRESET --input RAW_FILE --output {path}`, pass another directory "
            f"with --data, or give the study's [datasets.{spec.name}] a preset.")
    command = [sys.executable, "-m", "ihas.cli", "prepare", "--preset", spec.preset, "--output", str(path)]
    if spec.input:
        command[6:6] = ["--input", spec.input]
    echo(f"preparing dataset {spec.name}: {' '.join(command[2:])}")
    subprocess.run(command, check=True)
    return path


def max_parallel_trials(study: Study, driver_resources: Mapping[str, float]) -> int:
    """Return how many trials the connected cluster can run at once: Train workers plus the trial's driver."""
    resources = ray.cluster_resources()
    need = study.resources
    cpus_per_trial = need.num_workers * need.cpus_per_worker + driver_resources.get("cpu", 0)
    slots = math.floor(resources.get("CPU", 0) / cpus_per_trial + 1e-9)
    if need.use_gpu:
        slots = min(slots, math.floor(resources.get("GPU", 0) / (need.num_workers * need.gpus_per_worker) + 1e-9))
    return max(1, slots)


class ProgressCallback(tune.Callback):
    """Records each finished or finally failed trial in the store at once and prints one line per event."""

    def __init__(self, store: ResultsStore, datasets: Mapping[str, PreparedDataset], max_retries: int,
                 total: int, output: Path, echo: Callable[[str], None]) -> None:
        self.store = store
        self.datasets = datasets
        self.max_retries = max_retries
        self.total = total
        self.output = output
        self.echo = echo
        self.started_at: dict[str, float] = {}
        self.finished = 0
        self.failed = 0

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.started_at[trial.trial_id] = time.time()
        self.echo(f"[{self.finished}/{self.total}] started   {_spec(trial).label}")

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        error = _error_text(trial)
        self.echo(f"[{self.finished}/{self.total}] retrying  {_spec(trial).label} "
                  f"(attempt {trial.num_failures + 1} of {self.max_retries + 1}) after: {_last_line(error)}")

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        spec = _spec(trial)
        result = dict(trial.last_result or {})
        if not result.get(DONE_KEY):
            self.record_failure(spec, "the Train run ended without the pipeline's final metrics",
                                attempts=trial.num_failures + 1)
            return
        wall = time.time() - self.started_at.get(trial.trial_id, time.time())
        row = self._row(spec, STATUS_OK, "", attempts=trial.num_failures + 1)
        metrics = {k: v for k, v in result.items() if k not in _TUNE_BOOKKEEPING and not isinstance(v, dict)}
        row.update(metrics)
        row["inference_s"] = result.get("inference_seconds")
        row["wall_s"] = wall
        row["train_overhead_s"] = wall - float(result.get("pipeline_s", 0.0))
        row.pop(DONE_KEY, None)
        self.store.record(row)
        self.finished += 1
        self.echo(f"[{self.finished}/{self.total}] finished  {spec.label}: test AUC {_fmt(result.get('test_auc'))}, "
                  f"logloss {_fmt(result.get('test_logloss'))}, {wall:.0f} s")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.record_failure(_spec(trial), _error_text(trial), attempts=trial.num_failures)

    def record_failure(self, spec: TrialSpec, error: str, attempts: int) -> None:
        errors_dir = self.output / ERRORS_DIR
        errors_dir.mkdir(parents=True, exist_ok=True)
        error_file = errors_dir / f"{trial_name(spec)}.txt"
        _write_text(error_file, error)
        self.store.record(self._row(spec, STATUS_FAILED, _last_line(error), attempts=attempts))
        self.finished += 1
        self.failed += 1
        self.echo(f"[{self.finished}/{self.total}] FAILED    {spec.label} after {attempts} attempt(s): "
                  f"{_last_line(error)} (full error in {error_file})")

    def _row(self, spec: TrialSpec, status: str, error: str, attempts: int) -> dict[str, Any]:
        data = self.datasets.get(spec.dataset)
        return {"method": spec.method, "dataset": spec.dataset, "seed": spec.seed, "status": status,
                "error": error, "dataset_fingerprint": data.fingerprint if data is not None else "",
                "attempts": attempts, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "config": {"pipeline": dict(spec.pipeline), "overrides": dict(spec.overrides),
                           "num_workers": spec.num_workers, "use_gpu": spec.use_gpu}}


# Keys that Tune adds to every result; they describe the last report, not the trial.
_TUNE_BOOKKEEPING = {"timestamp", "checkpoint_dir_name", "done", "training_iteration", "trial_id", "date",
                     "time_this_iter_s", "time_total_s", "pid", "hostname", "node_ip", "time_since_restore",
                     "iterations_since_restore", "experiment_tag", "config", "checkpoint_path", "should_checkpoint",
                     "stage", "epoch"}


def _spec(trial: Any) -> TrialSpec:
    return TrialSpec.from_config(trial.config["trial"])


def _error_text(trial: Any) -> str:
    error = trial.get_error()
    text = str(error) if error is not None else "unknown error (Ray Tune kept no error for this trial)"
    return _ANSI.sub("", text)


def _last_line(text: str) -> str:
    """Return the exception line of a traceback (its last non-empty line)."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else text


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else "n/a"


def _write_text(path: Path, text: str) -> None:
    atomic_write_text(path, text)
