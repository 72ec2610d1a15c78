"""Routed inference: base embedding, deterministic gate, nearest K-Means centroid, then that cluster's model.

`RoutedModel` covers every variant with one code path:
- Base: a backbone alone (`gate` None, one cluster scored by `base`);
- iHAS-1: the searched backbone with deterministic masks (one cluster, no model of its own);
- iHAS-2: one retrained model for all rows (no routing, so no base embedding or gate at inference);
- iHAS and iHAS-3/4: K clusters, each scored by its retrained model, or by the searched backbone with
  deterministic masks when the retraining stage gave it no model (status `fallback`).
"""

from __future__ import annotations

import logging
import time
from typing import Sequence

import numpy as np
import torch
from torch import nn

from ihas.data.dataset import Split
from ihas.gates import deterministic_probs
from ihas.metrics import log_loss, roc_auc
from ihas.models.base import CTRModel
from ihas.stages.cluster import nearest_centroid
from ihas.threshold import deterministic_mask

logger = logging.getLogger(__name__)


class RoutedModel(nn.Module):
    """Scores each row with the model of its cluster; see the module docstring for the variants."""

    def __init__(self, base: CTRModel | None, gate: nn.Module | None, centroids: torch.Tensor | None,
                 cluster_models: Sequence[nn.Module | None], bins: int) -> None:
        super().__init__()
        if not cluster_models:
            raise ValueError("a routed model needs at least one cluster")
        if centroids is not None and centroids.shape[0] != len(cluster_models):
            raise ValueError(f"{centroids.shape[0]} centroids but {len(cluster_models)} cluster models; "
                             "give one model (or None for the searched model) per centroid")
        if centroids is None and len(cluster_models) > 1:
            raise ValueError(f"{len(cluster_models)} cluster models need centroids to route rows between them")
        needs_base = centroids is not None or any(m is None for m in cluster_models)
        if needs_base and base is None:
            raise ValueError("routing or a cluster without its own model needs the base model")
        if centroids is not None and gate is None:
            raise ValueError("routing by centroid needs the gate that masks the embeddings")
        self.base = base if needs_base else None
        self.gate = gate if needs_base else None
        self.bins = int(bins)
        self.num_clusters = len(cluster_models)
        self.cluster_models = nn.ModuleDict({str(c): m for c, m in enumerate(cluster_models) if m is not None})
        if centroids is not None:
            self.register_buffer("centroids", centroids.detach().float().clone())
        else:
            self.centroids = None

    def has_own_model(self, cluster: int) -> bool:
        return str(cluster) in self.cluster_models

    def _masked(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        e = self.base.embed(x)
        if self.gate is None:
            return e, None
        mask, _ = deterministic_mask(deterministic_probs(self.gate(e)), self.bins)
        return e, mask

    @torch.no_grad()
    def assign(self, x: torch.Tensor) -> torch.Tensor:
        """Return the cluster id (int64 [B]) of each row of ids x (int [B, F])."""
        if self.centroids is None:
            return torch.zeros(x.shape[0], dtype=torch.int64, device=x.device)
        e, mask = self._masked(x)
        return nearest_centroid(e * mask, self.centroids)

    @torch.no_grad()
    def predict_with_clusters(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (logits float [B], cluster id int64 [B]) of ids x (int [B, F])."""
        if self.base is None:  # one retrained model for every row
            return self.cluster_models["0"](x), torch.zeros(x.shape[0], dtype=torch.int64, device=x.device)
        e, mask = self._masked(x)
        masked = e if mask is None else e * mask
        if self.centroids is None:
            clusters = torch.zeros(x.shape[0], dtype=torch.int64, device=x.device)
        else:
            clusters = nearest_centroid(masked, self.centroids)
        if self.num_clusters == 1:
            model = self.cluster_models["0"] if self.has_own_model(0) else None
            logits = model(x) if model is not None else self.base.forward_embedded(masked, x)
            return logits, clusters
        logits = torch.empty(x.shape[0], dtype=e.dtype, device=x.device)
        for c in range(self.num_clusters):
            rows = (clusters == c).nonzero().squeeze(1)
            if rows.numel() == 0:
                continue
            xc = x.index_select(0, rows)
            if self.has_own_model(c):
                logits[rows] = self.cluster_models[str(c)](xc)
            else:
                logits[rows] = self.base.forward_embedded(masked.index_select(0, rows), xc)
        return logits, clusters

    def predict_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits (float [B]) of ids x (int [B, F])."""
        return self.predict_with_clusters(x)[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.predict_logits(x)

    def parameter_counts(self) -> dict[str, int]:
        """Count the scalar parameters that inference reads, by part.

        `num_params_routing` is the base embedding, the gate and the centroids, counted when rows are
        routed by centroid or masked by the gate. `num_params_base_scorer` is the rest of the base
        model, counted when some cluster (or the whole Base/iHAS-1 variant) is scored by it.
        `num_params_cluster_<c>` is cluster c's own model. `num_params` is their sum.
        """
        counts: dict[str, int] = {}
        if self.base is not None:
            total_base = sum(p.numel() for p in self.base.parameters())
            embedding = getattr(self.base, "embedding", None)
            embed_params = sum(p.numel() for p in embedding.parameters()) if embedding is not None else total_base
            gate_params = sum(p.numel() for p in self.gate.parameters()) if self.gate is not None else 0
            centroid_params = self.centroids.numel() if self.centroids is not None else 0
            counts["num_params_routing"] = embed_params + gate_params + centroid_params
            uses_scorer = any(not self.has_own_model(c) for c in range(self.num_clusters))
            counts["num_params_base_scorer"] = total_base - embed_params if uses_scorer else 0
        for c in range(self.num_clusters):
            model = self.cluster_models[str(c)] if self.has_own_model(c) else None
            counts[f"num_params_cluster_{c}"] = _count_parameters(model) if model is not None else 0
        counts["num_params"] = sum(counts.values())
        return counts


def _count_parameters(model: nn.Module) -> int:
    # A model with fixed per-field dims counts only the parameters its dims let reach a prediction.
    if isinstance(model, CTRModel):
        return model.num_parameters()
    return sum(p.numel() for p in model.parameters())


def evaluate_routed(routed: RoutedModel, split: Split, *, batch_size: int, device: str | torch.device = "cpu",
                    prefix: str = "test") -> dict[str, float | int | str]:
    """Score a split with `routed`; return global and per-cluster AUC and logloss, sizes and wall time.

    The wall time covers batch inference over the whole split (routing included) after one
    warm-up batch, measured with time.perf_counter.
    """
    device = torch.device(device)
    routed.to(device).eval()
    x, y = split.tensors(device)
    if x.shape[0] == 0:
        raise ValueError(f"the {prefix} split is empty; nothing to evaluate")
    routed.predict_with_clusters(x[:batch_size])  # warm-up: first-call allocations and lazy init
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    logit_parts, cluster_parts = [], []
    for start in range(0, x.shape[0], batch_size):
        logits, clusters = routed.predict_with_clusters(x[start:start + batch_size])
        logit_parts.append(logits)
        cluster_parts.append(clusters)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - started

    probs = torch.sigmoid(torch.cat(logit_parts)).cpu().numpy().astype(np.float64)
    clusters = torch.cat(cluster_parts).cpu().numpy()
    labels = y.cpu().numpy().astype(np.float64)
    metrics: dict[str, float | int | str] = {
        f"{prefix}_auc": roc_auc(labels, probs),
        f"{prefix}_logloss": log_loss(labels, probs),
        f"{prefix}_rows": int(labels.size),
        "inference_seconds": seconds,
        "inference_samples_per_s": labels.size / seconds if seconds > 0 else float("inf"),
        "num_clusters": routed.num_clusters,
    }
    for c in range(routed.num_clusters):
        rows = clusters == c
        count = int(rows.sum())
        metrics[f"cluster_{c}_{prefix}_rows"] = count
        if count == 0:
            # No test row landed in this cluster: its figures are undefined, not zero.
            metrics[f"cluster_{c}_{prefix}_label_rate"] = float("nan")
            metrics[f"cluster_{c}_{prefix}_auc"] = float("nan")
            metrics[f"cluster_{c}_{prefix}_logloss"] = float("nan")
            continue
        metrics[f"cluster_{c}_{prefix}_label_rate"] = float(labels[rows].mean())
        metrics[f"cluster_{c}_{prefix}_auc"] = roc_auc(labels[rows], probs[rows])
        metrics[f"cluster_{c}_{prefix}_logloss"] = log_loss(labels[rows], probs[rows])
    metrics.update(routed.parameter_counts())
    metrics["num_params_counting"] = ("routing (base embedding, gate, centroids) when used, plus the base "
                                      "scorer when a cluster falls back to it, plus each cluster's model")
    return metrics
