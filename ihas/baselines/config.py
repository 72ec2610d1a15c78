"""Settings of the published baselines, one frozen dataclass per method, with the authors' defaults.

Every baseline shares the backbone, optimizer, batch size and early stopping of `PipelineConfig`
(`model` and `train`), so the comparison with iHAS is fair. The official code of each method uses
its own learning rate, L2 term, batch size and MLP (OptFS, for example: lr 1e-4, L2 1e-5, batch
4096, MLP 1024-512-256). We depart from those because the iHAS paper compares all methods on one
backbone with embedding dim 16. The classes below contain only what a baseline adds. A study sets them through `PipelineConfig.baseline`, a mapping from method name to
overrides, for example `{"optfs": {"search_epochs": 5}}`; `baseline_config` applies them.

Sources of the defaults:
- PEP: Liu et al., "Learnable Embedding Sizes for Recommender Systems", ICLR 2021, and its official
  code (github.com/ssui-liu/learnable-embed-sizes-for-RecSys, `train_criteo.py`).
- AutoField: Wang et al., "AutoField: Automating Feature Selection in Deep Recommender Systems",
  WWW 2022. The authors released no code, so only the paper's description applies.
- OptEmbed: Lyu et al., "OptEmbed: Learning Optimal Embedding Table for Click-through Rate
  Prediction", CIKM 2022, and the hyper-parameter table of its official README
  (github.com/fuyuanlyu/OptEmbed).
- AdaFS: Lin et al., "AdaFS: Adaptive Feature Selection in Deep Recommender System", KDD 2022.
- OptFS: Lyu et al., "Optimizing Feature Set for Click-Through Rate Prediction", WWW 2023, and the
  argument defaults of its official `maskTrainer.py` (github.com/fuyuanlyu/OptFS).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


@dataclass(frozen=True)
class PEPConfig:
    """PEP: soft-thresholded embeddings, a parameter-budget snapshot of the mask, lottery-ticket retraining."""

    # Granularity of the learnable threshold s: one per (feature value, dim), the official
    # `threshold_type='feature_dim'`. Only this granularity is implemented.
    threshold_type: str = "feature_dim"
    threshold_init: float = -150.0  # official `threshold_init=-150`
    gk: float = 1.0  # official `gk=1`: the threshold is sigmoid(gk * s)
    # Fraction of the embedding entries that the pruned mask may keep. The official code saves masks
    # at absolute parameter counts (`candidate_p`) picked per dataset.
    # NOTE: the iHAS paper does not say which budget its PEP row used; 0.5 is our choice.
    budget_ratio: float = 0.5
    search_epochs: int = 30  # upper bound on the pruning phase; it ends as soon as the budget is reached
    check_every: int = 100  # training batches between two counts of the non-zero embedding entries

    def __post_init__(self) -> None:
        _require(self.threshold_type == "feature_dim",
                 f"pep.threshold_type {self.threshold_type!r} is not implemented; use 'feature_dim'")
        _require(self.gk > 0, f"pep.gk must be > 0, got {self.gk}")
        _require(0.0 < self.budget_ratio < 1.0, f"pep.budget_ratio must be in (0, 1), got {self.budget_ratio}")
        _require(self.search_epochs >= 1, f"pep.search_epochs must be >= 1, got {self.search_epochs}")
        _require(self.check_every >= 1, f"pep.check_every must be >= 1, got {self.check_every}")


@dataclass(frozen=True)
class AutoFieldConfig:
    """AutoField: Gumbel-Softmax field gates searched bi-level, then the top-k fields retrained from scratch."""

    tau_start: float = 1.0  # Gumbel-Softmax temperature of the first search epoch
    # Temperature of the last search epoch, reached by a geometric decay.
    # NOTE: the paper gives the range 1 to 0.01; decaying once per epoch, not per batch, is our choice.
    tau_end: float = 0.01
    val_every: int = 10  # training batches between two gate updates on one validation batch
    gate_lr: float = 1e-3
    search_epochs: int = 30
    # Number of fields kept; 0 keeps half of them (rounded down, at least one).
    # NOTE: the AutoField paper tunes k per dataset and we found no published value for this setup.
    keep_fields: int = 0

    def __post_init__(self) -> None:
        _require(self.tau_start > 0 and self.tau_end > 0,
                 f"autofield temperatures must be > 0, got tau_start={self.tau_start}, tau_end={self.tau_end}")
        _require(self.val_every >= 1, f"autofield.val_every must be >= 1, got {self.val_every}")
        _require(self.gate_lr > 0, f"autofield.gate_lr must be > 0, got {self.gate_lr}")
        _require(self.search_epochs >= 1, f"autofield.search_epochs must be >= 1, got {self.search_epochs}")
        _require(self.keep_fields >= 0, f"autofield.keep_fields must be >= 0 (0: half the fields), got {self.keep_fields}")


@dataclass(frozen=True)
class OptEmbedConfig:
    """OptEmbed: supernet with row pruning and random dim prefixes, evolutionary search, retraining."""

    threshold_lr: float = 1e-4  # README, FNN (embeddings + MLP) on Criteo: lr^t = 1e-4
    alpha: float = 1e-5  # README, FNN on Criteo: threshold regularization alpha = 1e-5 (1e-4 on Avazu)
    # NOTE: the initial per-field threshold is not in the README; 0 keeps every row at the start.
    threshold_init: float = 0.0
    supernet_epochs: int = 30  # README: --epoch 30, with early stopping on validation AUC
    population: int = 20  # random candidates of the first generation; later ones have mutation_num + crossover_num
    mutation_num: int = 10  # README: n_m = 10
    crossover_num: int = 10  # README: n_c = 10
    mutation_prob: float = 0.1  # README: prob = 0.1
    iterations: int = 30  # README: T = 30
    top_k: int = 15  # README: k = 15 parents kept after each iteration

    def __post_init__(self) -> None:
        _require(self.threshold_lr > 0, f"optembed.threshold_lr must be > 0, got {self.threshold_lr}")
        _require(self.alpha >= 0, f"optembed.alpha must be >= 0, got {self.alpha}")
        _require(self.supernet_epochs >= 1, f"optembed.supernet_epochs must be >= 1, got {self.supernet_epochs}")
        _require(self.mutation_num >= 0 and self.crossover_num >= 0,
                 f"optembed mutation_num and crossover_num must be >= 0, got {self.mutation_num}, {self.crossover_num}")
        _require(self.population >= 1, f"optembed.population must be >= 1, got {self.population}")
        _require(0.0 <= self.mutation_prob <= 1.0, f"optembed.mutation_prob must be in [0, 1], got {self.mutation_prob}")
        _require(self.iterations >= 0, f"optembed.iterations must be >= 0, got {self.iterations}")
        _require(self.top_k >= 1, f"optembed.top_k must be >= 1, got {self.top_k}")


@dataclass(frozen=True)
class AdaFSConfig:
    """AdaFS: a controller weights each sample's fields (soft) or keeps its top fields (hard). No retraining.

    The controller is batch normalization, then Linear(N*, F) and a softmax over fields.
    NOTE: the AdaFS paper allows a deeper MLP controller; the single linear layer is our choice.
    """

    pretrain_epochs: int = 2  # epochs of the backbone alone before the controller starts
    val_every: int = 10  # training batches between two controller updates on one validation batch
    controller_lr: float = 1e-3
    # Fields kept per sample by AdaFS-hard; 0 keeps half of them (rounded down, at least one).
    keep_fields: int = 0

    def __post_init__(self) -> None:
        _require(self.pretrain_epochs >= 0, f"adafs.pretrain_epochs must be >= 0, got {self.pretrain_epochs}")
        _require(self.val_every >= 1, f"adafs.val_every must be >= 1, got {self.val_every}")
        _require(self.controller_lr > 0, f"adafs.controller_lr must be > 0, got {self.controller_lr}")
        _require(self.keep_fields >= 0, f"adafs.keep_fields must be >= 0 (0: half the fields), got {self.keep_fields}")


@dataclass(frozen=True)
class OptFSConfig:
    """OptFS: one gate per feature value with a rising temperature, rewind, retraining with the hard mask."""

    mask_init: float = 0.5  # official --mask_init 0.5
    final_temp: float = 200.0  # official --final_temp 200
    search_epochs: int = 20  # official --search_epoch 20; the search always runs all of them
    rewind_epoch: int = 1  # official --rewind_epoch 1: weights after this many search epochs are kept
    reg_lambda: float = 1e-8  # official --reg_lambda 1e-8, times the sum of all gates

    def __post_init__(self) -> None:
        _require(self.final_temp >= 1.0, f"optfs.final_temp must be >= 1 (the temperature starts at 1), got {self.final_temp}")
        _require(self.search_epochs >= 1, f"optfs.search_epochs must be >= 1, got {self.search_epochs}")
        _require(0 <= self.rewind_epoch < self.search_epochs,
                 f"optfs.rewind_epoch must be in [0, search_epochs={self.search_epochs}), got {self.rewind_epoch}")
        _require(self.reg_lambda >= 0, f"optfs.reg_lambda must be >= 0, got {self.reg_lambda}")


# Method name -> settings class. AdaFS's two modes share one class.
BASELINE_CONFIGS: dict[str, type] = {
    "pep": PEPConfig,
    "autofield": AutoFieldConfig,
    "optembed": OptEmbedConfig,
    "adafs-soft": AdaFSConfig,
    "adafs-hard": AdaFSConfig,
    "optfs": OptFSConfig,
}


def baseline_config(overrides: Mapping[str, Mapping[str, Any]], method: str) -> Any:
    """Build the settings of `method` from its defaults and `overrides[method]`."""
    if method not in BASELINE_CONFIGS:
        raise ValueError(f"unknown baseline {method!r}; use one of {', '.join(BASELINE_CONFIGS)}")
    cls = BASELINE_CONFIGS[method]
    settings = overrides.get(method, {})
    if not isinstance(settings, Mapping):
        raise ValueError(f"baseline settings of {method!r} must be a table, got {settings!r}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in baseline.{method}; known keys: {sorted(known)}")
    return cls(**settings)


def validate_baseline_overrides(overrides: Mapping[str, Any]) -> None:
    """Raise ValueError, naming the method and key, unless every entry builds a valid settings object."""
    if not isinstance(overrides, Mapping):
        raise ValueError(f"config section 'baseline' must be a table of per-method tables, got {overrides!r}")
    for method in overrides:
        baseline_config(overrides, method)
