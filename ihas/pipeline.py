"""`run_pipeline`: one method on one prepared dataset with one seed, end to end and resumable.

For the iHAS variants the stages run in order (train or search, cluster, retrain, then routed
inference on the test split). Every epoch of every stage reports a checkpoint that holds the
outputs of the finished stages under `done` and the running stage's state under `current`, so a
rerun with the same reporter storage skips finished stages and continues the running one.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ihas.config import PipelineConfig, first_difference
from ihas.data.dataset import PreparedDataset
from ihas.gates import InstanceAgnosticGate, InstanceWiseGate
from ihas.models.base import CTRModel
from ihas.models.fixed_dims import build_cluster_model
from ihas.models.factory import build_backbone
from ihas.reporting import Checkpoint, LocalReporter, Reporter
from ihas.stages.cluster import ClusterResult, run_cluster
from ihas.stages.inference import RoutedModel, evaluate_routed
from ihas.stages.retrain import FALLBACK, RetrainResult, run_retrain
from ihas.stages.search import SearchResult, run_search
from ihas.training import fit
from ihas.variants import METHODS, VARIANTS, Variant, register_method

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1


def run_pipeline(config: PipelineConfig, data: PreparedDataset, reporter: Reporter | None = None,
                 output_dir: str | Path | None = None) -> dict[str, Any]:
    """Run the method named by `config.variant` and return its flat metrics dict."""
    method = METHODS.get(config.variant)
    if method is None:
        import ihas.baselines  # noqa: F401  (baselines register their names on import)
        import ihas.transfer  # noqa: F401  (so do the transfer methods)
        method = METHODS.get(config.variant)
    if method is None:
        raise ValueError(f"unknown variant or method {config.variant!r}; use one of {', '.join(sorted(METHODS))}")
    return method(config, data, reporter, output_dir)


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


def build_gate(kind: str, num_dims: int) -> nn.Module:
    if kind == "instance":
        return InstanceWiseGate(num_dims)
    if kind == "agnostic":
        return InstanceAgnosticGate(num_dims)
    raise ValueError(f"unknown gate kind {kind!r}; use 'instance' or 'agnostic'")


class StageProgress:
    """The finished stages' outputs, the run's wall time so far, and the builder of its checkpoints.

    Every checkpoint carries `elapsed_s`, the wall time of the work it keeps, so a resumed run's
    `elapsed()` adds the time before the interruption. Work done after the last checkpoint of an
    interrupted run is redone and counted once.
    """

    def __init__(self, config: PipelineConfig, data: PreparedDataset, reporter: Reporter) -> None:
        self.identity = {"format": CHECKPOINT_FORMAT, "variant": config.variant,
                         "fingerprint": data.fingerprint, "config": json.dumps(config.to_dict(), sort_keys=True)}
        self.done: dict[str, Any] = {}
        self.current: dict[str, Any] = {}
        self._started = time.perf_counter()
        self._earlier_seconds = 0.0
        checkpoint = reporter.latest_checkpoint()
        if checkpoint is None:
            return
        for key, value in self.identity.items():
            if key == "config" and isinstance(checkpoint.get(key), str):
                # Compared as settings, so that 1 and 1.0 or a list and a tuple count as equal.
                found = first_difference(json.loads(checkpoint[key]), json.loads(value))
                if found is None:
                    continue
                setting, saved, current = found
                raise ValueError(
                    f"the checkpoint to resume from was written with other settings ({setting} is {saved!r} "
                    f"there and {current!r} in this run); resume with the same settings, or use a fresh "
                    "output directory")
            if checkpoint.get(key) != value:
                raise ValueError(
                    f"the checkpoint to resume from has a different {key} ({str(checkpoint.get(key))[:80]!r}, "
                    f"this run has {str(value)[:80]!r}); resume with the same settings, or use a fresh output "
                    "directory")
        self.done = dict(checkpoint.get("done", {}))
        self.current = dict(checkpoint.get("current") or {})
        self._earlier_seconds = float(checkpoint.get("elapsed_s", 0.0))
        logger.info("resuming: finished stages %s, running stage %s",
                    sorted(self.done) or "none", self.current.get("stage", "none"))

    def resume_state(self, stage: str) -> dict[str, Any] | None:
        return self.current.get("state") if self.current.get("stage") == stage else None

    def elapsed(self) -> float:
        """Return the run's wall time in seconds, including the runs it resumed from."""
        return self._earlier_seconds + time.perf_counter() - self._started

    def checkpoint_for(self, stage: str):
        def make(state: dict[str, Any]) -> Checkpoint:
            return {**self.identity, "done": dict(self.done), "current": {"stage": stage, "state": state},
                    "elapsed_s": self.elapsed()}
        return make

    def finish(self, stage: str, output: dict[str, Any]) -> None:
        self.done[stage] = output
        self.current = {}

    def final_checkpoint(self) -> Checkpoint:
        return {**self.identity, "done": dict(self.done), "current": {}, "elapsed_s": self.elapsed()}


def run_variant(variant: Variant, config: PipelineConfig, data: PreparedDataset,
                reporter: Reporter | None = None, output_dir: str | Path | None = None) -> dict[str, Any]:
    """Run `variant`'s stages on `data`; write the routed model to `output_dir` when given."""
    config = variant.apply(config)
    reporter = reporter if reporter is not None else LocalReporter()
    device = torch.device(config.device)
    # NOTE: the stages are written to run on CUDA, but only the CPU path has been run so far.
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {config.device!r} was requested but this torch build sees no CUDA GPU; "
                         "use device 'cpu' or install a CUDA build of torch")
    logger.info("config %s", json.dumps(config.to_dict(), sort_keys=True))
    progress = StageProgress(config, data, reporter)

    seed_everything(config.seed)
    num_dims = data.num_fields * config.model.embed_dim
    backbone = build_backbone(config.model.backbone, data.field_dims, config.model)
    gate = build_gate(config.search.gate, num_dims) if variant.search else None
    logger.info("variant %s on %d/%d/%d rows: backbone %s with %d parameters%s", variant.name,
                len(data.train), len(data.valid), len(data.test), config.model.backbone,
                backbone.num_parameters(),
                f", gate with {sum(p.numel() for p in gate.parameters())} parameters" if gate is not None else "")
    metrics: dict[str, Any] = {"variant": variant.name, "seed": config.seed, "fingerprint": data.fingerprint}

    if not variant.search:
        routed = _train_base(backbone, config, data, reporter, progress, device, metrics)
    else:
        routed = _search_variant(variant, backbone, gate, config, data, reporter, progress, metrics)

    valid_metrics = evaluate_routed(routed, data.valid, batch_size=config.train.eval_batch_size,
                                    device=device, prefix="valid")
    metrics["valid_auc"] = valid_metrics["valid_auc"]
    metrics["valid_logloss"] = valid_metrics["valid_logloss"]
    metrics.update(evaluate_routed(routed, data.test, batch_size=config.train.eval_batch_size, device=device))
    metrics["wall_seconds"] = progress.elapsed()
    logger.info("variant %s: test AUC %.6g, test logloss %.6g, %d parameters, %.0f samples/s at inference",
                variant.name, metrics["test_auc"], metrics["test_logloss"], metrics["num_params"],
                metrics["inference_samples_per_s"])
    if output_dir is not None:
        from ihas.serialize import save_routed_model
        save_routed_model(routed, Path(output_dir), variant=variant.name, config=config,
                          field_names=data.field_names, field_dims=data.field_dims)
    reporter.report({"stage": "test", "epoch": 0, **{k: v for k, v in metrics.items()
                                                      if isinstance(v, (int, float, str))}},
                    progress.final_checkpoint())
    return metrics


def _train_base(backbone: CTRModel, config: PipelineConfig, data: PreparedDataset, reporter: Reporter,
                progress: StageProgress, device: torch.device, metrics: dict[str, Any]) -> RoutedModel:
    if "train" not in progress.done:
        result = fit(backbone, data.train, data.valid, config.train, seed=config.seed, device=device,
                     reporter=reporter, stage="train", resume_state=progress.resume_state("train"),
                     make_checkpoint=progress.checkpoint_for("train"))
        progress.finish("train", {"model_state": backbone.state_dict(), "best_valid_auc": result.best_valid_auc,
                                  "epochs_run": len(result.history)})
    done = progress.done["train"]
    backbone.load_state_dict(done["model_state"])
    metrics["train_best_valid_auc"] = done["best_valid_auc"]
    metrics["train_epochs"] = done["epochs_run"]
    return RoutedModel(backbone, None, None, [None], bins=config.search.bins)


def _search_variant(variant: Variant, backbone: CTRModel, gate: nn.Module, config: PipelineConfig,
                    data: PreparedDataset, reporter: Reporter, progress: StageProgress,
                    metrics: dict[str, Any]) -> RoutedModel:
    if "search" not in progress.done:
        result = run_search(backbone, gate, data, config, gate_kind=config.search.gate, reporter=reporter,
                            resume_state=progress.resume_state("search"),
                            make_checkpoint=progress.checkpoint_for("search"))
        progress.finish("search", result.to_state())
    search = SearchResult.from_state(progress.done["search"])
    backbone.load_state_dict(search.model_state)
    gate.load_state_dict(search.gate_state)
    metrics.update({"pretrain_valid_auc": search.pretrain_valid_auc, "search_valid_auc": search.best_valid_auc,
                    "search_epochs": len(search.history), "search_valid_num_fallback": search.num_fallback})
    if not variant.retrain:
        return RoutedModel(backbone, gate, None, [None], bins=config.search.bins)

    centroids = None
    if variant.cluster:
        if "cluster" not in progress.done:
            clusters = run_cluster(backbone, gate, data, config)
            progress.finish("cluster", clusters.to_state())
            reporter.report({"stage": "cluster", "epoch": 0, "effective_k": clusters.effective_k,
                             "num_dropped": clusters.num_dropped, "train_num_fallback": clusters.num_fallback},
                            progress.final_checkpoint())
        clusters = ClusterResult.from_state(progress.done["cluster"])
        centroids = clusters.centroids
        metrics.update({"requested_k": clusters.requested_k, "effective_k": clusters.effective_k,
                        "num_dropped_clusters": clusters.num_dropped,
                        "cluster_train_num_fallback": clusters.num_fallback})

    if "retrain" not in progress.done:
        retrained = run_retrain(backbone, gate, data, config, centroids=centroids, reporter=reporter,
                                resume_state=progress.resume_state("retrain"),
                                make_checkpoint=progress.checkpoint_for("retrain"),
                                build_model=functools.partial(build_cluster_model, variant.retrain_backbone,
                                                              data.field_dims, model_config=config.model))
        progress.finish("retrain", retrained.to_state())
    retrained = RetrainResult.from_state(progress.done["retrain"])

    cluster_models: list[nn.Module | None] = []
    for cluster in retrained.clusters:
        metrics[f"cluster_{cluster.cluster}_dims"] = ",".join(str(d) for d in cluster.dims)
        metrics[f"cluster_{cluster.cluster}_train_rows"] = cluster.train_rows
        metrics[f"cluster_{cluster.cluster}_valid_rows"] = cluster.valid_rows
        metrics[f"cluster_{cluster.cluster}_status"] = cluster.status
        metrics[f"cluster_{cluster.cluster}_reason"] = cluster.reason
        metrics[f"cluster_{cluster.cluster}_best_valid_auc"] = cluster.best_valid_auc
        if cluster.status == FALLBACK:
            cluster_models.append(None)
            continue
        model = build_cluster_model(variant.retrain_backbone, data.field_dims, cluster.dims, config.model)
        model.load_state_dict(cluster.model_state)
        cluster_models.append(model)
    return RoutedModel(backbone, gate, centroids, cluster_models, bins=config.search.bins)


for _name, _variant in VARIANTS.items():
    register_method(_name, functools.partial(run_variant, _variant))
