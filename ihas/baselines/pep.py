"""PEP (Liu et al., ICLR 2021): learnable soft thresholds prune embedding entries, then lottery-ticket retraining.

Search: every embedding entry v of feature value i and dim j is used as
sign(v) * relu(|v| - sigmoid(gk * s_ij)), with a learnable threshold s of the table's shape
(granularity `feature_dim`), trained jointly with the backbone. The search ends when the number of
non-zero entries falls to the parameter budget; the pruned mask at that moment is kept.
Retrain: the backbone restarts from its initial weights (rebuilt from the run's seed), its table is
multiplied by the mask in every forward pass, and it trains with early stopping on validation AUC.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ihas.baselines.common import MaskedModel, Run, count_mlp_params, field_embedding, lookup
from ihas.baselines.config import PEPConfig
from ihas.config import PipelineConfig
from ihas.data.dataset import PreparedDataset
from ihas.models.base import CTRModel
from ihas.reporting import Reporter
from ihas.training import fit
from ihas.variants import register_method

logger = logging.getLogger(__name__)

METHOD = "pep"


def soft_threshold(values: torch.Tensor, threshold_logits: torch.Tensor, gk: float = 1.0) -> torch.Tensor:
    """Return sign(v) * relu(|v| - sigmoid(gk * s)): entries with |v| <= sigmoid(gk * s) become exactly 0."""
    return torch.sign(values) * torch.relu(values.abs() - torch.sigmoid(gk * threshold_logits))


class PEPModel(nn.Module):
    """A backbone whose embedding entries pass through PEP's soft threshold, one threshold per entry."""

    def __init__(self, backbone: CTRModel, settings: PEPConfig) -> None:
        super().__init__()
        self.backbone = backbone
        self.gk = settings.gk
        table = field_embedding(backbone).table.weight
        # NOTE: sigmoid(-150) underflows to 0 in float32, so s gets no gradient from the loss at first.
        # It moves because Adam's weight decay adds wd * s to its gradient, and Adam turns that into
        # steps of about lr toward 0; the official code has the same mechanism with its L2 term.
        self.threshold = nn.Parameter(torch.full_like(table, settings.threshold_init))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows, values = lookup(field_embedding(self.backbone), x)
        embedded = soft_threshold(values, self.threshold[rows], self.gk)
        return self.backbone.forward_embedded(embedded.flatten(1), x)

    @torch.no_grad()
    def kept_mask(self) -> torch.Tensor:
        """Return the entries that the soft threshold keeps (bool, the table's shape)."""
        table = field_embedding(self.backbone).table.weight
        return table.abs() > torch.sigmoid(self.gk * self.threshold)


class _BudgetReached(Exception):
    """Raised inside the training loop to end the search when the mask fits the budget."""


class _BudgetWatch:
    """Step hook of the search: counts the kept entries every `check_every` batches and stops at the budget."""

    def __init__(self, model: PEPModel, budget: int, check_every: int) -> None:
        self.model = model
        self.budget = budget
        self.check_every = check_every
        self.mask: torch.Tensor | None = None

    def on_epoch_start(self, epoch: int) -> None:
        # Also checked here, so that a small split with fewer than `check_every` batches per epoch,
        # or a resumed run, stops once the last epoch's mask fits the budget.
        self.check()

    def after_step(self, step: int) -> None:
        if (step + 1) % self.check_every == 0:
            self.check()

    def check(self) -> None:
        mask = self.model.kept_mask()
        if int(mask.sum()) <= self.budget:
            self.mask = mask.clone()
            raise _BudgetReached

    def epoch_metrics(self) -> dict[str, float | int]:
        kept = int(self.model.kept_mask().sum())
        return {"kept_entries": kept, "kept_ratio": kept / self.model.threshold.numel()}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def run_pep(config: PipelineConfig, data: PreparedDataset, reporter: Reporter | None = None,
            output_dir: str | Path | None = None) -> dict[str, Any]:
    """Run PEP's search and retraining; return the pipeline's metric keys plus `selection`."""
    run = Run(METHOD, config, data, reporter)
    settings: PEPConfig = run.settings
    progress = run.progress

    if "search" not in progress.done:
        model = PEPModel(run.new_backbone(), settings)
        total = model.threshold.numel()
        budget = int(settings.budget_ratio * total)
        watch = _BudgetWatch(model, budget, settings.check_every)
        # The search ends at the budget, not on validation AUC: patience equal to the epoch cap
        # turns early stopping off, as in the official code, which prunes until each budget is met.
        search_train = dataclasses.replace(config.train, max_epochs=settings.search_epochs,
                                           patience=settings.search_epochs)
        reached = True
        try:
            fit(model, data.train, data.valid, search_train, seed=config.seed, device=run.device,
                reporter=run.reporter, stage="pep-search", hook=watch,
                resume_state=progress.resume_state("search"), make_checkpoint=progress.checkpoint_for("search"))
            mask = model.kept_mask()
            reached = int(mask.sum()) <= budget
            if not reached:
                logger.warning("pep: the kept entries (%d of %d) never fell to the budget %d within %d epochs; "
                               "retraining with the last mask", int(mask.sum()), total, budget, settings.search_epochs)
        except _BudgetReached:
            mask = watch.mask
        progress.finish("search", {"mask": mask.cpu(), "budget": budget, "budget_reached": reached})
        run.report_stage_end("pep-search", {"kept_entries": int(mask.sum()), "budget": budget,
                                            "budget_reached": int(reached)})
    search = progress.done["search"]
    mask = search["mask"].bool()

    # Lottery-ticket rewind: the same seed rebuilds the backbone's initial weights.
    retrained = MaskedModel(run.new_backbone(), mask)
    if "retrain" not in progress.done:
        result = fit(retrained, data.train, data.valid, config.train, seed=config.seed + 1, device=run.device,
                     reporter=run.reporter, stage="pep-retrain", resume_state=progress.resume_state("retrain"),
                     make_checkpoint=progress.checkpoint_for("retrain"))
        progress.finish("retrain", {"model_state": retrained.state_dict(), "best_valid_auc": result.best_valid_auc})
    retrained.load_state_dict(progress.done["retrain"]["model_state"])

    kept = int(mask.sum())
    selection = describe_mask(mask, data.field_dims, data.field_names)
    selection.update({"budget_entries": int(search["budget"]), "budget_reached": bool(search["budget_reached"])})
    return run.finish(retrained.folded(), lambda m, x: m(x), num_params=kept + count_mlp_params(retrained.backbone),
                      selection=selection, extra={"kept_entries": kept, "budget_reached": int(search["budget_reached"])},
                      output_dir=output_dir)


def describe_mask(mask: torch.Tensor, field_dims: tuple[int, ...], field_names: tuple[str, ...]) -> dict[str, Any]:
    """Summarize an entry mask (bool [rows, D]): kept fields, mean kept dims per feature of each field, sparsity."""
    kept_per_row = mask.sum(dim=1).float()
    mean_dims, fields_kept, start = [], [], 0
    for name, size in zip(field_names, field_dims):
        rows = kept_per_row[start:start + size]
        mean_dims.append(round(float(rows.mean()), 3))
        if bool((rows > 0).any()):
            fields_kept.append(name)
        start += size
    return {"fields_kept": fields_kept, "mean_dims_per_field": dict(zip(field_names, mean_dims)),
            "kept_entries": int(mask.sum()), "total_entries": int(mask.numel()),
            "sparsity": 1.0 - float(mask.sum()) / mask.numel()}


register_method(METHOD, run_pep)
