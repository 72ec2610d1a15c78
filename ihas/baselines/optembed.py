"""OptEmbed (Lyu et al., CIKM 2022): supernet, evolutionary search over per-field dims, retraining.

Supernet: each field f has a learnable threshold t_f. A feature value's embedding row is kept when
its L1 norm exceeds t_f (a step function with a straight-through gradient), and the loss adds
alpha * sum_f exp(-t_f), which pushes the thresholds up. During training every (sample, field)
also uses a random prefix of the embedding dims, of uniform length in 1..D, so that the supernet
learns to score any per-field dims. The thresholds have their own Adam (`threshold_lr`).
Evolutionary search: candidates are per-field dims in 1..D, scored by validation AUC over the whole
split with the supernet's weights and row masks. In each iteration, the `top_k` best candidates
found so far are the parents of `mutation_num` mutations and `crossover_num` single-point
crossovers over fields. Children are new tuples, so the parents never change.
Retrain: the backbone restarts from its initial weights (rebuilt from the run's seed) with the row
mask of the supernet and the best candidate's dims, and trains with early stopping on validation AUC.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from ihas import distributed
from ihas.baselines.common import MaskedModel, Run, count_mlp_params, field_embedding, lookup
from ihas.baselines.config import OptEmbedConfig
from ihas.config import PipelineConfig
from ihas.data.dataset import PreparedDataset
from ihas.models.base import CTRModel
from ihas.reporting import Reporter
from ihas.training import evaluate, fit, make_adam, mix_seed
from ihas.variants import register_method

logger = logging.getLogger(__name__)

METHOD = "optembed"
Candidate = tuple[int, ...]


class _StraightThroughStep(torch.autograd.Function):
    """Forward: [z > 0]. Backward: the gradient passes through unchanged (straight-through)."""

    @staticmethod
    def forward(ctx, z: torch.Tensor) -> torch.Tensor:
        return (z > 0).to(z.dtype)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> torch.Tensor:
        return grad_output


class Supernet(nn.Module):
    """A backbone with OptEmbed's per-field row thresholds and dim-prefix masks."""

    def __init__(self, backbone: CTRModel, settings: OptEmbedConfig) -> None:
        super().__init__()
        self.backbone = backbone
        embedding = field_embedding(backbone)
        self.num_fields = embedding.num_fields
        self.embed_dim = embedding.embed_dim
        self.thresholds = nn.Parameter(torch.full((self.num_fields,), settings.threshold_init))
        field_of_row = torch.repeat_interleave(torch.arange(self.num_fields), torch.tensor(embedding.field_dims))
        self.register_buffer("field_of_row", field_of_row, persistent=False)
        self.generator: torch.Generator | None = None

    def score(self, x: torch.Tensor, dims: torch.Tensor | None, random_dims: bool) -> torch.Tensor:
        """Score x with row masks and either random dim prefixes, given dims (int [F]), or all dims."""
        _, values = lookup(field_embedding(self.backbone), x)  # [B, F, D]
        row_keep = _StraightThroughStep.apply(values.abs().sum(dim=-1) - self.thresholds)  # [B, F]
        values = values * row_keep.unsqueeze(-1)
        positions = torch.arange(self.embed_dim, device=x.device)
        if random_dims:
            lengths = torch.randint(1, self.embed_dim + 1, (x.shape[0], self.num_fields, 1),
                                    generator=self.generator, device=x.device)
            values = values * (positions < lengths).to(values.dtype)
        elif dims is not None:
            values = values * (positions < dims.to(x.device).unsqueeze(-1)).to(values.dtype)
        return self.backbone.forward_embedded(values.flatten(1), x)

    def regularizer(self) -> torch.Tensor:
        return torch.exp(-self.thresholds).sum()

    @torch.no_grad()
    def row_mask(self) -> torch.Tensor:
        """Return the rows whose L1 norm exceeds their field's threshold (bool [rows])."""
        table = field_embedding(self.backbone).table.weight
        return table.abs().sum(dim=1) > self.thresholds[self.field_of_row]


class _ThresholdStep:
    """Step hook of the supernet: the thresholds take their own Adam step after each training batch."""

    def __init__(self, supernet: Supernet, config: PipelineConfig, settings: OptEmbedConfig, device: torch.device) -> None:
        self.supernet = supernet
        self.seed = config.seed
        self.optimizer = make_adam([supernet.thresholds], config.train, device, lr=settings.threshold_lr)

    def on_epoch_start(self, epoch: int) -> None:
        self.supernet.generator.manual_seed(mix_seed(self.seed + 4, epoch))

    def after_step(self, step: int) -> None:
        distributed.all_reduce_gradients([self.supernet.thresholds])
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def epoch_metrics(self) -> dict[str, float | int]:
        return {"kept_row_ratio": float(self.supernet.row_mask().float().mean()),
                "mean_threshold": float(self.supernet.thresholds.detach().mean())}

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            self.optimizer.load_state_dict(state["optimizer"])


def mutate(parent: Sequence[int], prob: float, max_dim: int, rng: np.random.Generator) -> Candidate:
    """Return a new candidate: each field's dim is redrawn uniformly from 1..max_dim with probability `prob`."""
    child = list(parent)
    for f in range(len(child)):
        if rng.random() < prob:
            child[f] = int(rng.integers(1, max_dim + 1))
    return tuple(child)


def crossover(first: Sequence[int], second: Sequence[int], rng: np.random.Generator) -> Candidate:
    """Return a new candidate: `first`'s dims before a random field boundary, `second`'s after it."""
    if len(first) != len(second):
        raise ValueError(f"parents differ in length: {len(first)} and {len(second)} fields")
    if len(first) < 2:
        return tuple(first)
    point = int(rng.integers(1, len(first)))  # 1..F-1, so each parent gives at least one field
    return tuple(first[:point]) + tuple(second[point:])


def evolutionary_search(score: Callable[[Candidate], float], num_fields: int, max_dim: int, settings: OptEmbedConfig,
                        seed: int, state: dict[str, Any] | None = None,
                        on_iteration: Callable[[int, dict[str, Any]], None] | None = None) -> tuple[Candidate, float]:
    """Search per-field dims maximizing `score`; return the best candidate and its score.

    `state` ({"iteration", "scored"}) continues an interrupted search; `on_iteration(i, state)` runs
    after each iteration with the state to save. Each iteration draws from its own seeded generator,
    so a resumed search makes the same choices as an uninterrupted one.
    """
    scored: dict[Candidate, float] = {}
    start = 0
    if state:
        scored = {tuple(int(d) for d in c): float(s) for c, s in state["scored"]}
        start = int(state["iteration"]) + 1
    else:
        rng = np.random.default_rng([seed, 0])
        while len(scored) < min(settings.population, max_dim ** num_fields):
            candidate = tuple(int(d) for d in rng.integers(1, max_dim + 1, size=num_fields))
            if candidate not in scored:
                scored[candidate] = score(candidate)
        if on_iteration is not None:
            on_iteration(-1, _evolution_state(-1, scored))
        start = 0

    for iteration in range(start, settings.iterations):
        rng = np.random.default_rng([seed, iteration + 1])
        parents = _ranked(scored)[:settings.top_k]
        children: list[Candidate] = []
        for _ in range(settings.mutation_num):
            children.append(mutate(parents[int(rng.integers(len(parents)))], settings.mutation_prob, max_dim, rng))
        for _ in range(settings.crossover_num):
            first = parents[int(rng.integers(len(parents)))]
            second = parents[int(rng.integers(len(parents)))]
            children.append(crossover(first, second, rng))
        for child in children:
            if child not in scored:
                scored[child] = score(child)
        if on_iteration is not None:
            on_iteration(iteration, _evolution_state(iteration, scored))

    best = _ranked(scored)[0]
    return best, scored[best]


def _ranked(scored: dict[Candidate, float]) -> list[Candidate]:
    # NaN scores (a one-class validation split) rank last; ties keep the order in which they were found.
    return sorted(scored, key=lambda c: -scored[c] if scored[c] == scored[c] else float("inf"))


def _evolution_state(iteration: int, scored: dict[Candidate, float]) -> dict[str, Any]:
    return {"iteration": iteration, "scored": [[list(c), s] for c, s in scored.items()]}


def run_optembed(config: PipelineConfig, data: PreparedDataset, reporter: Reporter | None = None,
                 output_dir: str | Path | None = None) -> dict[str, Any]:
    """Run OptEmbed's supernet training, evolutionary search and retraining; return metrics plus `selection`."""
    run = Run(METHOD, config, data, reporter)
    settings: OptEmbedConfig = run.settings
    progress = run.progress
    embed_dim = config.model.embed_dim

    supernet = Supernet(run.new_backbone(), settings).to(run.device)
    supernet.generator = torch.Generator(device=run.device)
    if "supernet" not in progress.done:
        hook = _ThresholdStep(supernet, config, settings, run.device)
        bce = nn.BCEWithLogitsLoss()
        train = dataclasses.replace(config.train, max_epochs=settings.supernet_epochs)
        result = fit(supernet, data.train, data.valid, train, seed=config.seed, device=run.device,
                     reporter=run.reporter, stage="optembed-supernet",
                     loss_fn=lambda logits, y: bce(logits, y) + settings.alpha * supernet.regularizer(),
                     forward=lambda m, x: m.score(x, None, random_dims=True),
                     eval_forward=lambda m, x: m.score(x, None, random_dims=False),
                     parameters=supernet.backbone.parameters(), hook=hook,
                     resume_state=progress.resume_state("supernet"), make_checkpoint=progress.checkpoint_for("supernet"))
        progress.finish("supernet", {"model_state": supernet.state_dict(), "best_valid_auc": result.best_valid_auc})
        run.report_stage_end("optembed-supernet", {"supernet_best_valid_auc": result.best_valid_auc})
    supernet.load_state_dict(progress.done["supernet"]["model_state"])

    if "evolution" not in progress.done:
        wrap = progress.checkpoint_for("evolution")

        def score(candidate: Candidate) -> float:
            dims = torch.tensor(candidate, dtype=torch.int64)
            auc, _ = evaluate(supernet, data.valid, config.train.eval_batch_size, run.device,
                              lambda m, x: m.score(x, dims, random_dims=False))
            return auc

        def save(iteration: int, state: dict[str, Any]) -> None:
            best = max((s for _, s in state["scored"] if s == s), default=float("nan"))
            run.reporter.report({"stage": "optembed-evolution", "epoch": iteration + 1, "best_valid_auc": best,
                                 "candidates_scored": len(state["scored"])}, wrap(state))

        best, best_auc = evolutionary_search(score, data.num_fields, embed_dim, settings, config.seed,
                                             state=progress.resume_state("evolution"), on_iteration=save)
        progress.finish("evolution", {"dims": list(best), "valid_auc": best_auc})
    dims = [int(d) for d in progress.done["evolution"]["dims"]]

    row_keep = supernet.row_mask().cpu()
    field_of_row = supernet.field_of_row.cpu()
    dim_keep = torch.arange(embed_dim) < torch.tensor(dims)[field_of_row].unsqueeze(1)  # [rows, D]
    mask = row_keep.unsqueeze(1) & dim_keep
    # Retraining rewinds to the initial weights: the same seed rebuilds them.
    retrained = MaskedModel(run.new_backbone(), mask)
    if "retrain" not in progress.done:
        result = fit(retrained, data.train, data.valid, config.train, seed=config.seed + 1, device=run.device,
                     reporter=run.reporter, stage="optembed-retrain", resume_state=progress.resume_state("retrain"),
                     make_checkpoint=progress.checkpoint_for("retrain"))
        progress.finish("retrain", {"model_state": retrained.state_dict(), "best_valid_auc": result.best_valid_auc})
    retrained.load_state_dict(progress.done["retrain"]["model_state"])

    shares = {}
    start = 0
    for name, size in zip(data.field_names, data.field_dims):
        shares[name] = round(float(row_keep[start:start + size].float().mean()), 6)
        start += size
    selection = {"dims_per_field": dict(zip(data.field_names, dims)), "kept_row_share": shares,
                 "fields_kept": [n for n in data.field_names if shares[n] > 0],
                 "kept_entries": int(mask.sum()), "total_entries": int(mask.numel()),
                 "evolution_valid_auc": float(progress.done["evolution"]["valid_auc"])}
    return run.finish(retrained.folded(), lambda m, x: m(x), num_params=int(mask.sum()) + count_mlp_params(retrained.backbone),
                      selection=selection, extra={"kept_entries": int(mask.sum())}, output_dir=output_dir)


register_method(METHOD, run_optembed)
