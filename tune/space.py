"""The search space of a tuning study: lambda, tau, K and the histogram bin count.

`ihas_search_space` is a define-by-run function for Optuna: it draws the four values on an Optuna
trial and returns nothing, so `OptunaSearch` hands the drawn values to the Tune trial as a flat
dict keyed by `PARAM_NAMES`. `to_overrides` turns that dict into nested pipeline overrides.

Default ranges and the reasons for them:
- `reg_lambda`, log-uniform on [1e-3, 1]. The L0 term `lambda * sum_j p_ij` and the polarization
  term `sum_j |p_ij - mean_j p_ij|` are both sums over the N* = F*D dimensions, so lambda weighs
  one against the other (the polarization weight is 1). Below 1e-3 the L0 term has no visible
  effect. Above 1 it outweighs the polarization term and pushes every gate shut. The pipeline's
  default of 0.05 lies inside the range.
- `tau`, log-uniform on [0.01, 1]. The forward pass uses the hard mask at any tau, and only the
  backward relaxation `sigmoid((a + L) / tau)` changes. Below 0.01 its gradient is close to zero
  except very near the decision boundary. Above 1 the relaxation is far from the hard mask. The
  iHAS paper (CIKM 2023) uses 0.1, which lies inside the range.
- `num_clusters` (K), integer in [2, 8]. K = 1 is the iHAS-2 ablation, not iHAS. Each cluster
  trains its own model on its share of the rows, so a large K starves small clusters of data.
  The paper uses K = 2.
- `bins`, integer in [5, 50], for the per-sample histogram of the N* gate probabilities. With few
  bins, the spike near 0 and the valley fall into one bin. With many bins, a few hundred
  probabilities per sample give sparse counts, and random empty bins become false valleys.
  The pipeline's default is 20.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Mapping

PARAM_NAMES = ("reg_lambda", "tau", "num_clusters", "bins")

# Location of each searched value in `PipelineConfig`: (section, field).
PARAM_SECTIONS = {
    "reg_lambda": ("search", "reg_lambda"),
    "tau": ("search", "tau"),
    "num_clusters": ("cluster", "num_clusters"),
    "bins": ("search", "bins"),
}


def _pair(ranges: SearchRanges, name: str) -> tuple[Any, Any]:
    value = getattr(ranges, name)
    if len(value) != 2:
        raise ValueError(f"space.{name} must be [low, high], got {list(value)}")
    return value[0], value[1]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class SearchRanges:
    """Inclusive bounds of each searched value. Float ranges are sampled log-uniformly."""

    reg_lambda: tuple[float, float] = (1e-3, 1.0)
    tau: tuple[float, float] = (0.01, 1.0)
    num_clusters: tuple[int, int] = (2, 8)
    bins: tuple[int, int] = (5, 50)

    def __post_init__(self) -> None:
        for name in ("reg_lambda", "tau"):
            low, high = _pair(self, name)
            if not (math.isfinite(low) and math.isfinite(high) and 0 < low <= high):
                raise ValueError(f"space.{name} must be [low, high] with 0 < low <= high (log-uniform), "
                                 f"got {list(getattr(self, name))}")
        low, high = _pair(self, "num_clusters")
        if not (_is_int(low) and _is_int(high) and 1 <= low <= high):
            raise ValueError(f"space.num_clusters must be integers [low, high] with 1 <= low <= high, "
                             f"got {list(self.num_clusters)}")
        low, high = _pair(self, "bins")
        if not (_is_int(low) and _is_int(high) and 3 <= low <= high):
            raise ValueError(f"space.bins must be integers [low, high] with 3 <= low <= high "
                             f"(a valley needs 3 bins), got {list(self.bins)}")

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> "SearchRanges":
        """Build ranges from a `[space]` table; unnamed values keep their default range."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"unknown key(s) {unknown} in [space]; known keys: {sorted(known)}")
        converted: dict[str, Any] = {}
        for key, value in raw.items():
            if not (isinstance(value, (list, tuple)) and len(value) == 2):
                raise ValueError(f"space.{key} must be a list [low, high], got {value!r}")
            converted[key] = tuple(value)
        return cls(**converted)


DEFAULT_RANGES = SearchRanges()


class IhasSearchSpace:
    """Define-by-run space over `PARAM_NAMES` with the given ranges (a class so that it pickles)."""

    def __init__(self, ranges: SearchRanges = DEFAULT_RANGES) -> None:
        self.ranges = ranges

    def __call__(self, trial: Any) -> None:
        ihas_search_space(trial, self.ranges)


def ihas_search_space(trial: Any, ranges: SearchRanges = DEFAULT_RANGES) -> None:
    """Draw lambda, tau, K and the bin count on the Optuna `trial`; the module docstring gives the ranges."""
    trial.suggest_float("reg_lambda", *ranges.reg_lambda, log=True)
    trial.suggest_float("tau", *ranges.tau, log=True)
    trial.suggest_int("num_clusters", *ranges.num_clusters)
    trial.suggest_int("bins", *ranges.bins)


def to_overrides(params: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Turn {"reg_lambda": .., "num_clusters": ..} into {"search": {...}, "cluster": {...}}."""
    unknown = sorted(set(params) - set(PARAM_NAMES))
    if unknown:
        raise ValueError(f"unknown tuned parameter(s) {unknown}; known: {list(PARAM_NAMES)}")
    nested: dict[str, dict[str, Any]] = {}
    for name, value in params.items():
        section, key = PARAM_SECTIONS[name]
        nested.setdefault(section, {})[key] = value
    return nested
