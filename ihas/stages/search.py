"""Search stage: pretrain the backbone with open gates, then bi-level updates of model and gates.

Bi-level phase: every training batch updates the embeddings and the MLP with BCE on stochastic
straight-through masks while the gate parameters stay fixed. Every `val_every` training batches, one
validation batch updates only the gate parameters with BCE plus the regularizer, using its own Adam
(`gate_lr`). The embeddings are detached in that step, so the gate loss never reaches them.
Validation AUC uses deterministic masks (per-sample histogram threshold); early stopping restores
the best model and gate together.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from ihas import distributed
from ihas.config import PipelineConfig
from ihas.data.dataset import PreparedDataset
from ihas.gates import deterministic_probs, gate_regularizer, straight_through_mask
from ihas.models.base import CTRModel
from ihas.reporting import Checkpoint, Reporter
from ihas.threshold import deterministic_mask
from ihas.training import mix_seed, fit, make_adam

logger = logging.getLogger(__name__)


@dataclass
class SearchResult:
    """Searched backbone and gate weights, with the figures of both phases."""

    model_state: dict[str, torch.Tensor]
    gate_state: dict[str, torch.Tensor]
    gate_kind: str
    best_valid_auc: float
    best_valid_logloss: float
    pretrain_valid_auc: float
    num_fallback: int  # validation rows whose histogram had no valley, at the best epoch
    history: list[dict[str, float | int | str]] = field(default_factory=list)

    def to_state(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "SearchResult":
        return cls(**state)


class GatedModel(nn.Module):
    """A backbone and its gate as one module, so one state dict snapshots and restores both."""

    def __init__(self, model: CTRModel, gate: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.gate = gate


class _GateUpdate:
    """The gate half of the bi-level loop, run by `fit` after every training step."""

    def __init__(self, gated: GatedModel, valid_x: torch.Tensor, valid_y: torch.Tensor,
                 config: PipelineConfig, device: torch.device) -> None:
        self.gated = gated
        self.valid_x, self.valid_y = valid_x, valid_y
        self.search = config.search
        self.seed = config.seed
        self.batch_size = config.train.batch_size
        self.device = device
        gate_params = list(gated.gate.parameters())
        self.optimizer = make_adam(gate_params, config.train, device, lr=config.search.gate_lr)
        self.loss_fn = nn.BCEWithLogitsLoss()
        self.generator = torch.Generator(device=device)
        self.valid_order = torch.empty(0, dtype=torch.int64)
        self.valid_pos = 0
        self.gate_steps = 0
        # Training batches since the search began, across epochs, so that `val_every` larger than
        # one epoch's batch count still leads to gate updates.
        self.batches_seen = 0
        self.num_fallback = 0
        self.kept_dims = 0.0
        self.scored_rows = 0

    def on_epoch_start(self, epoch: int) -> None:
        # Gumbel noise and the order of validation batches are pure functions of (seed, epoch).
        self.generator.manual_seed(mix_seed(self.seed + 1, epoch))
        order_gen = torch.Generator().manual_seed(mix_seed(self.seed + 2, epoch))
        self.valid_order = torch.randperm(self.valid_x.shape[0], generator=order_gen).to(self.device)
        self.valid_pos = 0
        self.gate_steps = 0
        self.num_fallback = 0
        self.kept_dims, self.scored_rows = 0.0, 0
        self.gated.gate.requires_grad_(False)

    def train_forward(self, gated: nn.Module, x: torch.Tensor) -> torch.Tensor:
        e = gated.model.embed(x)
        mask = straight_through_mask(gated.gate(e), self.search.tau, generator=self.generator)
        return gated.model.forward_embedded(e * mask, x)

    def eval_forward(self, gated: nn.Module, x: torch.Tensor) -> torch.Tensor:
        e = gated.model.embed(x)
        mask, num_fallback = deterministic_mask(deterministic_probs(gated.gate(e)), self.search.bins)
        self.num_fallback += int(num_fallback)
        self.kept_dims += float(mask.sum())
        self.scored_rows += int(mask.shape[0])
        return gated.model.forward_embedded(e * mask, x)

    def after_step(self, step: int) -> None:
        self.batches_seen += 1
        if self.batches_seen % self.search.val_every == 0:
            self.gate_step()

    def gate_step(self) -> None:
        """Update the gate parameters on the next validation batch; nothing else changes."""
        if self.valid_pos >= self.valid_order.shape[0]:
            self.valid_pos = 0
        index = self.valid_order[self.valid_pos:self.valid_pos + self.batch_size]
        self.valid_pos += self.batch_size
        x, y = self.valid_x.index_select(0, index), self.valid_y.index_select(0, index)
        model, gate = self.gated.model, self.gated.gate
        gate.requires_grad_(True)
        try:
            with torch.no_grad():
                e = model.embed(x)
            logits = gate(e)
            mask = straight_through_mask(logits, self.search.tau, generator=self.generator)
            loss = self.loss_fn(model.forward_embedded(e * mask, x), y)
            loss = loss + gate_regularizer(deterministic_probs(logits), self.search.reg_lambda,
                                           self.search.polarization)
            self.optimizer.zero_grad(set_to_none=True)
            params = list(gate.parameters())
            # `inputs` limits accumulation to the gate, so the MLP's gradients stay untouched.
            loss.backward(inputs=params)
            distributed.all_reduce_gradients(params)
            self.optimizer.step()
            self.gate_steps += 1
        finally:
            gate.requires_grad_(False)

    def epoch_metrics(self) -> dict[str, float | int]:
        num_dims = self.gated.model.embed(self.valid_x[:1]).shape[1]
        kept = self.kept_dims / max(self.scored_rows * num_dims, 1)
        return {"gate_steps": self.gate_steps, "valid_num_fallback": self.num_fallback,
                "valid_kept_fraction": kept}

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "num_fallback": self.num_fallback,
                "batches_seen": self.batches_seen}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.num_fallback = int(state.get("num_fallback", 0))
        self.batches_seen = int(state.get("batches_seen", 0))


def run_search(model: CTRModel, gate: nn.Module, data: PreparedDataset, config: PipelineConfig, *,
               gate_kind: str, reporter: Reporter | None = None, resume_state: dict[str, Any] | None = None,
               make_checkpoint: Callable[[dict[str, Any]], Checkpoint] | None = None) -> SearchResult:
    """Run pretraining and the bi-level search; `model` and `gate` hold the best weights on return.

    `resume_state` is the stage state of a checkpoint written by `make_checkpoint` during an
    earlier call; the call continues from its phase and epoch.
    """
    device = torch.device(config.device)
    model.to(device)
    gate.to(device)
    wrap = make_checkpoint or (lambda state: {"stage": "search", "state": state})
    resume_state = resume_state or {}
    phase = resume_state.get("phase", "pretrain")

    pretrain_auc = float("nan")
    if phase == "pretrain" and config.search.pretrain_epochs > 0:
        pretrain_config = dataclasses.replace(config.train, max_epochs=config.search.pretrain_epochs)
        result = fit(model, data.train, data.valid, pretrain_config, seed=config.seed, device=device,
                     reporter=reporter, stage="pretrain", resume_state=resume_state.get("fit"),
                     make_checkpoint=lambda state: wrap({"phase": "pretrain", "fit": state}))
        pretrain_auc = result.best_valid_auc
        logger.info("pretrain: best valid AUC %.6g after %d epochs", pretrain_auc, result.epochs_run)
        resume_state = {}
    elif phase == "bilevel":
        pretrain_auc = float(resume_state.get("pretrain_valid_auc", float("nan")))

    gated = GatedModel(model, gate)
    valid_x, valid_y = data.valid.tensors(device)
    hook = _GateUpdate(gated, valid_x, valid_y, config, device)
    search_config = dataclasses.replace(config.train, max_epochs=config.search.max_epochs,
                                        patience=config.search.patience)
    result = fit(gated, data.train, data.valid, search_config, seed=config.seed + 1, device=device,
                 reporter=reporter, stage="search", forward=hook.train_forward,
                 eval_forward=hook.eval_forward, parameters=model.parameters(), hook=hook,
                 resume_state=resume_state.get("fit"),
                 make_checkpoint=lambda state: wrap({"phase": "bilevel", "pretrain_valid_auc": pretrain_auc,
                                                     "fit": state}))
    gate.requires_grad_(True)
    best = next((row for row in result.history if row["epoch"] == result.best_epoch), {})
    return SearchResult(
        model_state={k: v.detach().clone() for k, v in model.state_dict().items()},
        gate_state={k: v.detach().clone() for k, v in gate.state_dict().items()},
        gate_kind=gate_kind, best_valid_auc=result.best_valid_auc,
        best_valid_logloss=result.best_valid_logloss, pretrain_valid_auc=pretrain_auc,
        num_fallback=int(best.get("valid_num_fallback", 0)), history=result.history)
