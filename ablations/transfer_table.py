"""The transfer table of a study (Table 3 of the iHAS paper): backbones x {original, AdaFS-soft, iHAS}.

Rows are the backbones that the study's transfer methods use (`ihas.transfer`), each with an AUC
and a logloss line. Columns are the three method families, measured as mean ± sample std over the
seeds that finished, then published when the study's `[reference.datasets.NAME]` lists them.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from ablations.results import STATUS_OK
from ablations.study import Study
from ablations.table import _float, format_mean_std
from ihas.transfer import FAMILIES, TRANSFER_BACKBONES, method_name, parse_method

BACKBONE_NAMES = {"fm": "FM", "wide_deep": "W&D", "deepfm": "DeepFM"}
FAMILY_NAMES = {"original": "Original", "adafs-soft": "AdaFS-soft", "ihas": "iHAS"}
METRICS = (("auc", "AUC", "test_auc"), ("logloss", "Logloss", "test_logloss"))


def render_transfer_table(study: Study, rows: Iterable[Mapping[str, Any]]) -> str | None:
    """Build the Markdown transfer table of each dataset; None when the study runs no transfer method."""
    backbones = [b for b in TRANSFER_BACKBONES
                 if any((parsed := parse_method(m)) is not None and parsed[1] == b for m in study.methods)]
    if not backbones:
        return None
    rows = [r for r in rows if r.get("status") == STATUS_OK]
    datasets = [spec.name for spec in study.datasets]
    datasets += sorted({str(r["dataset"]) for r in rows} - set(datasets))

    lines = []
    for dataset in datasets:
        paper = study.reference.datasets.get(dataset, {})
        has_paper = any(metric in paper for metric, *_ in METRICS)
        lines += [f"## Transfer of the searched gates to other backbones: {dataset}", "",
                  "Original: the backbone alone. AdaFS-soft: the AdaFS-soft baseline on that backbone. "
                  "iHAS: gates searched on the DLRM, frozen, then clustering and per-cluster retraining "
                  "of the backbone. Test figures, mean ± sample standard deviation over the seeds that finished.",
                  ""]
        header = ["backbone", "metric"] + [FAMILY_NAMES[f] for f in FAMILIES]
        if has_paper:
            header += [f"paper {FAMILY_NAMES[f]}" for f in FAMILIES]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for backbone in backbones:
            for metric, label, column in METRICS:
                cells = [BACKBONE_NAMES[backbone] if metric == METRICS[0][0] else "", label]
                for family in FAMILIES:
                    method = method_name(family, backbone)
                    mine = [_float(r.get(column)) for r in rows if r["dataset"] == dataset and r["method"] == method]
                    cells.append(format_mean_std(mine) if method in study.methods or mine else "not run")
                if has_paper:
                    for family in FAMILIES:
                        figure = paper.get(metric, {}).get(method_name(family, backbone))
                        cells.append(f"{figure:.4f}" if figure is not None else "")
                lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        if has_paper:
            lines += [f"Paper figures: {study.reference.source or 'published test figures'}. They were measured "
                      "with the paper's full training budget; on samples or with capped epochs they are for "
                      "orientation only.", ""]
    return "\n".join(lines)
