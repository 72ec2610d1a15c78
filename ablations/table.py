"""The Markdown results table of a study: per dataset, one line per method, beside published figures."""

from __future__ import annotations

import json
import math
import statistics
from typing import Any, Iterable, Mapping, Sequence

from ablations.results import STATUS_FAILED, STATUS_OK
from ablations.study import REFERENCE_METRICS, Study

DISPLAY_NAMES = {"base": "Base", "ihas": "iHAS", "ihas-1": "iHAS-1", "ihas-2": "iHAS-2", "ihas-3": "iHAS-3",
                 "ihas-4": "iHAS-4", "adafs-soft": "AdaFS-soft", "adafs-hard": "AdaFS-hard", "pep": "PEP",
                 "autofield": "AutoField", "optembed": "OptEmbed", "optfs": "OptFS",
                 # The transfer methods of `ihas.transfer`: each backbone alone, with AdaFS-soft, with iHAS.
                 "fm": "FM", "adafs-soft-fm": "AdaFS-soft (FM)", "ihas-fm": "iHAS (FM)",
                 "wide_deep": "W&D", "adafs-soft-wide_deep": "AdaFS-soft (W&D)", "ihas-wide_deep": "iHAS (W&D)",
                 "deepfm": "DeepFM", "adafs-soft-deepfm": "AdaFS-soft (DeepFM)", "ihas-deepfm": "iHAS (DeepFM)"}


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
        paper = reference.datasets.get(dataset, {})
        header += [f"paper {metric.replace('auc', 'AUC')}" for metric in REFERENCE_METRICS if metric in paper]
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
            for metric in REFERENCE_METRICS:
                if metric in paper:
                    figure = paper[metric].get(method)
                    cells.append(f"{figure:.4f}" if figure is not None else "")
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")

    if reference.datasets:
        lines += render_grid(study, rows, datasets)

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


def render_grid(study: Study, rows: Iterable[Mapping[str, Any]], datasets: Sequence[str]) -> list[str]:
    """Return Markdown lines of two methods x datasets tables: the measured test AUC and logloss, then the study's reference figures."""
    rows = list(rows)
    methods = list(study.methods) + sorted({str(r["method"]) for r in rows} - set(study.methods))
    lines = ["## Methods x datasets", "",
             "Test AUC and logloss, mean ± sample standard deviation over the seeds that finished.", ""]
    header = ["method"] + [f"{d} {label}" for d in datasets for label in ("AUC", "logloss")]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method in methods:
        cells = [display_name(method)]
        for dataset in datasets:
            mine = [r for r in rows if r["dataset"] == dataset and r["method"] == method and r["status"] == STATUS_OK]
            cells.append(format_mean_std([_float(r.get("test_auc")) for r in mine]))
            cells.append(format_mean_std([_float(r.get("test_logloss")) for r in mine]))
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")

    reference = study.reference
    paper_datasets = list(reference.datasets)
    lines += ["## Published figures", "", f"{reference.source or 'Published test figures'}.", ""]
    header = ["method"] + [f"{d} {label}" for d in paper_datasets for label in ("AUC", "logloss")]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method in methods:
        cells = [display_name(method)]
        for dataset in paper_datasets:
            for metric in REFERENCE_METRICS:
                figure = reference.datasets[dataset].get(metric, {}).get(method)
                cells.append(f"{figure:.4f}" if figure is not None else "")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "The published figures were measured on the full datasets with the paper's training budget; "
              "on samples or with capped epochs they are for orientation only.", ""]
    return lines


def render_selection(study: Study, rows: Iterable[Mapping[str, Any]]) -> str | None:
    """Build the Markdown text of `selection.md`: what each method selected, per dataset and seed.

    Methods that report a `selection` (a JSON object, such as the baselines') are listed; returns
    None when no finished trial has one.
    """
    chosen = [r for r in rows if r["status"] == STATUS_OK and isinstance(r.get("selection"), str) and r["selection"]]
    if not chosen:
        return None
    lines = [f"# What each method selected: study {study.name}", "",
             "Fields kept and embedding dims per field, as each method reported them at the end of its run.", ""]
    order = {m: i for i, m in enumerate(study.methods)}
    chosen.sort(key=lambda r: (str(r["dataset"]), order.get(str(r["method"]), len(order)), str(r["method"]),
                               int(r["seed"])))
    for row in chosen:
        try:
            selection = json.loads(row["selection"])
        except json.JSONDecodeError:
            selection = {"unparsed": row["selection"]}
        lines += [f"## {display_name(str(row['method']))} on {row['dataset']}, seed {row['seed']}", ""]
        for key in sorted(selection):
            lines.append(f"- {key}: {_describe_value(selection[key])}")
        lines.append("")
    return "\n".join(lines)


def _describe_value(value: Any) -> str:
    if isinstance(value, Mapping):
        return ", ".join(f"{k} {_describe_value(v)}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) if value else "none"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


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
