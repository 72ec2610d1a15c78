"""AutoField (Wang et al., WWW 2022): Gumbel-Softmax field gates searched bi-level, then top-k fields retrained.

Search: each field f has a pair of architecture logits (drop, keep). A training batch multiplies
each sample's field embedding by the keep component of a Gumbel-Softmax draw over the pair, at
temperature tau, and updates the backbone. Every `val_every` training batches, one validation batch
updates the logits alone (first-order bi-level optimization). Tau decays geometrically from
`tau_start` in the first search epoch to `tau_end` in the last. Evaluation uses the keep
probability softmax(logits / tau) without noise.
Retrain: the k fields with the largest keep log-odds (keep logit minus drop logit) keep all their
dims and the others are dropped. A fresh backbone is trained from scratch on the kept fields.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ihas.baselines.common import Run, ValidationUpdates, half_fields, seed_everything
from ihas.baselines.config import AutoFieldConfig
from ihas.config import PipelineConfig
from ihas.data.dataset import PreparedDataset
from ihas.models.base import CTRModel
from ihas.models.dlrm import MixedDimDLRM
from ihas.reporting import Reporter
from ihas.training import fit, mix_seed
from ihas.variants import register_method

logger = logging.getLogger(__name__)

METHOD = "autofield"
DROP, KEEP = 0, 1


def search_temperature(epoch: int, epochs: int, start: float, end: float) -> float:
    """Return the temperature of search epoch `epoch`: `start` at 0, `end` at epochs - 1, geometric in between."""
    if epochs <= 1:
        return end
    return start * (end / start) ** (min(epoch, epochs - 1) / (epochs - 1))


def top_fields(arch_logits: torch.Tensor, k: int) -> list[int]:
    """Return the indices (ascending) of the k fields with the largest keep log-odds.

    `arch_logits` is float [F, 2] with columns (drop, keep). Ties go to the lower field index.
    """
    if not 1 <= k <= arch_logits.shape[0]:
        raise ValueError(f"k must be in [1, {arch_logits.shape[0]}], got {k}")
    log_odds = (arch_logits[:, KEEP] - arch_logits[:, DROP]).detach().cpu()
    order = torch.sort(-log_odds, stable=True).indices
    return sorted(int(i) for i in order[:k])


class FieldGatedModel(nn.Module):
    """A backbone whose field embeddings are scaled by AutoField's per-field keep weights."""

    def __init__(self, backbone: CTRModel, num_fields: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.num_fields = num_fields
        # Equal drop and keep logits: every field starts with keep probability 1/2.
        self.arch = nn.Parameter(torch.zeros(num_fields, 2))
        self.tau = 1.0
        self.generator: torch.Generator | None = None

    def keep_weights(self, batch: int, stochastic: bool) -> torch.Tensor:
        """Return per-sample keep weights [B, F]: a Gumbel-Softmax draw, or softmax(logits / tau) without noise."""
        logits = self.arch.unsqueeze(0).expand(batch, -1, -1)
        if stochastic:
            u = torch.rand(logits.shape, generator=self.generator, device=logits.device)
            tiny = torch.finfo(u.dtype).tiny
            gumbel = -torch.log(-torch.log(u.clamp(min=tiny, max=1.0 - torch.finfo(u.dtype).eps)))
            logits = logits + gumbel
        return F.softmax(logits / self.tau, dim=-1)[..., KEEP]

    def score(self, x: torch.Tensor, stochastic: bool) -> torch.Tensor:
        e = self.backbone.embed(x)
        weights = self.keep_weights(x.shape[0], stochastic)
        gated = e.view(x.shape[0], self.num_fields, -1) * weights.unsqueeze(-1)
        return self.backbone.forward_embedded(gated.flatten(1), x)


def run_autofield(config: PipelineConfig, data: PreparedDataset, reporter: Reporter | None = None,
                  output_dir: str | Path | None = None) -> dict[str, Any]:
    """Run AutoField's search and retraining; return the pipeline's metric keys plus `selection`."""
    if config.model.backbone != "dlrm":
        raise ValueError(f"autofield retrains a DLRM on the kept fields; set model.backbone = 'dlrm' "
                         f"(got {config.model.backbone!r})")
    run = Run(METHOD, config, data, reporter)
    settings: AutoFieldConfig = run.settings
    progress = run.progress
    k = half_fields(data.num_fields, settings.keep_fields)

    if "search" not in progress.done:
        gated = FieldGatedModel(run.new_backbone(), data.num_fields).to(run.device)
        gated.generator = torch.Generator(device=run.device)

        def start_epoch(epoch: int) -> None:
            gated.tau = search_temperature(epoch, settings.search_epochs, settings.tau_start, settings.tau_end)
            gated.generator.manual_seed(mix_seed(config.seed + 3, epoch))

        bce = nn.BCEWithLogitsLoss()
        hook = ValidationUpdates([gated.arch], data.valid, lambda x, y: bce(_detached_score(gated, x), y),
                                 every=settings.val_every, lr=settings.gate_lr, config=config,
                                 seed=config.seed + 2, device=run.device, on_epoch=start_epoch)
        search_train = dataclasses.replace(config.train, max_epochs=settings.search_epochs)
        result = fit(gated, data.train, data.valid, search_train, seed=config.seed, device=run.device,
                     reporter=run.reporter, stage="autofield-search",
                     forward=lambda m, x: m.score(x, stochastic=True),
                     eval_forward=lambda m, x: m.score(x, stochastic=False),
                     parameters=gated.backbone.parameters(), hook=hook,
                     resume_state=progress.resume_state("search"), make_checkpoint=progress.checkpoint_for("search"))
        hook.release()
        progress.finish("search", {"arch": gated.arch.detach().cpu().clone(),
                                   "best_valid_auc": result.best_valid_auc})
        run.report_stage_end("autofield-search", {"search_best_valid_auc": result.best_valid_auc})
    arch = progress.done["search"]["arch"]
    kept = top_fields(arch, k)
    dims = [config.model.embed_dim if f in kept else 0 for f in range(data.num_fields)]

    seed_everything(config.seed)  # retraining starts from scratch, seeded
    model = MixedDimDLRM(data.field_dims, dims, config.model.mlp_dims)
    if "retrain" not in progress.done:
        result = fit(model, data.train, data.valid, config.train, seed=config.seed + 1, device=run.device,
                     reporter=run.reporter, stage="autofield-retrain", resume_state=progress.resume_state("retrain"),
                     make_checkpoint=progress.checkpoint_for("retrain"))
        progress.finish("retrain", {"model_state": model.state_dict(), "best_valid_auc": result.best_valid_auc})
    model.load_state_dict(progress.done["retrain"]["model_state"])

    log_odds = (arch[:, KEEP] - arch[:, DROP]).tolist()
    selection = {"fields_kept": [data.field_names[f] for f in kept], "num_fields_kept": len(kept),
                 "dims_per_field": dict(zip(data.field_names, dims)),
                 "keep_log_odds": {name: round(v, 6) for name, v in zip(data.field_names, log_odds)}}
    return run.finish(model, lambda m, x: m(x), num_params=model.num_parameters(), selection=selection,
                      extra={"num_fields_kept": len(kept)}, output_dir=output_dir)


def _detached_score(gated: FieldGatedModel, x: torch.Tensor) -> torch.Tensor:
    """Score a validation batch with a Gumbel draw; the embeddings are fixed, only the logits learn."""
    with torch.no_grad():
        e = gated.backbone.embed(x)
    weights = gated.keep_weights(x.shape[0], stochastic=True)
    gated_e = e.view(x.shape[0], gated.num_fields, -1) * weights.unsqueeze(-1)
    return gated.backbone.forward_embedded(gated_e.flatten(1), x)


register_method(METHOD, run_autofield)
