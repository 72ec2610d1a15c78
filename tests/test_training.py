"""Tests of the shared training loop: learning, early stopping, best-weight restore, resume, data parallel."""

from __future__ import annotations

import math
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ihas.config import TrainConfig
from ihas.data.dataset import Split
from ihas.models.dlrm import DLRM
from ihas.reporting import LocalReporter
from ihas.training import epoch_permutation, evaluate, fit, make_adam, predict_logits

FIELD_DIMS = (4, 6, 3)


def rule_split(num_rows: int, seed: int, flip: bool = False) -> Split:
    """Rows whose label is 1 exactly when field 0 has id 1 or 2, so a perfect ranking exists (AUC 1)."""
    rng = np.random.default_rng(seed)
    x = np.stack([rng.integers(0, d, num_rows) for d in FIELD_DIMS], axis=1).astype(np.int32)
    y = np.isin(x[:, 0], (1, 2)).astype(np.float32)
    if flip:
        y = 1.0 - y
    return Split(x=x, y=y)


def new_model(seed: int = 0) -> DLRM:
    torch.manual_seed(seed)
    return DLRM(FIELD_DIMS, embed_dim=4, mlp_dims=(8,))


class InterruptingReporter(LocalReporter):
    """Stands in for a killed process: the report call number `fail_at` raises before saving anything."""

    def __init__(self, directory=None, fail_at: int = 10**9) -> None:
        super().__init__(directory)
        self.calls = 0
        self.fail_at = fail_at

    def report(self, metrics, checkpoint=None) -> None:
        self.calls += 1
        if self.calls == self.fail_at:
            raise KeyboardInterrupt("simulated interruption")
        super().report(metrics, checkpoint)


def test_fit_learns_separable_rule():
    train, valid = rule_split(2000, 1), rule_split(500, 2)
    config = TrainConfig(lr=0.02, batch_size=128, max_epochs=8, patience=8)
    result = fit(new_model(), train, valid, config, seed=0)
    # Field 0 alone decides the label, so a trained model ranks every positive above every negative.
    assert result.best_valid_auc > 0.99


def test_fit_restores_best_epoch_weights():
    train, valid = rule_split(1000, 3), rule_split(300, 4)
    model = new_model()
    reporter = LocalReporter()
    result = fit(model, train, valid, TrainConfig(lr=0.05, batch_size=64, max_epochs=5, patience=5),
                 seed=0, reporter=reporter)
    aucs = [row["valid_auc"] for row in reporter.history]
    assert result.best_valid_auc == max(aucs)
    assert result.best_epoch == int(np.argmax(aucs))
    restored_auc, _ = evaluate(model, valid, 4096, torch.device("cpu"))
    assert restored_auc == pytest.approx(max(aucs), abs=1e-12)


def test_fit_stops_after_patience_epochs():
    # Validation labels are the inverse of the training rule, so every epoch of learning lowers the
    # validation AUC: epoch 0 stays best and the loop stops after 1 + patience epochs.
    train, valid = rule_split(1000, 5), rule_split(300, 6, flip=True)
    result = fit(new_model(), train, valid, TrainConfig(lr=0.05, batch_size=64, max_epochs=20, patience=2), seed=0)
    assert result.best_epoch == 0
    assert result.epochs_run == 3
    assert result.stopped_early


def test_fit_is_reproducible_from_seed():
    train, valid = rule_split(800, 7), rule_split(200, 8)
    config = TrainConfig(batch_size=64, max_epochs=2, patience=2)
    first, second = new_model(), new_model()
    fit(first, train, valid, config, seed=3)
    fit(second, train, valid, config, seed=3)
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items()):
        assert torch.equal(a, b), name


def test_fit_resume_matches_uninterrupted_run(tmp_path):
    train, valid = rule_split(800, 9), rule_split(200, 10)
    config = TrainConfig(lr=0.01, batch_size=64, max_epochs=4, patience=4)
    reference = new_model()
    fit(reference, train, valid, config, seed=1, reporter=LocalReporter())

    interrupted = InterruptingReporter(tmp_path, fail_at=3)
    with pytest.raises(KeyboardInterrupt):
        fit(new_model(), train, valid, config, seed=1, reporter=interrupted)
    checkpoint = LocalReporter(tmp_path).latest_checkpoint()
    assert checkpoint["state"]["epoch"] == 1

    resumed = new_model(seed=99)  # different init: everything must come from the checkpoint
    reporter = LocalReporter(tmp_path)
    result = fit(resumed, train, valid, config, seed=1, reporter=reporter, resume_state=checkpoint["state"])
    assert [row["epoch"] for row in reporter.history] == [2, 3]
    assert len(result.history) == 4
    for (name, a), (_, b) in zip(reference.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), name


def test_fit_single_class_validation_gives_nan_auc():
    train = rule_split(400, 11)
    valid = Split(x=rule_split(50, 12).x, y=np.ones(50, dtype=np.float32))
    with pytest.warns(RuntimeWarning, match="single class"):
        result = fit(new_model(), train, valid, TrainConfig(batch_size=64, max_epochs=3, patience=1), seed=0)
    assert math.isnan(result.best_valid_auc)
    assert result.best_epoch == 0
    assert math.isfinite(result.best_valid_logloss)


def test_fit_rejects_empty_validation_split():
    empty = Split(x=np.zeros((0, 3), dtype=np.int32), y=np.zeros(0, dtype=np.float32))
    with pytest.raises(ValueError, match="validation split is empty"):
        fit(new_model(), rule_split(100, 0), empty, TrainConfig(), seed=0)


def test_epoch_permutation_depends_on_seed_and_epoch():
    a = epoch_permutation(100, seed=1, epoch=0)
    assert torch.equal(a, epoch_permutation(100, seed=1, epoch=0))
    assert not torch.equal(a, epoch_permutation(100, seed=1, epoch=1))
    assert not torch.equal(a, epoch_permutation(100, seed=2, epoch=0))
    assert torch.equal(a.sort().values, torch.arange(100))


def test_predict_logits_independent_of_batch_size():
    model, split = new_model(), rule_split(300, 13)
    x, _ = split.tensors()
    full = predict_logits(model, x, 1000)
    batched = predict_logits(model, x, 7)
    assert full.shape == (300,)
    torch.testing.assert_close(batched, full)


def test_fused_adam_matches_default_adam():
    train = rule_split(256, 14)
    x, y = train.tensors()
    models = [new_model(), new_model()]
    config = TrainConfig(lr=0.01)
    optimizers = [make_adam(models[0].parameters(), config, torch.device("cpu")),
                  torch.optim.Adam(models[1].parameters(), lr=config.lr, weight_decay=config.weight_decay)]
    assert optimizers[0].defaults["fused"]
    for _ in range(5):
        for model, optimizer in zip(models, optimizers):
            optimizer.zero_grad()
            torch.nn.functional.binary_cross_entropy_with_logits(model(x), y).backward()
            optimizer.step()
    for (name, a), (_, b) in zip(models[0].state_dict().items(), models[1].state_dict().items()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _data_parallel_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        model = new_model()
        fit(model, rule_split(512, 15), rule_split(128, 16), TrainConfig(lr=0.01, batch_size=64, max_epochs=2,
                                                                         patience=2), seed=0)
        torch.save(model.state_dict(), f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_data_parallel_ranks_stay_identical(tmp_path):
    mp.start_processes(_data_parallel_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True,
                       start_method="spawn")
    states = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in range(2)]
    for name, tensor in states[0].items():
        assert torch.equal(tensor, states[1][name]), name
    # The ranks trained on different shards, so they must have moved away from the shared init.
    assert not torch.equal(states[0]["mlp.layers.0.weight"], new_model().state_dict()["mlp.layers.0.weight"])
