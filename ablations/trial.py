"""Trials on Ray: a run of one or more trials, executed in turn inside a single Ray Train run.

A trial is one method on one dataset with one seed (`TrialSpec`). Starting a Ray Train run costs
several new processes (Train controller, workers, helpers), seconds each on a small machine, so a
study packs its trials into runs (see `ablations.grouping`). The Tune function `run_trials` builds
one `TorchTrainer` per run. Its workers take the prepared datasets from Ray's object store
(zero-copy, read-only arrays) and call `ihas.pipeline.run_pipeline` once per trial of the run.

Each report reaches the Tune trial of the run through `TuneReportCallback`, tagged with the
trial's index in the run (`ablations.reporter.TRIAL_INDEX_KEY`). A trial sends a `started` event,
every epoch's metrics, and a final report with `trial_done = 1` and either its metrics or its error. After each
finished trial the run checkpoints which trials it has finished, so a run that Ray restarts skips
them and resumes the interrupted one from its last stage checkpoint.

With one Train worker, a trial that raises is retried inside the same run (`max_retries` times) and
then reported as failed, and the run goes on with its next trial. With several workers an error
ends the run, because the other workers would wait for it in a collective operation; Tune then
retries the run, which resumes at the failed trial. The run's checkpoint counts each trial's
attempts, so a trial that has used `max_retries + 1` attempts is reported as failed when the run
starts again, and the run goes on with the next trial.
"""

from __future__ import annotations

import logging
import resource
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import ray
import ray.train
import torch
from ray import tune
from ray.train.torch import TorchTrainer
from ray.tune.integration.ray_train import TuneReportCallback

from ablations.reporter import RayTrainReporter, TrialRunReporter
from ihas.config import PipelineConfig

logger = logging.getLogger(__name__)

DONE_KEY = "trial_done"
EVENT_KEY = "trial_event"  # "started" or "retrying"; absent on epoch and final reports
STATUS_KEY = "trial_status"  # on the final report: "ok" or "failed"
ERROR_KEY = "trial_error"  # on a "retrying" event (last line) and a failed final report (traceback)
ATTEMPTS_KEY = "trial_attempts"  # on the final report and "retrying" events
EVENT_STARTED = "started"
EVENT_RETRYING = "retrying"


@dataclass(frozen=True)
class TrialSpec:
    """Settings of one trial, as plain values that travel in a Tune config."""

    method: str
    dataset: str
    seed: int
    pipeline: Mapping[str, Any]  # PipelineConfig.to_dict() with variant and seed set
    num_workers: int = 1
    cpus_per_worker: float = 1.0
    use_gpu: bool = False
    gpus_per_worker: float = 1.0
    storage_path: str = ""  # where Ray Train keeps the run's checkpoints; empty: Ray's default
    models_dir: str = ""  # where rank 0 writes the routed model; empty: not written
    overrides: Mapping[str, Any] = field(default_factory=dict)  # recorded with the results only

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.method, self.dataset, self.seed)

    @property
    def label(self) -> str:
        return f"{self.method} on {self.dataset}, seed {self.seed}"

    def to_config(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "TrialSpec":
        return cls(**config)


def run_config(specs: Sequence[TrialSpec], max_retries: int = 0, catch_errors: bool = True,
               min_report_interval_s: float = 0.0) -> dict[str, Any]:
    """Return the Tune config of a run that executes `specs` in order.

    All trials of a run share its Train workers, so they must ask for the same resources.
    `max_retries` counts the extra attempts of a failing trial inside the run. With `catch_errors`
    false, or with several workers, a trial's error ends the run instead, and Tune handles it.
    `min_report_interval_s` > 0 folds the per-epoch reports of one-worker runs that come sooner
    than that after the last one (see `ablations.reporter.TrialRunReporter`).
    """
    if not specs:
        raise ValueError("a run needs at least one trial")
    first = specs[0]
    for spec in specs[1:]:
        if (spec.num_workers, spec.cpus_per_worker, spec.use_gpu, spec.gpus_per_worker, spec.storage_path) != (
                first.num_workers, first.cpus_per_worker, first.use_gpu, first.gpus_per_worker, first.storage_path):
            raise ValueError(f"trials {first.label} and {spec.label} ask for different resources or storage; "
                             "put them in separate runs")
    if min_report_interval_s < 0:
        raise ValueError(f"min_report_interval_s must be >= 0, got {min_report_interval_s}")
    return {"trials": [spec.to_config() for spec in specs], "max_retries": int(max_retries),
            "catch_errors": bool(catch_errors), "min_report_interval_s": float(min_report_interval_s)}


def run_specs(config: Mapping[str, Any]) -> list[TrialSpec]:
    """Return the trials of the run described by `config["run"]`, in their order."""
    return [TrialSpec.from_config(trial) for trial in config["run"]["trials"]]


def run_trials(config: Mapping[str, Any], datasets: Mapping[str, Mapping[str, Any]]) -> None:
    """Run the trials of `config["run"]` (see `run_config`) in one Ray Train run; a Tune function trainable.

    `datasets` maps a dataset name to `{"ref": ObjectRef}` of its `PreparedDataset`. The dict around
    the reference keeps Ray from resolving it before it reaches the Train workers.
    """
    specs = run_specs(config)
    missing = sorted({spec.dataset for spec in specs} - set(datasets))
    if missing:
        raise ValueError(f"dataset(s) {missing} were not put in the object store; known: {sorted(datasets)}")
    first = specs[0]
    trial_id = tune.get_context().get_trial_id()
    worker_resources: dict[str, float] = {"CPU": first.cpus_per_worker}
    if first.use_gpu:
        worker_resources["GPU"] = first.gpus_per_worker
    trainer = TorchTrainer(
        train_loop_per_worker=train_loop,
        train_loop_config={"run": dict(config["run"]),
                           "data": {name: datasets[name] for name in {spec.dataset for spec in specs}}},
        scaling_config=ray.train.ScalingConfig(num_workers=first.num_workers, use_gpu=first.use_gpu,
                                               resources_per_worker=worker_resources),
        run_config=ray.train.RunConfig(
            # Named after the Tune trial, so that a retried run finds its own checkpoints.
            name=f"train-{trial_id}",
            storage_path=first.storage_path or None,
            callbacks=[TuneReportCallback()],
            # Worker errors go straight to Tune, which retries the whole run. A worker request
            # that the cluster can never satisfy fails after one controller retry, not forever.
            failure_config=ray.train.FailureConfig(max_failures=0, controller_failure_limit=1),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1),
        ),
    )
    trainer.fit()


def train_loop(config: Mapping[str, Any]) -> None:
    """Ray Train worker body: run each trial of the run that is not finished yet, in order."""
    from ihas.pipeline import run_pipeline  # imported here so that a study can be loaded without it

    specs = run_specs(config)
    max_retries = int(config["run"].get("max_retries", 0))
    context = ray.train.get_context()
    one_worker = context.get_world_size() == 1
    # Ablation runs count attempts per trial, across restarts of the run too; the tuning runner
    # passes catch_errors=False and leaves every retry to Tune.
    count_attempts = bool(config["run"].get("catch_errors", True))
    catch_errors = count_attempts and one_worker
    interval = float(config["run"].get("min_report_interval_s", 0.0)) if one_worker else 0.0
    reporter = TrialRunReporter(RayTrainReporter(), min_interval_s=interval)
    datasets = {name: ray.get(wrapper["ref"]) for name, wrapper in config["data"].items()}
    torch.set_num_threads(max(1, int(specs[0].cpus_per_worker)))

    for index, spec in enumerate(specs):
        if reporter.is_finished(index):
            continue
        reporter.begin(index)
        pipeline_config = PipelineConfig.from_dict(spec.pipeline)
        if spec.use_gpu:
            pipeline_config = pipeline_config.replace(device=str(ray.train.torch.get_device()))
        output_dir = None
        if spec.models_dir and context.get_world_rank() == 0:
            # NOTE: on a multi-node cluster this directory is on the node that ran rank 0.
            output_dir = Path(spec.models_dir) / trial_name(spec)
        while True:
            attempt = reporter.start_attempt()
            if count_attempts and attempt > max_retries + 1:
                # Every allowed attempt ended the run (several workers, or a worker that died); the
                # driver has the last error from Tune's retry of the run.
                reporter.finish({DONE_KEY: 1, STATUS_KEY: "failed", ERROR_KEY: "", ATTEMPTS_KEY: attempt - 1})
                break
            reporter.event({EVENT_KEY: EVENT_STARTED, ATTEMPTS_KEY: attempt})
            start = time.perf_counter()
            try:
                metrics = run_pipeline(pipeline_config, datasets[spec.dataset], reporter=reporter,
                                       output_dir=output_dir)
            except Exception as error:  # noqa: BLE001  (any trial error is recorded, then the run goes on)
                if not catch_errors:
                    raise
                text = traceback.format_exc()
                if attempt <= max_retries:
                    logger.warning("trial %s failed (attempt %d of %d), retrying: %s", spec.label, attempt,
                                   max_retries + 1, error)
                    reporter.restart_trial()
                    reporter.event({EVENT_KEY: EVENT_RETRYING, ATTEMPTS_KEY: attempt + 1, ERROR_KEY: last_line(text)})
                    continue
                reporter.finish({DONE_KEY: 1, STATUS_KEY: "failed", ERROR_KEY: text, ATTEMPTS_KEY: attempt})
                break
            final = _scalars(metrics)
            final["pipeline_s"] = time.perf_counter() - start
            final["report_s"] = reporter.report_seconds
            final["reports_folded"] = reporter.reports_folded
            final["peak_rss_mb"] = peak_rss_mb()
            final.update({DONE_KEY: 1, STATUS_KEY: "ok", ATTEMPTS_KEY: attempt})
            reporter.finish(final)
            break


def trial_name(spec: TrialSpec) -> str:
    return f"{spec.method}-{spec.dataset}-seed{spec.seed}"


def last_line(text: str) -> str:
    """Return the exception line of a traceback (its last non-empty line)."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else text


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def _scalars(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """Keep the metrics that fit one table cell; numpy and torch scalars become Python numbers."""
    kept: dict[str, Any] = {}
    for key, value in metrics.items():
        if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
            value = value.item()
        if isinstance(value, (bool, int, float, str)):
            kept[key] = value
    return kept
