"""One trial: one method on one dataset with one seed, run as a single Ray Train run inside a Tune trial.

The Tune function `run_trial` builds one `TorchTrainer` per trial. Its workers take the prepared
dataset from Ray's object store (zero-copy, read-only arrays), build the `PipelineConfig` and call
`ihas.pipeline.run_pipeline` once, so all stages run in order inside one Train run and its start
cost is paid once per trial. Every epoch's metrics reach the trial through `TuneReportCallback`;
the last report carries the pipeline's final metrics with `trial_done = 1`.

`TrialSpec` is the part other runners reuse (the tuning runner builds specs with its own
overrides): method name, dataset name, seed and the full pipeline config as a dict.
"""

from __future__ import annotations

import resource
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

import ray
import ray.train
import torch
from ray import tune
from ray.train.torch import TorchTrainer
from ray.tune.integration.ray_train import TuneReportCallback

from ablations.reporter import RayTrainReporter
from ihas.config import PipelineConfig

DONE_KEY = "trial_done"


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
    storage_path: str = ""  # where Ray Train keeps this trial's checkpoints; empty: Ray's default
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


def run_trial(config: Mapping[str, Any], datasets: Mapping[str, Mapping[str, Any]]) -> None:
    """Tune function trainable: run the trial in `config["trial"]` as one Ray Train run.

    `datasets` maps a dataset name to `{"ref": ObjectRef}` of its `PreparedDataset`. The dict around
    the reference keeps Ray from resolving it before it reaches the Train workers.
    """
    spec = TrialSpec.from_config(config["trial"])
    if spec.dataset not in datasets:
        raise ValueError(f"dataset {spec.dataset!r} was not put in the object store; known: {sorted(datasets)}")
    trial_id = tune.get_context().get_trial_id()
    worker_resources: dict[str, float] = {"CPU": spec.cpus_per_worker}
    if spec.use_gpu:
        worker_resources["GPU"] = spec.gpus_per_worker
    trainer = TorchTrainer(
        train_loop_per_worker=train_loop,
        train_loop_config={"trial": spec.to_config(), "data": datasets[spec.dataset]},
        scaling_config=ray.train.ScalingConfig(num_workers=spec.num_workers, use_gpu=spec.use_gpu,
                                               resources_per_worker=worker_resources),
        run_config=ray.train.RunConfig(
            # Named after the Tune trial, so that a retried trial finds its own checkpoints.
            name=f"train-{trial_id}",
            storage_path=spec.storage_path or None,
            callbacks=[TuneReportCallback()],
            # Worker errors go straight to Tune, which retries the whole trial. A worker request
            # that the cluster can never satisfy fails after one controller retry, not forever.
            failure_config=ray.train.FailureConfig(max_failures=0, controller_failure_limit=1),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1),
        ),
    )
    trainer.fit()


def train_loop(config: Mapping[str, Any]) -> None:
    """Ray Train worker body: run the whole pipeline of one trial and report its final metrics."""
    from ihas.pipeline import run_pipeline  # imported here so that a study can be loaded without it

    spec = TrialSpec.from_config(config["trial"])
    data = ray.get(config["data"]["ref"])
    context = ray.train.get_context()
    torch.set_num_threads(max(1, int(spec.cpus_per_worker)))

    pipeline_config = PipelineConfig.from_dict(spec.pipeline)
    if spec.use_gpu:
        pipeline_config = pipeline_config.replace(device=str(ray.train.torch.get_device()))
    output_dir = None
    if spec.models_dir and context.get_world_rank() == 0:
        # NOTE: on a multi-node cluster this directory is on the node that ran rank 0.
        output_dir = Path(spec.models_dir) / trial_name(spec)

    reporter = RayTrainReporter()
    start = time.perf_counter()
    metrics = run_pipeline(pipeline_config, data, reporter=reporter, output_dir=output_dir)
    final = _scalars(metrics)
    final["pipeline_s"] = time.perf_counter() - start
    final["peak_rss_mb"] = peak_rss_mb()
    final[DONE_KEY] = 1
    reporter.report(final)


def trial_name(spec: TrialSpec) -> str:
    return f"{spec.method}-{spec.dataset}-seed{spec.seed}"


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
