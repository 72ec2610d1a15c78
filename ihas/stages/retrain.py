"""Retraining stage: one mixed-dim DLRM per cluster, with the dims most of the cluster's rows keep.

For cluster c the deterministic masks of its training rows are averaged. Field n gets as many dims
as have a mean of at least `retrain.keep_ratio` (0 drops the field). A fresh `MixedDimDLRM` with
those dims is trained on the cluster's training rows with early stopping on its validation rows.

Clusters that cannot be trained that way get an explicit outcome, recorded in `status` and `reason`:
- fewer than `retrain.min_train_rows` training rows: no model of its own (`fallback`); its rows
  are scored by the searched model with deterministic masks, as in ablation iHAS-1;
- no validation rows, or validation rows of one class (AUC undefined): the model is trained on the
  cluster's rows but early-stops on the whole validation split (`global_valid`).
A cluster whose mean mask keeps no dim at all is trained as the method defines it, a model of one
learned bias, and its `reason` states that.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ihas.config import PipelineConfig
from ihas.data.dataset import PreparedDataset, Split
from ihas.models.base import CTRModel
from ihas.models.dlrm import MixedDimDLRM, dims_from_mask
from ihas.reporting import Checkpoint, Reporter
from ihas.stages.cluster import assign_clusters, masked_embeddings, nearest_centroid
from ihas.training import fit

logger = logging.getLogger(__name__)

TRAINED = "trained"
GLOBAL_VALID = "global_valid"
FALLBACK = "fallback"


@dataclass
class ClusterModel:
    """Outcome of retraining one cluster."""

    cluster: int
    dims: list[int]  # embedding dims per field, from the cluster's mean mask
    train_rows: int
    valid_rows: int
    status: str  # TRAINED, GLOBAL_VALID or FALLBACK
    reason: str  # why the status is not TRAINED; empty otherwise
    best_valid_auc: float
    epochs_run: int
    model_state: dict[str, torch.Tensor] | None  # None for FALLBACK


@dataclass
class RetrainResult:
    clusters: list[ClusterModel] = field(default_factory=list)

    def to_state(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "RetrainResult":
        return cls(clusters=[ClusterModel(**c) for c in state["clusters"]])


@torch.no_grad()
def cluster_mask_means(model: CTRModel, gate: nn.Module, x: torch.Tensor, centroids: torch.Tensor | None, *,
                       bins: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Assign rows x to the nearest centroid (all to cluster 0 when `centroids` is None) in one pass.

    Return (cluster id int64 [N], mean deterministic mask float64 [K, N*] of each cluster's rows,
    0 for a cluster without rows).
    """
    num_clusters = 1 if centroids is None else int(centroids.shape[0])
    sums: torch.Tensor | None = None
    parts = []
    for start in range(0, x.shape[0], batch_size):
        points, mask, _ = masked_embeddings(model, gate, x[start:start + batch_size], bins)
        if centroids is None:
            assignment = torch.zeros(points.shape[0], dtype=torch.int64, device=x.device)
        else:
            assignment = nearest_centroid(points, centroids.to(x.device))
        if sums is None:
            sums = torch.zeros(num_clusters, mask.shape[1], dtype=torch.float64, device=x.device)
        sums.index_add_(0, assignment, mask.double())
        parts.append(assignment)
    if sums is None:
        raise ValueError("cannot average masks over an empty training split")
    assignment = torch.cat(parts)
    counts = torch.bincount(assignment, minlength=num_clusters).double().clamp(min=1)
    return assignment, sums / counts[:, None]


def _subset(split: Split, rows: np.ndarray) -> Split:
    return Split(x=np.ascontiguousarray(split.x[rows]), y=np.ascontiguousarray(split.y[rows]))


def run_retrain(model: CTRModel, gate: nn.Module, data: PreparedDataset, config: PipelineConfig, *,
                centroids: torch.Tensor | None, reporter: Reporter | None = None,
                resume_state: dict[str, Any] | None = None,
                make_checkpoint: Callable[[dict[str, Any]], Checkpoint] | None = None,
                build_model: Callable[[list[int]], nn.Module] | None = None) -> RetrainResult:
    """Train one model per cluster of `centroids` (one cluster over all rows when None).

    `build_model(dims)` returns a fresh cluster model with dims[f] embedding dims for field f; by
    default a `MixedDimDLRM`. The transfer methods pass other backbones here.
    """
    device = torch.device(config.device)
    model.to(device).eval()
    gate.to(device).eval()
    wrap = make_checkpoint or (lambda state: {"stage": "retrain", "state": state})
    bins, batch = config.search.bins, config.cluster.batch_size
    x_train, _ = data.train.tensors(device)
    x_valid, _ = data.valid.tensors(device)
    num_clusters = 1 if centroids is None else int(centroids.shape[0])
    train_assign, means = cluster_mask_means(model, gate, x_train, centroids, bins=bins, batch_size=batch)
    if centroids is None:
        valid_assign = torch.zeros(len(data.valid), dtype=torch.int64, device=device)
    else:
        valid_assign = assign_clusters(model, gate, centroids, x_valid, bins=bins, batch_size=batch)
    train_assign, valid_assign = train_assign.cpu().numpy(), valid_assign.cpu().numpy()

    resume_state = resume_state or {}
    done = [ClusterModel(**c) for c in resume_state.get("done", [])]
    for c in range(len(done), num_clusters):
        dims = dims_from_mask(means[c].cpu(), data.num_fields, config.model.embed_dim, config.retrain.keep_ratio)
        train_rows = np.flatnonzero(train_assign == c)
        valid_rows = np.flatnonzero(valid_assign == c)
        summary = dict(cluster=c, dims=dims, train_rows=int(train_rows.size), valid_rows=int(valid_rows.size))

        if train_rows.size < config.retrain.min_train_rows:
            reason = (f"{train_rows.size} training rows, fewer than retrain.min_train_rows="
                      f"{config.retrain.min_train_rows}; the searched model scores this cluster")
            logger.warning("retrain cluster %d: %s", c, reason)
            done.append(ClusterModel(**summary, status=FALLBACK, reason=reason, best_valid_auc=float("nan"),
                                     epochs_run=0, model_state=None))
            continue

        status, reason, valid = TRAINED, "", _subset(data.valid, valid_rows)
        valid_labels = np.unique(data.valid.y[valid_rows])
        if valid_rows.size == 0 or valid_labels.size < 2:
            status = GLOBAL_VALID
            reason = ("no validation rows" if valid_rows.size == 0
                      else f"validation rows all of class {int(valid_labels[0])}, so AUC is undefined")
            reason += "; early stopping uses the whole validation split"
            logger.warning("retrain cluster %d: %s", c, reason)
            valid = data.valid
        if sum(dims) == 0:
            no_dims = (f"the mean mask keeps no dim at keep_ratio {config.retrain.keep_ratio:g}, so the model "
                       "is a single learned bias (one constant prediction for the cluster)")
            reason = f"{reason}; {no_dims}" if reason else no_dims
            logger.warning("retrain cluster %d: %s", c, no_dims)

        torch.manual_seed(config.seed + 1000 + c)
        if build_model is None:
            cluster_model = MixedDimDLRM(data.field_dims, dims, config.model.mlp_dims)
        else:
            cluster_model = build_model(dims)
        logger.info("retrain cluster %d: %d train rows, %d valid rows, dims %s, %d parameters",
                    c, train_rows.size, valid_rows.size, dims, cluster_model.num_parameters())
        fit_resume = resume_state.get("fit") if resume_state.get("current_cluster") == c else None
        finished = [dataclasses.asdict(m) for m in done]
        result = fit(cluster_model, _subset(data.train, train_rows), valid, config.train,
                     seed=config.seed + 1000 + c, device=device, reporter=reporter, stage="retrain",
                     resume_state=fit_resume, extra_metrics={"cluster": c},
                     make_checkpoint=lambda state, c=c, finished=finished: wrap(
                         {"done": finished, "current_cluster": c, "fit": state}))
        done.append(ClusterModel(**summary, status=status, reason=reason, best_valid_auc=result.best_valid_auc,
                                 epochs_run=result.epochs_run,
                                 model_state={k: v.detach().cpu().clone() for k, v in cluster_model.state_dict().items()}))
    return RetrainResult(clusters=done)
