"""Typed configuration of the iHAS pipeline.

Every config is a frozen dataclass validated on construction. Defaults follow the setup of the iHAS
paper (Yu et al., CIKM 2023): embedding dim 16, MLP 16-8, Adam lr 1e-3, weight decay 1e-6, batch
2048, tau 0.1, one validation batch every 100 training batches, K = 2. A field's comment names any
default of ours.
"""

from __future__ import annotations

import dataclasses
import numbers
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping

BackboneName = Literal["dlrm", "fm", "wide_deep", "deepfm"]
GateKind = Literal["instance", "agnostic"]


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


@dataclass(frozen=True)
class ModelConfig:
    """Backbone shape shared by every stage and baseline."""

    backbone: BackboneName = "dlrm"
    embed_dim: int = 16
    mlp_dims: tuple[int, ...] = (16, 8)

    def __post_init__(self) -> None:
        _require(self.backbone in ("dlrm", "fm", "wide_deep", "deepfm"),
                 f"unknown backbone {self.backbone!r}; use dlrm, fm, wide_deep or deepfm")
        _require(self.embed_dim >= 1, f"embed_dim must be >= 1, got {self.embed_dim}")
        _require(all(d >= 1 for d in self.mlp_dims), f"mlp_dims must be positive, got {self.mlp_dims}")


@dataclass(frozen=True)
class TrainConfig:
    """Optimiser and early-stopping settings for one supervised training run."""

    lr: float = 1e-3
    weight_decay: float = 1e-6
    batch_size: int = 2048
    eval_batch_size: int = 65536
    max_epochs: int = 30
    patience: int = 2  # epochs without a better validation AUC before stopping

    def __post_init__(self) -> None:
        _require(self.lr > 0, f"lr must be > 0, got {self.lr}")
        _require(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        _require(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        _require(self.eval_batch_size >= 1, f"eval_batch_size must be >= 1, got {self.eval_batch_size}")
        _require(self.max_epochs >= 1, f"max_epochs must be >= 1, got {self.max_epochs}")
        _require(self.patience >= 1, f"patience must be >= 1, got {self.patience}")


@dataclass(frozen=True)
class SearchConfig:
    """Search stage: pretraining with open gates, then bi-level gate updates."""

    pretrain_epochs: int = 5
    max_epochs: int = 30
    patience: int = 2
    gate: GateKind = "instance"
    tau: float = 0.1  # straight-through Gumbel-Softmax temperature
    # NOTE: the iHAS paper gives no value for lambda; 0.05 is our default, tuned by `python -m tune`.
    reg_lambda: float = 0.05
    polarization: float = 1.0  # weight of the polarization term; 0 gives ablation iHAS-3
    val_every: int = 100  # training batches between two gate updates on one validation batch
    gate_lr: float = 1e-3
    bins: int = 20  # histogram bins of the deterministic threshold searcher

    def __post_init__(self) -> None:
        _require(self.pretrain_epochs >= 0, f"pretrain_epochs must be >= 0, got {self.pretrain_epochs}")
        _require(self.max_epochs >= 1, f"max_epochs must be >= 1, got {self.max_epochs}")
        _require(self.patience >= 1, f"patience must be >= 1, got {self.patience}")
        _require(self.gate in ("instance", "agnostic"), f"gate must be 'instance' or 'agnostic', got {self.gate!r}")
        _require(self.tau > 0, f"tau must be > 0, got {self.tau}")
        _require(self.reg_lambda >= 0, f"reg_lambda must be >= 0, got {self.reg_lambda}")
        _require(self.polarization >= 0, f"polarization must be >= 0, got {self.polarization}")
        _require(self.val_every >= 1, f"val_every must be >= 1, got {self.val_every}")
        _require(self.gate_lr > 0, f"gate_lr must be > 0, got {self.gate_lr}")
        _require(self.bins >= 3, f"bins must be >= 3 so that a valley can exist, got {self.bins}")


@dataclass(frozen=True)
class ClusterConfig:
    """Clustering stage: MiniBatchKMeans over masked embeddings, fitted by streaming."""

    num_clusters: int = 2
    batch_size: int = 4096  # rows per partial_fit call
    passes: int = 1  # full passes over the training split

    def __post_init__(self) -> None:
        _require(self.num_clusters >= 1, f"num_clusters must be >= 1, got {self.num_clusters}")
        _require(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        _require(self.passes >= 1, f"passes must be >= 1, got {self.passes}")


@dataclass(frozen=True)
class RetrainConfig:
    """Retraining stage: per-cluster models with the cluster's majority dims."""

    keep_ratio: float = 0.5  # keep dim j when the cluster's mean mask bit is >= this value
    min_train_rows: int = 64  # a cluster with fewer training rows is not given its own model

    def __post_init__(self) -> None:
        _require(0.0 < self.keep_ratio <= 1.0, f"keep_ratio must be in (0, 1], got {self.keep_ratio}")
        _require(self.min_train_rows >= 1, f"min_train_rows must be >= 1, got {self.min_train_rows}")


@dataclass(frozen=True)
class PipelineConfig:
    """One end-to-end run of one variant on one dataset with one seed."""

    variant: str = "ihas"
    seed: int = 0
    device: str = "cpu"
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    retrain: RetrainConfig = field(default_factory=RetrainConfig)
    # Settings of the published baselines, by method: {"pep": {"budget_ratio": 0.3}, ...}. Unset keys
    # take the defaults of `ihas.baselines.config`, which also validates names and values.
    baseline: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.baseline:
            # Imported here because the baselines build on this module; configs without baseline
            # settings never import them.
            from ihas.baselines.config import validate_baseline_overrides

            validate_baseline_overrides(self.baseline)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "PipelineConfig":
        """Build a config from nested mappings, rejecting unknown keys by name."""
        sections = {"model": ModelConfig, "train": TrainConfig, "search": SearchConfig,
                    "cluster": ClusterConfig, "retrain": RetrainConfig}
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key in sections:
                kwargs[key] = _section_from_dict(sections[key], key, value)
            elif key in ("variant", "seed", "device"):
                kwargs[key] = _typed_setting(key, value, int if key == "seed" else str)
            elif key == "baseline":
                if not isinstance(value, Mapping):
                    raise ValueError(f"config section 'baseline' must be a table of per-method tables, got {value!r}")
                kwargs[key] = {name: dict(settings) if isinstance(settings, Mapping) else settings
                               for name, settings in value.items()}
            else:
                raise ValueError(f"unknown pipeline config key {key!r}; "
                                 f"known keys: variant, seed, device, {', '.join(sections)}, baseline")
        return cls(**kwargs)

    def replace(self, **changes: Any) -> "PipelineConfig":
        """Return a copy with top-level fields or whole sections replaced."""
        return dataclasses.replace(self, **changes)


def _section_from_dict(cls: type, name: str, value: Any) -> Any:
    if isinstance(value, cls):
        return value
    if not isinstance(value, Mapping):
        raise ValueError(f"config section {name!r} must be a table of settings, got {value!r}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(value) - known)
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in config section {name!r}; known keys: {sorted(known)}")
    hints = typing.get_type_hints(cls)
    converted = {k: _typed_setting(f"{name}.{k}", v, hints[k]) for k, v in value.items()}
    return cls(**converted)


def _typed_setting(name: str, value: Any, hint: Any) -> Any:
    """Return `value` as the type `hint` of setting `name` (int to float, list to tuple), or raise ValueError."""
    origin = typing.get_origin(hint)
    if origin is Literal:
        choices = typing.get_args(hint)
        if value not in choices:
            raise ValueError(f"config setting {name} must be one of {list(choices)}, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or not all(_is_int(v) for v in value):
            raise ValueError(f"config setting {name} must be a list of integers, got {value!r}")
        return tuple(int(v) for v in value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ValueError(f"config setting {name} must be true or false, got {value!r}")
        return value
    if hint is int:
        if not _is_int(value):
            raise ValueError(f"config setting {name} must be an integer, got {value!r}")
        return int(value)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ValueError(f"config setting {name} must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ValueError(f"config setting {name} must be a string, got {value!r}")
        return value
    return value


def _is_int(value: Any) -> bool:
    # numbers.Integral takes numpy integers too (search spaces may hand them over); bool is excluded.
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def override(config: PipelineConfig, overrides: Mapping[str, Any]) -> PipelineConfig:
    """Apply nested overrides such as {"search": {"tau": 0.5}} to a config."""
    merged = config.to_dict()
    for key, value in overrides.items():
        if key == "baseline" and isinstance(value, Mapping):
            # One level deeper than the other sections, so that a study-wide setting of one baseline
            # and a per-method setting of another (or of the same one) combine.
            merged[key] = _merge_baseline(merged.get(key) or {}, value)
        elif isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return PipelineConfig.from_dict(merged)


def _merge_baseline(current: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    merged = {name: dict(settings) for name, settings in current.items()}
    for name, settings in changes.items():
        if isinstance(settings, Mapping) and isinstance(merged.get(name), dict):
            merged[name] = {**merged[name], **settings}
        else:
            merged[name] = settings
    return merged


MISSING = "(not set)"


def first_difference(old: Any, new: Any, path: str = "") -> tuple[str, Any, Any] | None:
    """Return (dotted key, old value, new value) of the first setting that differs, or None when equal.

    Nested mappings are compared key by key in sorted order; a key present on one side only shows
    `MISSING` on the other.
    """
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        for key in sorted(set(old) | set(new), key=str):
            where = f"{path}.{key}" if path else str(key)
            if key not in old or key not in new:
                return where, old.get(key, MISSING), new.get(key, MISSING)
            found = first_difference(old[key], new[key], where)
            if found is not None:
                return found
        return None
    if isinstance(old, (list, tuple)) and isinstance(new, (list, tuple)):
        if len(old) != len(new):
            return path, old, new
        for i, (a, b) in enumerate(zip(old, new)):
            if first_difference(a, b, f"{path}[{i}]") is not None:
                return path, old, new
        return None
    return None if old == new else (path, old, new)
