"""Orchestration of one study: datasets into the object store, trials through Ray Tune, results, table.

`run_study` skips the trials that `results.parquet` already lists as finished, packs the others
into Ray Train runs (`ablations.grouping`), runs those as parallel Tune trials, records every
finished or finally failed trial at once, prints one line per trial event, and writes `table.md`,
the figures and a `README.md` that links them at the end.
"""

from __future__ import annotations

import math
import os
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
from ablations.grouping import count_runs, pack_trials
from ablations.progress import ERRORS_DIR, ProgressCallback
from ablations.results import CSV_FILE, PARQUET_FILE, ResultsMismatchError, ResultsStore
from ablations.study import DatasetSpec, Resources, Study
from ablations.table import render_selection, render_table
from ablations.transfer_table import render_transfer_table
from ablations.trial import TrialSpec, run_config, run_trials, trial_name
from ihas.data.dataset import METADATA_FILE, PreparedDataset, load_prepared

TABLE_FILE = "table.md"
SELECTION_FILE = "selection.md"  # written when methods report what they selected (the baselines do)


@dataclass
class StudyOutcome:
    """Summary of one `run_study` call: trials run and skipped, the rows of every trial, and the table text."""

    output_dir: Path
    ran: int
    skipped: int
    failed: int
    table: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    interrupted: bool = False  # stopped (Ctrl-C) before every trial finished; a rerun resumes


def run_study(study: Study, output_dir: str | os.PathLike[str], *, address: str | None = None,
              storage_path: str | None = None, extra_overrides: Mapping[str, Any] | None = None,
              echo: Callable[[str], None] = print) -> StudyOutcome:
    """Run every trial of `study` not yet finished in `output_dir`, then write and return the table.

    Raises `ResultsMismatchError` before starting Ray when `output_dir` contains finished trials of this
    study that were run with other settings or on other data, and `InfeasibleResourcesError` when
    the embedded local Ray cannot hold one trial.
    """
    output = Path(output_dir).resolve()
    paths = {spec.name: locate_dataset(spec, echo) for spec in study.datasets}
    datasets = {name: load_prepared(path) for name, path in paths.items()}
    store = ResultsStore(output)
    specs, skipped = _plan_trials(study, datasets, store, output, storage_path, extra_overrides)
    output.mkdir(parents=True, exist_ok=True)

    echo(ray_env.init_ray(address))
    if skipped:
        echo(f"resuming: {skipped} finished trial(s) found in {output}, skipping them")
    interrupted = False
    failed = 0
    if specs:
        driver_resources = ray_env.trial_driver_resources(study.resources.driver_cpus)
        check_resources(study.resources, driver_resources, echo)
        refs = {name: {"ref": ray.put(data)} for name, data in datasets.items()}
        concurrency = study.max_concurrent_trials or max_parallel_trials(study, driver_resources)
        runs = pack_trials(specs, count_runs(len(specs), concurrency, study.trials_per_run,
                                             embedded=ray_env.is_embedded()))
        echo(f"running {len(specs)} trial(s) of study {study.name} in {len(runs)} Ray Train run(s), "
             f"up to {min(concurrency, len(runs))} at a time")
        progress = ProgressCallback(store, datasets, study.max_retries, len(specs), output, echo)
        run_configs = [run_config(run, study.max_retries, min_report_interval_s=study.min_report_interval_s)
                       for run in runs]
        trainable = tune.with_parameters(run_trials, datasets=refs)
        trainable = tune.with_resources(trainable, driver_resources)
        tuner = tune.Tuner(
            trainable,
            param_space={"run": tune.grid_search(run_configs)},
            tune_config=tune.TuneConfig(num_samples=1, max_concurrent_trials=concurrency),
            run_config=tune.RunConfig(
                name=f"{study.name}-{time.strftime('%Y%m%d-%H%M%S')}",
                storage_path=str(Path(specs[0].storage_path)),
                verbose=0,
                # Tune counts failures per run; a run may need max_retries for each of its trials.
                # The runs themselves stop retrying a trial after its max_retries (see ablations.trial).
                failure_config=tune.FailureConfig(max_failures=study.max_retries * max(len(run) for run in runs)),
                callbacks=[progress],
            ),
        )
        tuner.fit()
        # Tune reports every run as complete or failed, unless the study was stopped (Ctrl-C): then
        # it stops the runs without either call, and their unfinished trials are left to a rerun.
        interrupted = len(progress.ended_runs) < len(runs)
        unfinished = [spec for spec in specs if not progress.recorded(spec)]
        if interrupted:
            echo(f"interrupted: {len(unfinished)} trial(s) did not finish; run the same command again to "
                 "resume them")
        else:
            for spec in unfinished:
                # A trial whose run Tune ended without calling back (for example when it was never
                # started) must still appear in the table.
                progress.record_failure(spec, "the trial ended without reporting a result", attempts=0)
        failed = progress.failed
    else:
        echo(f"all {skipped} trial(s) of study {study.name} are already finished")

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
                        rows=list(store.rows.values()), interrupted=interrupted)


def _plan_trials(study: Study, datasets: Mapping[str, PreparedDataset], store: ResultsStore, output: Path,
                 storage_path: str | None, extra_overrides: Mapping[str, Any] | None) -> tuple[list[TrialSpec], int]:
    """Return the specs of the trials still to run and the number of finished ones skipped.

    A finished trial is skipped only when it ran with the same pipeline settings on the same data.
    Any other finished trial of the study raises `ResultsMismatchError`, which names what changed.
    """
    done = store.completed_keys()
    storage = storage_path or str(output / "ray")
    specs: list[TrialSpec] = []
    skipped = 0
    mismatches: list[str] = []
    for dataset, data in datasets.items():
        for method in study.methods:
            for seed in study.seeds:
                config = study.pipeline_config(method, seed, extra_overrides)
                if (method, dataset, seed) in done:
                    difference = store.difference((method, dataset, seed), config.to_dict(), data.fingerprint)
                    if difference is not None:
                        mismatches.append(f"{method} on {dataset}, seed {seed}: {difference}")
                    skipped += 1
                    continue
                specs.append(TrialSpec(
                    method=method, dataset=dataset, seed=seed, pipeline=config.to_dict(),
                    num_workers=study.resources.num_workers, cpus_per_worker=study.resources.cpus_per_worker,
                    use_gpu=study.resources.use_gpu, gpus_per_worker=study.resources.gpus_per_worker,
                    storage_path=storage, models_dir=str(output / "models"),
                    overrides=dict(extra_overrides or {})))
    if mismatches:
        raise ResultsMismatchError(
            f"{output} contains {len(mismatches)} finished trial(s) of this study that ran with other settings or "
            f"data (first: {mismatches[0]}). Give a new --output directory, or delete {PARQUET_FILE} "
            "there to run the study again from the start")
    return specs, skipped


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
    errors = output / ERRORS_DIR
    if errors.is_dir() and not any(errors.iterdir()):
        errors.rmdir()  # every trial that failed before has finished since
    if errors.is_dir():
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


class InfeasibleResourcesError(ValueError):
    """One trial requests more CPUs or GPUs than the embedded local Ray has."""


def check_resources(need: Resources, driver_resources: Mapping[str, float], echo: Callable[[str], None]) -> None:
    """Fail (embedded Ray) or warn (cluster) when no node can hold one Train worker, or the cluster one trial.

    A cluster with an autoscaler may still grow to fit, so there the trials wait.
    """
    nodes = [node.get("Resources", {}) for node in ray.nodes() if node.get("Alive")]
    largest_cpus = max((node.get("CPU", 0) for node in nodes), default=0)
    largest_gpus = max((node.get("GPU", 0) for node in nodes), default=0)
    total = ray.cluster_resources()
    problems = []
    if need.cpus_per_worker > largest_cpus + 1e-9:
        problems.append(f"a Train worker asks for {need.cpus_per_worker:g} CPUs (resources.cpus_per_worker) but "
                        f"the largest node has {largest_cpus:g}")
    trial_cpus = need.num_workers * need.cpus_per_worker + driver_resources.get("cpu", 0)
    if trial_cpus > total.get("CPU", 0) + 1e-9:
        problems.append(f"a trial asks for {trial_cpus:g} CPUs (num_workers x cpus_per_worker) but the cluster "
                        f"has {total.get('CPU', 0):g}")
    if need.use_gpu and need.gpus_per_worker > largest_gpus + 1e-9:
        problems.append(f"a Train worker asks for {need.gpus_per_worker:g} GPUs (resources.gpus_per_worker) but "
                        f"the largest node has {largest_gpus:g}")
    trial_gpus = need.num_workers * need.gpus_per_worker
    if need.use_gpu and trial_gpus > total.get("GPU", 0) + 1e-9:
        problems.append(f"a trial asks for {trial_gpus:g} GPUs (num_workers x gpus_per_worker) but the cluster "
                        f"has {total.get('GPU', 0):g}")
    if not problems:
        return
    text = "; ".join(problems)
    if ray_env.is_embedded():
        raise InfeasibleResourcesError(f"{text}. Lower the study's [resources], or run on a larger machine "
                                       "or a cluster (--address)")
    echo(f"warning: {text}; the trials wait until the cluster grows (an autoscaler may add nodes). "
         "Stop with Ctrl-C if it cannot")


def _write_text(path: Path, text: str) -> None:
    atomic_write_text(path, text)
