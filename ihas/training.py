"""The supervised training loop shared by every stage: Adam, early stopping on validation AUC, resume.

Batches are drawn by slicing a seeded random permutation of the in-memory training tensors, so a
run is reproducible from its seed and a resumed run draws the same batches as an uninterrupted one.
After each epoch the loop scores the whole validation split, reports the epoch's metrics with a
checkpoint, and stops after `patience` epochs without a better validation AUC. The best weights are
restored before it returns.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Protocol

import torch
from torch import nn

from ihas import distributed
from ihas.config import TrainConfig
from ihas.data.dataset import Split
from ihas.metrics import log_loss, roc_auc
from ihas.reporting import Checkpoint, Reporter

logger = logging.getLogger(__name__)

ForwardFn = Callable[[nn.Module, torch.Tensor], torch.Tensor]
CheckpointFn = Callable[[dict[str, Any]], Checkpoint]


class StepHook(Protocol):
    """Extra work that a stage runs inside the loop, such as the gate update of the search stage."""

    def on_epoch_start(self, epoch: int) -> None: ...

    def after_step(self, step: int) -> None:
        """Run after the optimizer step of training batch `step` (counted from 0 within the epoch)."""

    def epoch_metrics(self) -> dict[str, float | int]:
        """Return extra metrics of the epoch that just ended, to add to its report."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass
class FitResult:
    """Outcome of one `fit` call. On return, the model passed in has the best weights."""

    best_valid_auc: float
    best_valid_logloss: float
    best_epoch: int  # 0-based epoch whose weights were restored
    epochs_run: int
    stopped_early: bool
    train_seconds: float
    train_samples: int  # rows processed by this process over all epochs run in this call
    history: list[dict[str, float | int | str]] = field(default_factory=list)


def epoch_permutation(num_rows: int, seed: int, epoch: int) -> torch.Tensor:
    """Return the row order of one epoch, a pure function of (seed, epoch) so a resumed run repeats it."""
    generator = torch.Generator().manual_seed(mix_seed(seed, epoch))
    return torch.randperm(num_rows, generator=generator)


def mix_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch * 7_919 + 12_345) % (2**63 - 1)


def make_adam(parameters: Iterable[nn.Parameter], config: TrainConfig, device: torch.device,
              lr: float | None = None) -> torch.optim.Adam:
    """Build Adam with the config's lr and weight decay, fused where the device supports it.

    The fused kernel gives the same updates as the default loop (checked in tests/test_training.py)
    and was measured faster on CPU by benchmarks/bench_training.py; see BENCHMARKS.md.
    """
    params = list(parameters)
    use_fused = device.type in ("cpu", "cuda") and all(p.is_floating_point() for p in params)
    return torch.optim.Adam(params, lr=config.lr if lr is None else lr,
                            weight_decay=config.weight_decay, fused=use_fused)


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor, batch_size: int,
                   forward: ForwardFn | None = None) -> torch.Tensor:
    """Score rows `x` (int [N, F]) in eval mode without gradients; return float32 logits [N] on x's device."""
    was_training = model.training
    model.eval()
    try:
        outputs = [(_default_forward if forward is None else forward)(model, x[start:start + batch_size])
                   for start in range(0, x.shape[0], batch_size)]
    finally:
        model.train(was_training)
    if not outputs:
        return torch.empty(0, dtype=torch.float32, device=x.device)
    return torch.cat(outputs).float()


def evaluate(model: nn.Module, split: Split, batch_size: int, device: torch.device,
             forward: ForwardFn | None = None) -> tuple[float, float]:
    """Return (AUC, logloss) over the whole split; AUC is NaN when the split has one class."""
    x, y = split.tensors(device)
    logits = predict_logits(model, x, batch_size, forward)
    probs = torch.sigmoid(logits).cpu().numpy()
    labels = y.cpu().numpy()
    return roc_auc(labels, probs), log_loss(labels, probs)


def _default_forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(x)


def _is_better(auc: float, best: float) -> bool:
    if math.isnan(auc):
        return False
    return math.isnan(best) or auc > best


def fit(model: nn.Module, train: Split, valid: Split, config: TrainConfig, *, seed: int,
        device: str | torch.device = "cpu", reporter: Reporter | None = None, stage: str = "train",
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        forward: ForwardFn | None = None, eval_forward: ForwardFn | None = None,
        parameters: Iterable[nn.Parameter] | None = None, hook: StepHook | None = None,
        resume_state: dict[str, Any] | None = None, make_checkpoint: CheckpointFn | None = None,
        extra_metrics: dict[str, float | int | str] | None = None) -> FitResult:
    """Train `model` with Adam and early stopping on validation AUC; restore the best weights.

    `forward` scores a training batch and `eval_forward` a validation batch (both default to
    `model(x)`). `parameters` limits what the optimizer updates (default: all of the model's).
    `resume_state` is the `state` of a checkpoint written by an earlier call with the same
    arguments; the loop continues after its last finished epoch. Each epoch's checkpoint is
    `make_checkpoint(state)`, or `{"stage": stage, "state": state}` without it.
    """
    device = torch.device(device)
    model.to(device)
    loss_fn = loss_fn or nn.BCEWithLogitsLoss()
    forward = forward or _default_forward
    eval_forward = eval_forward or forward
    params = list(model.parameters() if parameters is None else parameters)
    optimizer = make_adam(params, config, device)
    x_train, y_train = train.tensors(device)
    if len(train) == 0:
        raise ValueError(f"stage {stage!r}: the training split is empty; nothing to train on")
    if len(valid) == 0:
        raise ValueError(f"stage {stage!r}: the validation split is empty, so early stopping has no signal")

    world, rank = distributed.world_size(), distributed.rank()
    # Each process takes an equal share of every permutation and a proportional share of each
    # batch, so the global batch stays `config.batch_size` and all ranks take the same number of steps.
    shard_rows = len(train) // world
    batch_size = max(1, config.batch_size // world)

    start_epoch, best_auc, best_logloss, best_epoch, bad_epochs = 0, float("nan"), float("nan"), -1, 0
    best_state: dict[str, Any] = {}
    history: list[dict[str, float | int | str]] = []
    if resume_state is not None:
        model.load_state_dict(resume_state["model"])
        optimizer.load_state_dict(resume_state["optimizer"])
        if hook is not None:
            hook.load_state_dict(resume_state["hook"])
        start_epoch = int(resume_state["epoch"]) + 1
        best_auc = float(resume_state["best_auc"])
        best_logloss = float(resume_state["best_logloss"])
        best_epoch = int(resume_state["best_epoch"])
        bad_epochs = int(resume_state["bad_epochs"])
        best_state = resume_state["best_state"]
        history = list(resume_state["history"])
        logger.info("stage %s: resuming at epoch %d (best valid AUC %.6g at epoch %d)",
                    stage, start_epoch, best_auc, best_epoch)

    stopped_early = bad_epochs >= config.patience
    train_samples = 0
    started = time.perf_counter()
    epoch = start_epoch
    while epoch < config.max_epochs and not stopped_early:
        model.train()
        if hook is not None:
            hook.on_epoch_start(epoch)
        order = epoch_permutation(len(train), seed, epoch)[rank * shard_rows:(rank + 1) * shard_rows]
        order = order.to(device)
        loss_sum = torch.zeros((), device=device)
        num_batches = 0
        for step, start in enumerate(range(0, shard_rows, batch_size)):
            index = order[start:start + batch_size]
            xb, yb = x_train.index_select(0, index), y_train.index_select(0, index)
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(forward(model, xb), yb)
            loss.backward()
            distributed.all_reduce_gradients(params)
            optimizer.step()
            loss_sum += loss.detach()
            num_batches += 1
            train_samples += int(index.shape[0])
            if hook is not None:
                hook.after_step(step)

        valid_auc, valid_logloss = evaluate(model, valid, config.eval_batch_size, device, eval_forward)
        train_loss = float(loss_sum) / max(num_batches, 1)
        if _is_better(valid_auc, best_auc) or (best_epoch < 0 and math.isnan(valid_auc)):
            # NOTE: when validation AUC is NaN (one class), no epoch improves on another; the
            # first epoch's weights are kept so the result is still defined.
            best_auc, best_logloss, best_epoch, bad_epochs = valid_auc, valid_logloss, epoch, 0
            best_state = _snapshot(model, hook)
        else:
            bad_epochs += 1
        stopped_early = bad_epochs >= config.patience

        metrics: dict[str, float | int | str] = {
            "stage": stage, "epoch": epoch, "train_loss": train_loss,
            "valid_auc": valid_auc, "valid_logloss": valid_logloss, "best_valid_auc": best_auc}
        if hook is not None:
            metrics.update(hook.epoch_metrics())
        if extra_metrics:
            metrics.update(extra_metrics)
        history.append(metrics)
        if reporter is not None:
            state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch,
                     "best_auc": best_auc, "best_logloss": best_logloss, "best_epoch": best_epoch,
                     "bad_epochs": bad_epochs, "best_state": best_state, "history": history,
                     "hook": hook.state_dict() if hook is not None else {}}
            checkpoint = make_checkpoint(state) if make_checkpoint else {"stage": stage, "state": state}
            reporter.report(metrics, checkpoint)
        epoch += 1

    if best_state:
        model.load_state_dict(best_state["model"])
        if hook is not None:
            hook.load_state_dict(best_state["hook"])
    return FitResult(best_valid_auc=best_auc, best_valid_logloss=best_logloss, best_epoch=best_epoch,
                     epochs_run=epoch - start_epoch, stopped_early=stopped_early,
                     train_seconds=time.perf_counter() - started, train_samples=train_samples,
                     history=history)


def _snapshot(model: nn.Module, hook: StepHook | None) -> dict[str, Any]:
    return {"model": copy.deepcopy(model.state_dict()),
            "hook": copy.deepcopy(hook.state_dict()) if hook is not None else {}}
