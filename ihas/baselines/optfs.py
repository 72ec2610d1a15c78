"""OptFS (Lyu et al., WWW 2023): one gate per feature value, a rising temperature, rewind and retraining.

Search: each feature value i (a row of the embedding table) has a gate logit m_i, initialized to
`mask_init`. Its embedding is multiplied by sigmoid(temp * m_i) / sigmoid(mask_init), which is 1 at
the start. The loss adds reg_lambda times the sum of all gates. The temperature is 1 in the first
search epoch and rises geometrically to `final_temp` in the last, so the gates approach a step
function. The search always runs `search_epochs` epochs; the backbone's weights after
`rewind_epoch` epochs are kept.
Retrain: the backbone is rewound to those weights, each feature value is kept when its final gate
logit is > 0 (its embedding is zeroed otherwise), and it trains with early stopping on validation AUC.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ihas.baselines.common import MaskedModel, Run, count_mlp_params, field_embedding, lookup
from ihas.baselines.config import OptFSConfig
from ihas.config import PipelineConfig
from ihas.data.dataset import PreparedDataset
from ihas.models.base import CTRModel
from ihas.reporting import Reporter
from ihas.training import fit
from ihas.variants import register_method

logger = logging.getLogger(__name__)

METHOD = "optfs"


def search_temperature(epoch: int, epochs: int, final_temp: float) -> float:
    """Return the gate temperature of search epoch `epoch` (0-based): 1 at epoch 0, `final_temp` at epochs - 1.

    It grows by the factor final_temp ** (1 / (epochs - 1)) per epoch. A one-epoch search uses `final_temp`.
    """
    if epochs <= 1:
        return float(final_temp)
    return float(final_temp) ** (min(epoch, epochs - 1) / (epochs - 1))


class OptFSModel(nn.Module):
    """A backbone whose embedding rows are scaled by OptFS's per-feature gates."""

    def __init__(self, backbone: CTRModel, settings: OptFSConfig) -> None:
        super().__init__()
        self.backbone = backbone
        rows = field_embedding(backbone).table.num_embeddings
        self.gate_logits = nn.Parameter(torch.full((rows, 1), settings.mask_init))
        self.scale = 1.0 / _sigmoid(settings.mask_init)
        self.temp = 1.0

    def gates(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.temp * logits) * self.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows, values = lookup(field_embedding(self.backbone), x)
        return self.backbone.forward_embedded((values * self.gates(self.gate_logits[rows])).flatten(1), x)

    def regularizer(self) -> torch.Tensor:
        """Return the sum of the gates of every feature value."""
        return self.gates(self.gate_logits).sum()

    @torch.no_grad()
    def hard_mask(self) -> torch.Tensor:
        """Return the feature values kept by the hard mask m > 0 (bool [rows, 1])."""
        return self.gate_logits > 0


class _Schedule:
    """Step hook of the search: sets each epoch's temperature, keeps the rewind weights and the final mask."""

    def __init__(self, model: OptFSModel, settings: OptFSConfig) -> None:
        self.model = model
        self.settings = settings
        self.rewind_state: dict[str, torch.Tensor] | None = None
        self.final_mask: torch.Tensor | None = None
        self.epoch = 0

    def on_epoch_start(self, epoch: int) -> None:
        self.epoch = epoch
        self.model.temp = search_temperature(epoch, self.settings.search_epochs, self.settings.final_temp)
        if epoch == self.settings.rewind_epoch and self.rewind_state is None:
            self.rewind_state = copy.deepcopy(self.model.backbone.state_dict())

    def after_step(self, step: int) -> None:
        pass

    def epoch_metrics(self) -> dict[str, float | int]:
        mask = self.model.hard_mask()
        if self.epoch == self.settings.search_epochs - 1:
            # The mask of the last search epoch, at the final temperature, is the one retrained.
            self.final_mask = mask.clone()
        return {"temperature": self.model.temp, "kept_feature_ratio": float(mask.float().mean())}

    # The rewind weights and the final mask travel in the checkpoint (see `extra_state`), not in the
    # hook state, which the loop also copies with every best epoch.
    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def extra_state(self) -> dict[str, Any]:
        return {"rewind_state": self.rewind_state or {}, "final_mask": self.final_mask}

    def load_extra_state(self, state: dict[str, Any] | None) -> None:
        if not state:
            return
        self.rewind_state = state.get("rewind_state") or None
        self.final_mask = state.get("final_mask")


def run_optfs(config: PipelineConfig, data: PreparedDataset, reporter: Reporter | None = None,
              output_dir: str | Path | None = None) -> dict[str, Any]:
    """Run OptFS's search and retraining; return the pipeline's metric keys plus `selection`."""
    run = Run(METHOD, config, data, reporter)
    settings: OptFSConfig = run.settings
    progress = run.progress

    if "search" not in progress.done:
        model = OptFSModel(run.new_backbone(), settings).to(run.device)
        schedule = _Schedule(model, settings)
        resume = progress.resume_state("search")
        schedule.load_extra_state((resume or {}).get("optfs"))
        bce = nn.BCEWithLogitsLoss()
        wrap = progress.checkpoint_for("search")
        # The search runs every epoch (patience = epochs), as in the official code, so that the
        # temperature reaches its final value.
        search_train = dataclasses.replace(config.train, max_epochs=settings.search_epochs,
                                           patience=settings.search_epochs)
        result = fit(model, data.train, data.valid, search_train, seed=config.seed, device=run.device,
                     reporter=run.reporter, stage="optfs-search",
                     loss_fn=lambda logits, y: bce(logits, y) + settings.reg_lambda * model.regularizer(),
                     hook=schedule, resume_state=resume,
                     make_checkpoint=lambda state: wrap({**state, "optfs": schedule.extra_state()}))
        if schedule.final_mask is None:
            raise RuntimeError("optfs: the search ended before its last epoch, so no final mask exists")
        progress.finish("search", {"mask": schedule.final_mask.cpu(), "rewind_state": schedule.rewind_state,
                                   "best_valid_auc": result.best_valid_auc})
        run.report_stage_end("optfs-search", {"kept_features": int(schedule.final_mask.sum())})
    search = progress.done["search"]
    mask = search["mask"].bool()

    backbone = run.new_backbone()
    backbone.load_state_dict(search["rewind_state"])
    retrained = MaskedModel(backbone, mask)
    # Departure from the official code: it stops retraining at the first epoch without a better
    # validation AUC, and it also scores the test split after the search. Here the shared patience
    # applies, and the test split is scored once, with the best retrained epoch.
    if "retrain" not in progress.done:
        result = fit(retrained, data.train, data.valid, config.train, seed=config.seed + 1, device=run.device,
                     reporter=run.reporter, stage="optfs-retrain", resume_state=progress.resume_state("retrain"),
                     make_checkpoint=progress.checkpoint_for("retrain"))
        progress.finish("retrain", {"model_state": retrained.state_dict(), "best_valid_auc": result.best_valid_auc})
    retrained.load_state_dict(progress.done["retrain"]["model_state"])

    kept_rows = mask.squeeze(1)
    kept = int(kept_rows.sum())
    selection = describe_rows(kept_rows, data.field_dims, data.field_names)
    return run.finish(retrained.folded(), lambda m, x: m(x),
                      num_params=kept * config.model.embed_dim + count_mlp_params(backbone),
                      selection=selection, extra={"kept_features": kept}, output_dir=output_dir)


def describe_rows(kept_rows: torch.Tensor, field_dims: tuple[int, ...], field_names: tuple[str, ...]) -> dict[str, Any]:
    """Summarize a row mask (bool [rows]): share of each field's feature values kept, and the fields kept."""
    shares, start = {}, 0
    for name, size in zip(field_names, field_dims):
        shares[name] = round(float(kept_rows[start:start + size].float().mean()), 6)
        start += size
    return {"fields_kept": [n for n in field_names if shares[n] > 0], "kept_feature_share": shares,
            "kept_features": int(kept_rows.sum()), "total_features": int(kept_rows.numel()),
            "sparsity": 1.0 - float(kept_rows.float().mean())}


def _sigmoid(value: float) -> float:
    return 1.0 / (1.0 + math.exp(-value))


register_method(METHOD, run_optfs)
