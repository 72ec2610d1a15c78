"""Named methods that `run_pipeline` dispatches on: the iHAS ablation variants, and baselines that register.

A variant is one configuration of the same pipeline: which stages run, and which config settings it
fixes. The variants follow the ablation study (Table 4) of the iHAS paper (Yu et al., CIKM 2023):
- `base`: the backbone alone, no dimension selection;
- `ihas-1`: the search stage only, predicting with the searched backbone and deterministic masks;
- `ihas-2`: search, then one model retrained on all rows with the global majority dims (K = 1);
- `ihas-3`: the full method without the polarization term of the regularizer;
- `ihas-4`: the full method with an instance-agnostic gate (one logit vector for all samples);
- `ihas`: the full method.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from ihas.config import PipelineConfig, override

# A method runs one configured experiment: (config, data, reporter, output_dir) -> flat metrics dict.
Method = Callable[..., dict[str, Any]]


@dataclass(frozen=True)
class Variant:
    """The stages a variant runs and the config settings it fixes."""

    name: str
    search: bool
    cluster: bool
    retrain: bool
    overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # Backbone of the retrained cluster models. "dlrm" builds the mixed-dim DLRM of iHAS, and the
    # transfer methods (`ihas.transfer`) set fm, wide_deep or deepfm.
    retrain_backbone: str = "dlrm"

    def apply(self, config: PipelineConfig) -> PipelineConfig:
        """Return `config` with this variant's name and fixed settings."""
        return override(config, {"variant": self.name, **self.overrides})


VARIANTS: dict[str, Variant] = {
    "base": Variant("base", search=False, cluster=False, retrain=False),
    "ihas-1": Variant("ihas-1", search=True, cluster=False, retrain=False),
    "ihas-2": Variant("ihas-2", search=True, cluster=False, retrain=True),
    "ihas-3": Variant("ihas-3", search=True, cluster=True, retrain=True, overrides={"search": {"polarization": 0.0}}),
    "ihas-4": Variant("ihas-4", search=True, cluster=True, retrain=True, overrides={"search": {"gate": "agnostic"}}),
    "ihas": Variant("ihas", search=True, cluster=True, retrain=True),
}

# Method name -> callable. `ihas.pipeline` registers the variants above; baselines register their
# own names through `register_method` when `ihas.baselines` is imported.
METHODS: dict[str, Method] = {}


def get_variant(name: str) -> Variant:
    try:
        return VARIANTS[name]
    except KeyError:
        raise ValueError(f"unknown variant {name!r}; use one of {', '.join(VARIANTS)}") from None


def register_method(name: str, method: Method) -> None:
    """Make `method` reachable as `config.variant == name`; a name can be registered once."""
    if name in METHODS and METHODS[name] is not method:
        raise ValueError(f"method {name!r} is already registered; pick another name")
    METHODS[name] = method
