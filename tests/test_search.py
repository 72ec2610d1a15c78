"""Tests of the search stage: the two halves of the bi-level update touch only their own parameters."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from ihas.config import PipelineConfig, SearchConfig, TrainConfig
from ihas.data.dataset import PreparedDataset, Split
from ihas.gates import InstanceWiseGate
from ihas.models.dlrm import DLRM
from ihas.reporting import LocalReporter
from ihas.stages.search import GatedModel, _GateUpdate, run_search
from ihas.training import fit


@pytest.fixture(scope="module")
def small_criteo(criteo_data) -> PreparedDataset:
    """The first 3000 training and 600 validation rows of the real Criteo sample, to keep the tests quick."""
    def head(split: Split, rows: int) -> Split:
        return Split(x=np.ascontiguousarray(split.x[:rows]), y=np.ascontiguousarray(split.y[:rows]))
    return dataclasses.replace(criteo_data, train=head(criteo_data.train, 3000), valid=head(criteo_data.valid, 600))


def small_config(**search) -> PipelineConfig:
    settings = {"pretrain_epochs": 1, "max_epochs": 1, "patience": 1, "val_every": 2, **search}
    return PipelineConfig(train=TrainConfig(batch_size=512, max_epochs=1, patience=1),
                          search=SearchConfig(**settings))


def build(data, seed: int = 0) -> tuple[DLRM, InstanceWiseGate]:
    torch.manual_seed(seed)
    model = DLRM(data.field_dims, embed_dim=16, mlp_dims=(16, 8))
    return model, InstanceWiseGate(data.num_fields * 16)


def clone_params(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in module.named_parameters()}


def test_gate_step_changes_only_gate(small_criteo):
    model, gate = build(small_criteo)
    gated = GatedModel(model, gate)
    valid_x, valid_y = small_criteo.valid.tensors()
    hook = _GateUpdate(gated, valid_x, valid_y, small_config(), torch.device("cpu"))
    hook.on_epoch_start(0)
    model_before, gate_before = clone_params(model), clone_params(gate)

    hook.gate_step()

    for name, value in clone_params(model).items():
        assert torch.equal(value, model_before[name]), f"gate step changed model parameter {name}"
        assert model.get_parameter(name).grad is None, f"gate step left a gradient on {name}"
    changed = [name for name, value in clone_params(gate).items() if not torch.equal(value, gate_before[name])]
    assert sorted(changed) == ["linear.bias", "linear.weight"]
    assert hook.gate_steps == 1


def test_model_steps_leave_gate_unchanged(small_criteo):
    model, gate = build(small_criteo)
    gated = GatedModel(model, gate)
    config = small_config(val_every=10**6)  # no gate step in this epoch
    valid_x, valid_y = small_criteo.valid.tensors()
    hook = _GateUpdate(gated, valid_x, valid_y, config, torch.device("cpu"))
    gate_before, embedding_before = clone_params(gate), model.embedding.table.weight.detach().clone()

    fit(gated, small_criteo.train, small_criteo.valid, config.train, seed=0, forward=hook.train_forward,
        eval_forward=hook.eval_forward, parameters=model.parameters(), hook=hook)

    for name, value in clone_params(gate).items():
        assert torch.equal(value, gate_before[name]), f"model step changed gate parameter {name}"
    assert not torch.equal(model.embedding.table.weight, embedding_before)


def test_run_search_counts_gate_steps_and_reports(small_criteo):
    model, gate = build(small_criteo)
    config = small_config()
    reporter = LocalReporter()
    result = run_search(model, gate, small_criteo, config, gate_kind="instance", reporter=reporter)

    stages = [(row["stage"], row["epoch"]) for row in reporter.history]
    assert stages == [("pretrain", 0), ("search", 0)]
    batches = math.ceil(len(small_criteo.train) / config.train.batch_size)
    assert reporter.history[1]["gate_steps"] == batches // config.search.val_every
    assert math.isfinite(result.best_valid_auc)
    assert math.isfinite(result.pretrain_valid_auc)
    assert 0 <= result.num_fallback <= len(small_criteo.valid)
    for name, value in model.state_dict().items():
        assert torch.equal(result.model_state[name], value), name
    for name, value in gate.state_dict().items():
        assert torch.equal(result.gate_state[name], value), name


def test_run_search_is_reproducible(small_criteo):
    config = dataclasses.replace(small_config(), seed=5)
    states = []
    for _ in range(2):
        model, gate = build(small_criteo, seed=5)
        states.append(run_search(model, gate, small_criteo, config, gate_kind="instance").gate_state)
    for name, value in states[0].items():
        assert torch.equal(value, states[1][name]), name
    assert np.isfinite(states[0]["linear.weight"].numpy()).all()
