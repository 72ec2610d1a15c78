"""AdaFS (Lin et al., KDD 2022): a controller weights each sample's fields, softly or by keeping the top ones.

The backbone's flattened embedding goes through batch normalization into a controller,
Linear(N*, F) and a softmax over fields, which gives each sample one weight per field.
- AdaFS-soft multiplies each field's embedding by its weight.
- AdaFS-hard keeps each sample's k fields with the largest weights (k = F/2 by default), with the
  weights renormalized over the kept fields, and zeroes the others.
Training: the backbone alone for `pretrain_epochs`. Then every training batch updates the backbone
through the weighted embeddings while the controller is fixed. Every `val_every` training batches,
one validation batch updates the controller (and its batch normalization) alone. Early
stopping on validation AUC restores the best backbone and controller together. There is no
retraining: the searched model with its controller is the model that is tested.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ihas.baselines.common import Run, ValidationUpdates, half_fields
from ihas.baselines.config import AdaFSConfig
from ihas.config import PipelineConfig
from ihas.data.dataset import PreparedDataset
from ihas.models.base import CTRModel
from ihas.reporting import Reporter
from ihas.training import fit
from ihas.variants import register_method

logger = logging.getLogger(__name__)

SOFT, HARD = "adafs-soft", "adafs-hard"


def hard_weights(weights: torch.Tensor, k: int) -> torch.Tensor:
    """Keep each row's k largest weights, renormalized to sum to 1, and zero the rest.

    `weights` is float [B, F] and positive (a softmax output). Exactly k entries per row stay
    non-zero, even with ties, because torch.topk returns exactly k indices.
    """
    if not 1 <= k <= weights.shape[1]:
        raise ValueError(f"k must be in [1, {weights.shape[1]}], got {k}")
    index = torch.topk(weights, k, dim=1).indices
    keep = torch.zeros_like(weights).scatter(1, index, 1.0)
    kept = weights * keep
    return kept / kept.sum(dim=1, keepdim=True)


class AdaFSModel(nn.Module):
    """A backbone with AdaFS's controller in front of its scorer.

    `use_controller` is False while the backbone is pretrained alone. `k` is None for the soft
    mode and the number of fields kept per sample for the hard mode.
    """

    def __init__(self, backbone: CTRModel, num_fields: int, embed_dim: int, k: int | None) -> None:
        super().__init__()
        self.backbone = backbone
        self.num_fields = num_fields
        self.k = k
        num_dims = num_fields * embed_dim
        self.norm = nn.BatchNorm1d(num_dims)
        self.controller = nn.Linear(num_dims, num_fields)
        self.use_controller = True

    def controller_parameters(self) -> list[nn.Parameter]:
        return [*self.norm.parameters(), *self.controller.parameters()]

    def field_weights(self, e: torch.Tensor) -> torch.Tensor:
        """Map flattened embeddings e (float [B, N*]) to the field weights applied to them (float [B, F])."""
        weights = F.softmax(self.controller(self.norm(e)), dim=1)
        return weights if self.k is None else hard_weights(weights, self.k)

    def score_embedded(self, e: torch.Tensor, x: torch.Tensor, controller_input: torch.Tensor | None = None) -> torch.Tensor:
        if not self.use_controller:
            return self.backbone.forward_embedded(e, x)
        weights = self.field_weights(e if controller_input is None else controller_input)
        weighted = e.view(e.shape[0], self.num_fields, -1) * weights.unsqueeze(-1)
        return self.backbone.forward_embedded(weighted.flatten(1), x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.score_embedded(self.backbone.embed(x), x)


def run_adafs(mode: str, config: PipelineConfig, data: PreparedDataset, reporter: Reporter | None = None,
              output_dir: str | Path | None = None) -> dict[str, Any]:
    """Run AdaFS in `mode` (adafs-soft or adafs-hard); return the pipeline's metric keys plus `selection`."""
    if mode not in (SOFT, HARD):
        raise ValueError(f"unknown AdaFS mode {mode!r}; use {SOFT!r} or {HARD!r}")
    run = Run(mode, config, data, reporter)
    settings: AdaFSConfig = run.settings
    progress = run.progress
    k = half_fields(data.num_fields, settings.keep_fields) if mode == HARD else None
    model = AdaFSModel(run.new_backbone(), data.num_fields, config.model.embed_dim, k).to(run.device)

    if "pretrain" not in progress.done:
        model.use_controller = False
        if settings.pretrain_epochs > 0:
            pretrain = dataclasses.replace(config.train, max_epochs=settings.pretrain_epochs)
            fit(model, data.train, data.valid, pretrain, seed=config.seed, device=run.device, reporter=run.reporter,
                stage=f"{mode}-pretrain", parameters=model.backbone.parameters(),
                resume_state=progress.resume_state("pretrain"), make_checkpoint=progress.checkpoint_for("pretrain"))
        progress.finish("pretrain", {"model_state": model.state_dict()})
    model.load_state_dict(progress.done["pretrain"]["model_state"])
    model.use_controller = True

    if "search" not in progress.done:
        bce = nn.BCEWithLogitsLoss()

        def controller_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                e = model.backbone.embed(x)
            return bce(model.score_embedded(e, x), y)

        hook = ValidationUpdates(model.controller_parameters(), data.valid, controller_loss,
                                 every=settings.val_every, lr=settings.controller_lr, config=config,
                                 seed=config.seed + 2, device=run.device)
        result = fit(model, data.train, data.valid, config.train, seed=config.seed + 1, device=run.device,
                     reporter=run.reporter, stage=f"{mode}-search", parameters=model.backbone.parameters(),
                     hook=hook, resume_state=progress.resume_state("search"),
                     make_checkpoint=progress.checkpoint_for("search"))
        hook.release()
        progress.finish("search", {"model_state": model.state_dict(), "best_valid_auc": result.best_valid_auc})
    model.load_state_dict(progress.done["search"]["model_state"])

    selection = describe_weights(model, data, config.train.eval_batch_size, run.device)
    return run.finish(model, lambda m, x: m(x), num_params=sum(p.numel() for p in model.parameters()),
                      selection=selection, extra={}, output_dir=output_dir)


@torch.no_grad()
def describe_weights(model: AdaFSModel, data: PreparedDataset, batch_size: int, device: torch.device) -> dict[str, Any]:
    """Summarize the controller on the validation split: mean weight and share of samples keeping each field."""
    model.eval()
    x, _ = data.valid.tensors(device)
    total = torch.zeros(data.num_fields, dtype=torch.float64)
    kept = torch.zeros(data.num_fields, dtype=torch.float64)
    for start in range(0, x.shape[0], batch_size):
        weights = model.field_weights(model.backbone.embed(x[start:start + batch_size])).double().cpu()
        total += weights.sum(dim=0)
        kept += (weights > 0).double().sum(dim=0)
    rows = max(int(x.shape[0]), 1)
    mean_weight = (total / rows).tolist()
    share = (kept / rows).tolist()
    return {"mode": "hard" if model.k is not None else "soft", "fields_kept_per_sample": model.k or data.num_fields,
            "mean_field_weight": {n: round(w, 6) for n, w in zip(data.field_names, mean_weight)},
            "share_of_samples_keeping_field": {n: round(s, 6) for n, s in zip(data.field_names, share)},
            "fields_kept": [n for n, s in zip(data.field_names, share) if s > 0]}


def run_adafs_soft(config: PipelineConfig, data: PreparedDataset, reporter: Reporter | None = None,
                   output_dir: str | Path | None = None) -> dict[str, Any]:
    return run_adafs(SOFT, config, data, reporter, output_dir)


def run_adafs_hard(config: PipelineConfig, data: PreparedDataset, reporter: Reporter | None = None,
                   output_dir: str | Path | None = None) -> dict[str, Any]:
    return run_adafs(HARD, config, data, reporter, output_dir)


register_method(SOFT, run_adafs_soft)
register_method(HARD, run_adafs_hard)
