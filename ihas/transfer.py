"""Transfer methods: iHAS gates searched on the DLRM, frozen, then used to cluster and retrain other backbones.

For each backbone X in fm, wide_deep and deepfm, importing this module registers three methods in
`ihas.variants.METHODS`:
- `X` (original): backbone X alone, no selection, trained to convergence;
- `adafs-soft-X`: the AdaFS-soft baseline with backbone X, with the settings of `baseline.adafs-soft`;
- `ihas-X`: the search stage runs on the DLRM as in the full method. The searched gates, frozen,
  route the rows to K clusters, and each cluster retrains a fresh backbone X with the cluster's
  majority dims per field. `ihas.models.fixed_dims` explains how FM and DeepFM take per-field dims.

The DLRM searched for `ihas-X` provides the embeddings that the frozen gates read and that K-Means
clusters, as in the full method; only the retrained cluster models change backbone. A cluster too
small for its own model is scored by the searched DLRM with deterministic masks, as in iHAS.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from ihas.baselines.adafs import SOFT, run_adafs
from ihas.config import PipelineConfig, override
from ihas.data.dataset import PreparedDataset
from ihas.pipeline import run_variant
from ihas.reporting import Reporter
from ihas.variants import VARIANTS, Variant, register_method

TRANSFER_BACKBONES = ("fm", "wide_deep", "deepfm")
# Method families of the transfer table, in its column order.
ORIGINAL, ADAFS_SOFT, IHAS = "original", "adafs-soft", "ihas"
FAMILIES = (ORIGINAL, ADAFS_SOFT, IHAS)


def method_name(family: str, backbone: str) -> str:
    """Return the registered method name of `family` (original, adafs-soft or ihas) on `backbone`."""
    if family not in FAMILIES:
        raise ValueError(f"unknown transfer family {family!r}; use one of {', '.join(FAMILIES)}")
    if backbone not in TRANSFER_BACKBONES:
        raise ValueError(f"unknown transfer backbone {backbone!r}; use one of {', '.join(TRANSFER_BACKBONES)}")
    return backbone if family == ORIGINAL else f"{family}-{backbone}"


def parse_method(name: str) -> tuple[str, str] | None:
    """Return (family, backbone) of a transfer method name, or None when `name` is not one."""
    for backbone in TRANSFER_BACKBONES:
        for family in FAMILIES:
            if method_name(family, backbone) == name:
                return family, backbone
    return None


def original_variant(backbone: str) -> Variant:
    return Variant(method_name(ORIGINAL, backbone), search=False, cluster=False, retrain=False,
                   overrides={"model": {"backbone": backbone}})


def ihas_variant(backbone: str) -> Variant:
    full = VARIANTS["ihas"]
    # The search runs on the DLRM whatever model.backbone a study sets, because the gates are
    # transferred from the DLRM search of the full method.
    return Variant(method_name(IHAS, backbone), search=full.search, cluster=full.cluster, retrain=full.retrain,
                   overrides={**full.overrides, "model": {"backbone": "dlrm"}}, retrain_backbone=backbone)


def run_adafs_soft_on(backbone: str, config: PipelineConfig, data: PreparedDataset,
                      reporter: Reporter | None = None, output_dir: str | Path | None = None) -> dict[str, Any]:
    """Run AdaFS-soft with `backbone` in place of `config.model.backbone`."""
    config = override(config, {"model": {"backbone": backbone}})
    metrics = run_adafs(SOFT, config, data, reporter, output_dir)
    metrics["variant"] = method_name(ADAFS_SOFT, backbone)
    return metrics


def _register() -> None:
    for backbone in TRANSFER_BACKBONES:
        register_method(method_name(ORIGINAL, backbone), functools.partial(run_variant, original_variant(backbone)))
        register_method(method_name(ADAFS_SOFT, backbone), functools.partial(run_adafs_soft_on, backbone))
        register_method(method_name(IHAS, backbone), functools.partial(run_variant, ihas_variant(backbone)))


_register()
