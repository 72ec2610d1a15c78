"""Parts that every baseline shares: its settings, the backbone's embedding table, resume, final evaluation.

A baseline run uses the checkpoint layout of `ihas.pipeline`. Every report carries the finished
stages' outputs under `done` and the running stage's state under `current`. A rerun with the same
reporter storage therefore skips finished stages and continues the running one.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ihas.baselines.config import baseline_config
from ihas.config import PipelineConfig
from ihas.data.dataset import PreparedDataset, Split
from ihas.metrics import log_loss, roc_auc
from ihas.models.base import CTRModel
from ihas.models.embedding import FieldEmbedding
from ihas.models.factory import build_backbone
from ihas.pipeline import StageProgress as Progress
from ihas.pipeline import seed_everything
from ihas.reporting import LocalReporter, Reporter
from ihas import distributed
from ihas.training import ForwardFn, make_adam, mix_seed, predict_logits

logger = logging.getLogger(__name__)

SELECTION_FILE = "selection.json"

__all__ = ["MaskedModel", "Progress", "Run", "ValidationUpdates", "count_mlp_params", "evaluate_method",
           "field_embedding", "half_fields", "lookup", "rows_of", "seed_everything"]


class Run:
    """The common state of one baseline run: settings, reporter, resume bookkeeping and device."""

    def __init__(self, method: str, config: PipelineConfig, data: PreparedDataset,
                 reporter: Reporter | None) -> None:
        if config.variant != method:
            config = config.replace(variant=method)
        self.method = method
        self.config = config
        self.data = data
        self.settings = baseline_config(config.baseline, method)
        self.reporter = reporter if reporter is not None else LocalReporter()
        self.device = torch.device(config.device)
        self.progress = Progress(config, data, self.reporter)
        logger.info("%s on %d/%d/%d rows with settings %s and config %s", method, len(data.train),
                    len(data.valid), len(data.test), self.settings, json.dumps(config.to_dict(), sort_keys=True))

    def new_backbone(self) -> CTRModel:
        """Build the shared backbone (embedding dim and MLP from `config.model`) with this run's seed."""
        seed_everything(self.config.seed)
        return build_backbone(self.config.model.backbone, self.data.field_dims, self.config.model)

    def report_stage_end(self, stage: str, metrics: dict[str, Any]) -> None:
        """Report a finished stage as `<stage>-done`, with a checkpoint that lists it under `done`.

        Without it, the finished stage would be saved only with the next stage's first epoch.
        """
        self.reporter.report({"stage": f"{stage}-done", "epoch": 0, **metrics}, self.progress.final_checkpoint())

    def finish(self, model: nn.Module, forward: ForwardFn, *, num_params: int, selection: dict[str, Any],
               extra: dict[str, Any], output_dir: str | Path | None) -> dict[str, Any]:
        """Evaluate on validation and test, report the final row and write `selection.json`; return the metrics.

        `selection` is returned as a JSON string, so that it survives stores that keep only scalar columns.
        `model` has the weights of its best validation epoch (`fit` restores them), and the test
        split is scored only here. Some official implementations test the last epoch or stop on the
        test split instead; neither happens here.
        """
        batch = self.config.train.eval_batch_size
        valid = evaluate_method(model, self.data.valid, forward, batch_size=batch, device=self.device, prefix="valid")
        test = evaluate_method(model, self.data.test, forward, batch_size=batch, device=self.device, prefix="test")
        metrics: dict[str, Any] = {"variant": self.method, "seed": self.config.seed,
                                   "fingerprint": self.data.fingerprint,
                                   "valid_auc": valid["valid_auc"], "valid_logloss": valid["valid_logloss"],
                                   **test, "num_params": int(num_params), **extra,
                                   "selection": json.dumps(selection, sort_keys=True)}
        metrics["wall_seconds"] = self.progress.elapsed()
        logger.info("%s: test AUC %.6g, test logloss %.6g, %d parameters, %.0f samples/s at inference",
                    self.method, metrics["test_auc"], metrics["test_logloss"], metrics["num_params"],
                    metrics["inference_samples_per_s"])
        if output_dir is not None:
            directory = Path(output_dir)
            directory.mkdir(parents=True, exist_ok=True)
            _write_json_atomic(directory / SELECTION_FILE, {"method": self.method, **selection})
        self.reporter.report({"stage": "test", "epoch": 0,
                              **{k: v for k, v in metrics.items() if isinstance(v, (int, float, str))}},
                             self.progress.final_checkpoint())
        return metrics


def evaluate_method(model: nn.Module, split: Split, forward: ForwardFn, *, batch_size: int,
                    device: torch.device, prefix: str) -> dict[str, float | int]:
    """Score a whole split with `forward` in eval mode; return AUC, logloss and inference time.

    The time covers batch inference over the whole split after one warm-up batch, measured with
    time.perf_counter, as the pipeline measures the iHAS variants.
    """
    model.to(device).eval()
    x, y = split.tensors(device)
    if x.shape[0] == 0:
        raise ValueError(f"the {prefix} split is empty; nothing to evaluate")
    predict_logits(model, x[:batch_size], batch_size, forward)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    logits = predict_logits(model, x, batch_size, forward)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - started
    probs = torch.sigmoid(logits).cpu().numpy().astype(np.float64)
    labels = y.cpu().numpy().astype(np.float64)
    return {f"{prefix}_auc": roc_auc(labels, probs), f"{prefix}_logloss": log_loss(labels, probs),
            f"{prefix}_rows": int(labels.size), "inference_seconds": seconds,
            "inference_samples_per_s": labels.size / seconds if seconds > 0 else math.inf}


def field_embedding(model: nn.Module) -> FieldEmbedding:
    """Return the backbone's shared `FieldEmbedding` table; baselines that prune rows or entries need it."""
    table = getattr(model, "embedding", None)
    if not isinstance(table, FieldEmbedding):
        raise ValueError(f"{type(model).__name__} has no FieldEmbedding named 'embedding'; this baseline needs "
                         "a backbone built on one table with field offsets (dlrm, fm, wide_deep or deepfm)")
    return table


def rows_of(embedding: FieldEmbedding, x: torch.Tensor) -> torch.Tensor:
    """Map field-local ids x (int [B, F]) to rows of the shared table (int64 [B, F])."""
    return x.long() + embedding.offsets


def lookup(embedding: FieldEmbedding, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (table rows int64 [B, F], their embeddings float [B, F, D])."""
    rows = rows_of(embedding, x)
    return rows, embedding.table(rows)


def half_fields(num_fields: int, requested: int) -> int:
    """Number of fields to keep: `requested` when set (> 0), else half of them rounded down, at least one."""
    if requested > num_fields:
        raise ValueError(f"cannot keep {requested} fields: the dataset has only {num_fields}; lower keep_fields")
    return requested if requested > 0 else max(1, num_fields // 2)


def count_mlp_params(model: nn.Module) -> int:
    """Count every parameter of `model` outside its `embedding` table."""
    return sum(p.numel() for name, p in model.named_parameters() if not name.startswith("embedding."))


class MaskedModel(nn.Module):
    """A backbone whose table is multiplied by a fixed 0/1 mask, so masked entries score as 0 and get no loss gradient.

    `mask` is float or bool, [rows, D] for single entries or [rows, 1] for whole rows.
    """

    def __init__(self, backbone: CTRModel, mask: torch.Tensor) -> None:
        super().__init__()
        self.backbone = backbone
        self.register_buffer("mask", mask.to(torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows, values = lookup(field_embedding(self.backbone), x)
        return self.backbone.forward_embedded((values * self.mask[rows]).flatten(1), x)

    @torch.no_grad()
    def folded(self) -> CTRModel:
        """Return a copy of the backbone with the mask multiplied into its table; it scores like this model.

        Inference uses it, so pruned entries are zeros of a dense table and cost no extra work.
        """
        backbone = copy.deepcopy(self.backbone)
        field_embedding(backbone).table.weight.mul_(self.mask)
        return backbone


class ValidationUpdates:
    """Step hook of a bi-level search: every `every` training batches, one validation batch updates `params`.

    `loss(x, y)` scores a validation batch; only `params` (the architecture or controller) receive
    its gradient, through their own Adam with learning rate `lr`. Between updates `params` do not
    require gradients, so the training batches leave them alone. Validation batches follow a seeded
    permutation per epoch, so a resumed run draws the same ones. `on_epoch(epoch)` runs first at
    the start of every epoch (for example to set a temperature).
    """

    def __init__(self, params: list[nn.Parameter], valid: Split, loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                 *, every: int, lr: float, config: PipelineConfig, seed: int, device: torch.device,
                 on_epoch: Callable[[int], None] | None = None) -> None:
        self.params = params
        self.valid_x, self.valid_y = valid.tensors(device)
        self.loss = loss
        self.every = every
        self.batch_size = config.train.batch_size
        self.seed = seed
        self.device = device
        self.on_epoch = on_epoch
        self.optimizer = make_adam(params, config.train, device, lr=lr)
        self.order = torch.empty(0, dtype=torch.int64)
        self.position = 0
        self.steps = 0

    def on_epoch_start(self, epoch: int) -> None:
        if self.on_epoch is not None:
            self.on_epoch(epoch)
        generator = torch.Generator().manual_seed(mix_seed(self.seed, epoch))
        self.order = torch.randperm(self.valid_x.shape[0], generator=generator).to(self.device)
        self.position = 0
        self.steps = 0
        self._freeze(True)

    def after_step(self, step: int) -> None:
        if (step + 1) % self.every == 0:
            self.update()

    def update(self) -> None:
        """Take one Adam step of `params` on the next validation batch; nothing else changes."""
        if self.position >= self.order.shape[0]:
            self.position = 0
        index = self.order[self.position:self.position + self.batch_size]
        self.position += self.batch_size
        x, y = self.valid_x.index_select(0, index), self.valid_y.index_select(0, index)
        self._freeze(False)
        try:
            loss = self.loss(x, y)
            self.optimizer.zero_grad(set_to_none=True)
            # `inputs` limits accumulation to `params`, so the backbone's gradients stay untouched.
            loss.backward(inputs=self.params)
            distributed.all_reduce_gradients(self.params)
            self.optimizer.step()
            self.steps += 1
        finally:
            self._freeze(True)

    def epoch_metrics(self) -> dict[str, float | int]:
        return {"validation_updates": self.steps}

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            self.optimizer.load_state_dict(state["optimizer"])

    def release(self) -> None:
        """Make `params` trainable again once the search is over."""
        self._freeze(False)

    def _freeze(self, frozen: bool) -> None:
        for param in self.params:
            param.requires_grad_(not frozen)


def _write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)

