"""OptEmbed: mutation and crossover leave parents unchanged, the evolution resumes, the supernet masks rows."""

from __future__ import annotations

import json
import math

import numpy as np
import torch

from ihas.baselines.config import OptEmbedConfig
from ihas.baselines.optembed import Supernet, crossover, evolutionary_search, mutate, run_optembed
from ihas.config import PipelineConfig
from ihas.models.dlrm import DLRM


def test_mutation_leaves_parent_unchanged():
    parent = [3, 5, 7, 9]
    snapshot = list(parent)
    child = mutate(parent, prob=1.0, max_dim=16, rng=np.random.default_rng(0))
    assert parent == snapshot
    assert isinstance(child, tuple)
    assert len(child) == 4
    assert all(1 <= d <= 16 for d in child)


def test_mutation_with_zero_probability_copies():
    parent = [3, 5, 7, 9]
    assert mutate(parent, prob=0.0, max_dim=16, rng=np.random.default_rng(0)) == (3, 5, 7, 9)


def test_crossover_splits_at_a_field_boundary():
    first, second = [1, 1, 1, 1, 1], [9, 9, 9, 9, 9]
    rng = np.random.default_rng(0)
    for _ in range(50):
        child = crossover(first, second, rng)
        point = child.index(9)  # first field taken from the second parent
        assert 1 <= point <= 4  # each parent gives at least one field
        assert child == tuple(first[:point]) + tuple(second[point:])
    assert first == [1] * 5
    assert second == [9] * 5


def _score(candidate):
    # Best at dims (4, 8, 12): a separable score whose maximum is known.
    return -float(sum(abs(d - t) for d, t in zip(candidate, (4, 8, 12))))


def test_evolution_never_loses_its_best():
    settings = OptEmbedConfig(iterations=15, top_k=5)
    best_per_iteration = []

    def record(iteration, state):
        best_per_iteration.append(max(s for _, s in state["scored"]))

    best, score = evolutionary_search(_score, 3, 16, settings, seed=0, on_iteration=record)
    assert len(best_per_iteration) == 16  # the initial population, then 15 iterations
    assert best_per_iteration == sorted(best_per_iteration)
    assert score == _score(best) == best_per_iteration[-1]


def test_evolution_resume_matches_uninterrupted():
    settings = OptEmbedConfig(iterations=6, top_k=5)
    saved = {}

    def keep(iteration, state):
        saved[iteration] = json.loads(json.dumps(state))  # as a checkpoint would hold it

    full = evolutionary_search(_score, 3, 16, settings, seed=1, on_iteration=keep)
    resumed = evolutionary_search(_score, 3, 16, settings, seed=1, state=saved[2])
    assert resumed == full


def test_supernet_row_mask_uses_field_threshold():
    torch.manual_seed(0)
    supernet = Supernet(DLRM([2, 3], embed_dim=2), OptEmbedConfig())
    table = supernet.backbone.embedding.table.weight
    with torch.no_grad():
        table.copy_(torch.tensor([[0.1, 0.1], [0.5, 0.5], [0.2, -0.2], [0.0, 0.05], [1.0, 0.0]]))
        supernet.thresholds.copy_(torch.tensor([0.3, 0.3]))
    # L1 norms 0.2, 1.0 | 0.4, 0.05, 1.0 against threshold 0.3 of each field.
    assert supernet.row_mask().tolist() == [False, True, True, False, True]


class _CapturingDLRM(DLRM):
    """DLRM that keeps the last embedding it scored, to check what the supernet masked."""

    def forward_embedded(self, e, x):
        self.seen = e.detach().clone()
        return super().forward_embedded(e, x)


def test_supernet_dims_mask_a_prefix():
    torch.manual_seed(0)
    supernet = Supernet(_CapturingDLRM([2, 3], embed_dim=4), OptEmbedConfig(threshold_init=-1.0)).eval()
    x = torch.tensor([[1, 2]], dtype=torch.int32)
    supernet.score(x, torch.tensor([1, 3]), random_dims=False)
    e = supernet.backbone.seen.view(2, 4)
    # Field 0 keeps its first dim, field 1 its first three; every row is kept (threshold -1).
    assert torch.count_nonzero(e[0, 1:]) == 0
    assert torch.count_nonzero(e[0, :1]) == 1
    assert torch.count_nonzero(e[1, 3:]) == 0
    assert torch.count_nonzero(e[1, :3]) == 3


def test_optembed_end_to_end(criteo_data):
    config = PipelineConfig.from_dict({"variant": "optembed", "train": {"max_epochs": 1},
                                       "baseline": {"optembed": {"supernet_epochs": 1, "iterations": 1}}})
    metrics = run_optembed(config, criteo_data)
    assert math.isfinite(metrics["test_auc"])
    assert math.isfinite(metrics["test_logloss"])
    selection = json.loads(metrics["selection"])
    assert all(1 <= d <= 16 for d in selection["dims_per_field"].values())
    assert len(selection["dims_per_field"]) == criteo_data.num_fields
