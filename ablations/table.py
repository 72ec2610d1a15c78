"""The Markdown results table of a study: per dataset, one line per method, beside published figures."""

from __future__ import annotations

import math
import statistics
from typing import Any, Iterable, Mapping, Sequence

from ablations.results import STATUS_FAILED, STATUS_OK
from ablations.study import Study

DISPLAY_NAMES = {"base": "Base", "ihas": "iHAS", "ihas-1": "iHAS-1", "ihas-2": "iHAS-2", "ihas-3": "iHAS-3",
                 "ihas-4": "iHAS-4", "adafs-soft": "AdaFS-soft", "adafs-hard": "AdaFS-hard", "pep": "PEP",
                 "autofield": "AutoField", "optembed": "OptEmbed", "optfs": "OptFS"}


def display_name(method: str) -> str:
    return DISPLAY_NAMES.get(method, method)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1 in the denominator); the std is NaN for one value."""
    if not values:
        return math.nan, math.nan
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else math.nan
    return mean, std


def format_mean_std(values: Sequence[float], digits: int = 4) -> str:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return "n/a"
    mean, std = mean_std(finite)
    text = f"{mean:.{digits}f}"
    text += f" ± {std:.{digits}f}" if math.isfinite(std) else " (1 seed)"
    if len(finite) < len(values):
        text += f" ({len(values) - len(finite)} not finite)"
    return text


def render_table(study: Study, rows: Iterable[Mapping[str, Any]]) -> str:
    """Build the Markdown text of `table.md` from the result rows of `study`."""
    rows = list(rows)
    lines = [f"# Study {study.name} (version {study.version})", ""]
    if study.description:
        lines += [study.description.strip(), ""]
    lines += ["Mean ± sample standard deviation over the seeds that finished; parameter counts and "
              "inference time are means over those seeds.", ""]

    datasets = [spec.name for spec in study.datasets]
    datasets += sorted({str(r["dataset"]) for r in rows} - set(datasets))
    reference = study.reference
    ref_header = f"paper AUC ({reference.dataset})" if reference.auc else ""
    for dataset in datasets:
        ok = [r for r in rows if r["dataset"] == dataset and r["status"] == STATUS_OK]
        fingerprints = sorted({str(r.get("dataset_fingerprint") or "") for r in ok} - {""})
        lines.append(f"## {dataset}")
        lines.append("")
        if fingerprints:
            lines += [f"Dataset fingerprint: {', '.join(f[:16] for f in fingerprints)}", ""]
        header = ["method", "test AUC", "test logloss", "params", "inference s", "seeds ok"]
        if ref_header:
            header.append(ref_header)
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "---|" * len(header))
        methods = list(study.methods) + sorted({str(r["method"]) for r in rows if r["dataset"] == dataset}
                                               - set(study.methods))
        for method in methods:
            mine = [r for r in ok if r["method"] == method]
            all_mine = [r for r in rows if r["dataset"] == dataset and r["method"] == method]
            cells = [
                display_name(method),
                format_mean_std([_float(r.get("test_auc")) for r in mine]),
                format_mean_std([_float(r.get("test_logloss")) for r in mine]),
                _format_mean([_float(r.get("num_params")) for r in mine], "{:,.0f}"),
                _format_mean([_float(r.get("inference_s")) for r in mine], "{:.3g}"),
                f"{len(mine)}/{len(all_mine)}" if all_mine else "0/0",
            ]
            if ref_header:
                figure = reference.auc.get(method)
                cells.append(f"{figure:.4f}" if figure is not None else "")
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")

    if reference.auc:
        lines += [f"Paper figures: {reference.source or 'published test AUC'}. They were measured on "
                  f"{reference.dataset} with the paper's full training budget; on other datasets and "
                  f"with this study's settings they are for orientation only.", ""]

    failed = [r for r in rows if r["status"] == STATUS_FAILED]
    if failed:
        lines += ["## Failed trials", "", "| method | dataset | seed | attempts | error |", "|---|---|---|---|---|"]
        for row in sorted(failed, key=lambda r: (str(r["method"]), str(r["dataset"]), int(r["seed"]))):
            error = str(row.get("error") or "").replace("|", "\\|").replace("\n", " ")
            lines.append(f"| {display_name(str(row['method']))} | {row['dataset']} | {row['seed']} | "
                         f"{row.get('attempts') or ''} | {error} |")
        lines.append("")
    return "\n".join(lines)


def _format_mean(values: Sequence[float], pattern: str) -> str:
    finite = [v for v in values if math.isfinite(v)]
    return pattern.format(statistics.fmean(finite)) if finite else "n/a"


def _float(value: Any) -> float:
    if value is None:
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan
