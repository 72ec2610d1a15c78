"""Figures of a study, drawn from its result rows and saved models, and the results `README.md` that links them.

Three PNG figures are written beside the tables (matplotlib, Agg backend, no display needed):
- `gate_histogram.png`: one test sample's gate keep probabilities, histogrammed as the threshold
  searcher does, from a trial searched with the polarization term and from one without it;
- `inference_time.png`: mean inference time over the test split per method, log scale;
- `cluster_dims.png`: the embedding dims each cluster's retrained model keeps per field.

Each figure states the trials it was drawn from. A figure whose inputs the study lacks (no trial
with saved gates, no retrained clusters, no finished trial) is not written, and the README states
why. This module does not import Ray, so it can be called and tested in one process.
"""

from __future__ import annotations

import json
import logging
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # render to files only; must come before pyplot is imported

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from ihas.atomic import atomic_write
from ablations.results import STATUS_OK  # noqa: E402
from ihas.data.dataset import PreparedDataset  # noqa: E402
from ihas.gates import deterministic_probs  # noqa: E402
from ihas.serialize import DESCRIPTION_FILE, load_routed_model  # noqa: E402
from ihas.threshold import count_histograms, histogram_thresholds  # noqa: E402

logger = logging.getLogger(__name__)

README_FILE = "README.md"
HISTOGRAM_FILE = "gate_histogram.png"
INFERENCE_FILE = "inference_time.png"
CLUSTER_DIMS_FILE = "cluster_dims.png"
DPI = 100
# Methods preferred for each histogram panel, before any other method with the same kind of search.
WITH_POLARIZATION = ("ihas",)
WITHOUT_POLARIZATION = ("ihas-3",)


@dataclass(frozen=True)
class Figure:
    """One figure of the README: its file (None when it was not drawn), title and explanation."""

    filename: str
    title: str
    path: Path | None
    note: str


@dataclass(frozen=True)
class SavedTrial:
    """A finished trial with a saved routed model: its directory and the contents of its `model.json`."""

    method: str
    dataset: str
    seed: int
    directory: Path
    description: Mapping[str, Any]

    @property
    def label(self) -> str:
        return f"{self.method} on {self.dataset}, seed {self.seed}"

    @property
    def polarization(self) -> float | None:
        search = (self.description.get("config") or {}).get("search") or {}
        value = search.get("polarization")
        return float(value) if isinstance(value, (int, float)) else None


def saved_trials(rows: Iterable[Mapping[str, Any]], models_dir: Path,
                 name_of: Callable[[str, str, int], str]) -> list[SavedTrial]:
    """Return the finished trials whose `model.json` exists under `models_dir`, sorted by method, dataset, seed.

    `name_of(method, dataset, seed)` is the folder name the runner gave the trial's model.
    """
    found = []
    for row in rows:
        if row.get("status") != STATUS_OK:
            continue
        method, dataset, seed = str(row["method"]), str(row["dataset"]), int(row["seed"])
        directory = models_dir / name_of(method, dataset, seed)
        description_path = directory / DESCRIPTION_FILE
        if not description_path.is_file():
            continue
        description = json.loads(description_path.read_text(encoding="utf-8"))
        found.append(SavedTrial(method, dataset, seed, directory, description))
    return sorted(found, key=lambda t: (t.method, t.dataset, t.seed))


def write_figures(output_dir: Path, rows: Sequence[Mapping[str, Any]], *, methods: Sequence[str],
                  datasets: Mapping[str, PreparedDataset], models_dir: Path,
                  name_of: Callable[[str, str, int], str]) -> list[Figure]:
    """Draw the three figures into `output_dir` and return them in README order.

    `methods` orders the inference-time bars; `datasets` supplies the test sample of the histogram.
    """
    trials = saved_trials(rows, models_dir, name_of)
    drawers: list[tuple[Path, Callable[[], Figure]]] = [
        (output_dir / HISTOGRAM_FILE, lambda: plot_gate_histograms(trials, datasets, output_dir / HISTOGRAM_FILE)),
        (output_dir / INFERENCE_FILE, lambda: plot_inference_times(rows, methods, output_dir / INFERENCE_FILE)),
        (output_dir / CLUSTER_DIMS_FILE, lambda: plot_cluster_dims(trials, output_dir / CLUSTER_DIMS_FILE)),
    ]
    figures = []
    for path, draw in drawers:
        try:
            figures.append(draw())
        except Exception as error:  # a figure is a convenience: its failure must not cost the README
            logger.warning("figure %s failed: %s: %s", path.name, type(error).__name__, error)
            figures.append(Figure(path.name, path.stem.replace("_", " "), None,
                                  f"Not drawn: drawing it failed with {type(error).__name__}: {error}"))
    return figures


def _gated(trials: Sequence[SavedTrial]) -> list[SavedTrial]:
    """Trials that saved an instance-wise gate with the base embedding it reads."""
    return [t for t in trials if t.description.get("gate_kind") == "instance" and t.description.get("has_base")]


def _pick(candidates: Sequence[SavedTrial], preferred: Sequence[str], dataset: str | None) -> SavedTrial | None:
    if dataset is not None:
        candidates = [t for t in candidates if t.dataset == dataset]
    for method in preferred:
        mine = [t for t in candidates if t.method == method]
        if mine:
            return min(mine, key=lambda t: t.seed)
    return min(candidates, key=lambda t: (t.seed, t.method)) if candidates else None


@torch.no_grad()
def sample_probabilities(trial: SavedTrial, data: PreparedDataset, row: int = 0) -> tuple[np.ndarray, int]:
    """Return the gate keep probabilities (float [N*]) of test row `row` under `trial`'s model, and its bins."""
    routed = load_routed_model(trial.directory)
    x = torch.as_tensor(data.test.x[row:row + 1])
    probs = deterministic_probs(routed.gate(routed.base.embed(x)))
    return probs[0].double().numpy(), routed.bins


def plot_gate_histograms(trials: Sequence[SavedTrial], datasets: Mapping[str, PreparedDataset], path: Path) -> Figure:
    """Histogram test row 0's gate probabilities from a trial with and one without the polarization term."""
    title = "Gate probabilities of one test sample, with and without polarization"
    gated = [t for t in _gated(trials) if t.dataset in datasets and len(datasets[t.dataset].test) > 0]
    with_term = _pick([t for t in gated if (t.polarization or 0.0) > 0], WITH_POLARIZATION, None)
    dataset = with_term.dataset if with_term is not None else None
    without_term = _pick([t for t in gated if t.polarization == 0.0], WITHOUT_POLARIZATION, dataset)
    panels = [(f"with polarization: {t.label}", t) for t in [with_term] if t is not None]
    panels += [(f"without polarization: {t.label}", t) for t in [without_term] if t is not None]
    if not panels:
        return Figure(path.name, title, None, "Not drawn: no finished trial saved an instance-wise gate "
                      "(iHAS, iHAS-3 or a transfer method) with the embedding it reads.")

    dataset = panels[0][1].dataset
    histograms = []
    for label, trial in panels:
        probs, bins = sample_probabilities(trial, datasets[dataset])
        counts = count_histograms(torch.from_numpy(probs)[None, :], bins)[0].numpy()
        threshold, fell_back = histogram_thresholds(torch.from_numpy(probs)[None, :], bins)
        histograms.append((label, counts, bins, float(threshold[0]), bool(fell_back[0])))

    top = max(int(counts.max()) for _, counts, *_ in histograms)
    fig, axes = plt.subplots(1, len(histograms), figsize=(6 * len(histograms), 4.2), squeeze=False)
    for axis, (label, counts, bins, threshold, fell_back) in zip(axes[0], histograms):
        edges = np.arange(bins) / bins
        axis.bar(edges, counts, width=1.0 / bins, align="edge", color="tab:blue", edgecolor="white")
        axis.set_yscale("log")
        axis.set_ylim(0.8, top * 2)  # the same range in both panels, so their shapes compare directly
        axis.set_xlim(0.0, 1.0)
        kind = "no valley, fallback" if fell_back else "valley"
        axis.axvline(threshold, color="tab:red", linestyle="--", label=f"threshold {threshold:.2f} ({kind})")
        axis.set_xlabel("keep probability p")
        axis.set_ylabel("dimensions (log scale)")
        axis.set_title(label, fontsize=9)
        axis.legend(fontsize=8)
    fig.suptitle(f"Gate probabilities of test row 0 of {dataset}")
    _save(fig, path)

    num_dims = int(histograms[0][1].sum())
    note = (f"Test row 0 of {dataset}: its {num_dims} keep probabilities counted in the threshold searcher's "
            "bins, on a log scale. The dashed line is the threshold that the searcher picks for this row.")
    note += " Panels: " + "; ".join(label for label, _ in panels) + "."
    missing = []
    if with_term is None:
        missing.append("with the polarization term (iHAS)")
    if without_term is None:
        missing.append("without it (iHAS-3)")
    if missing:
        note += (f" The study has no finished trial with saved gates searched {' or '.join(missing)} on "
                 f"{dataset}, so that panel is missing; add that method to the study to draw it.")
    return Figure(path.name, title, path, note)


def _mean(values: Iterable[Any]) -> float:
    finite = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(float(v))]
    return statistics.fmean(finite) if finite else math.nan


def plot_inference_times(rows: Sequence[Mapping[str, Any]], methods: Sequence[str], path: Path) -> Figure:
    """Draw the mean test-split inference time per method and dataset as bars on a log scale."""
    title = "Inference time per method"
    ok = [r for r in rows if r.get("status") == STATUS_OK]
    order = list(methods) + sorted({str(r["method"]) for r in ok} - set(methods))
    datasets = sorted({str(r["dataset"]) for r in ok})
    means = {(m, d): _mean(r.get("inference_s") for r in ok if r["method"] == m and r["dataset"] == d)
             for m in order for d in datasets}
    order = [m for m in order if any(math.isfinite(means[m, d]) and means[m, d] > 0 for d in datasets)]
    if not order:
        return Figure(path.name, title, None, "Not drawn: no finished trial reported an inference time.")

    fig, axis = plt.subplots(figsize=(max(6.0, 0.6 * len(order) * len(datasets) + 2), 4.5))
    width = 0.8 / len(datasets)
    positions = np.arange(len(order))
    for i, dataset in enumerate(datasets):
        heights = [means[m, dataset] if math.isfinite(means[m, dataset]) and means[m, dataset] > 0 else 0.0
                   for m in order]
        axis.bar(positions + i * width - 0.4 + width / 2, heights, width=width, label=dataset)
    axis.set_yscale("log")
    axis.set_xticks(positions)
    axis.set_xticklabels(order, rotation=30, ha="right")
    axis.set_ylabel("seconds over the test split (log scale)")
    axis.set_title("Inference time per method (mean over seeds)")
    axis.legend(fontsize=8)
    _save(fig, path)
    return Figure(path.name, title, path, "Wall time of batch inference over the whole test split after one "
                  "warm-up batch (routing included), mean over the seeds that finished.")


def plot_cluster_dims(trials: Sequence[SavedTrial], path: Path) -> Figure:
    """Draw, for one retrained trial (iHAS preferred), the dims each cluster's model keeps per field."""
    title = "Selected embedding dims per field for each cluster"
    retrained = [t for t in trials if any(d is not None for d in t.description.get("cluster_dims") or [])]
    # The full method first, then another method searched with the polarization term (such as a
    # transfer method), then any ablation.
    trial = min(retrained, default=None, key=lambda t: (t.method not in WITH_POLARIZATION,
                                                         not (t.polarization or 0.0) > 0, t.seed, t.method))
    if trial is None:
        return Figure(path.name, title, None, "Not drawn: no finished trial saved retrained cluster models "
                      "(iHAS, its ablations iHAS-2 to iHAS-4, or a transfer method).")

    description = trial.description
    fields = list(description["field_names"])
    embed_dim = int(description["embed_dim"])
    clusters = [(c, dims) for c, dims in enumerate(description["cluster_dims"]) if dims is not None]
    matrix = np.array([dims for _, dims in clusters], dtype=float)

    fig, axis = plt.subplots(figsize=(max(6.0, 0.28 * len(fields) + 2), 1.2 + 0.6 * len(clusters)))
    image = axis.imshow(matrix, aspect="auto", cmap="viridis", vmin=0, vmax=embed_dim)
    axis.set_xticks(np.arange(len(fields)))
    axis.set_xticklabels(fields, rotation=90, fontsize=7)
    axis.set_yticks(np.arange(len(clusters)))
    axis.set_yticklabels([f"cluster {c}" for c, _ in clusters])
    if len(fields) <= 40:
        for (i, j), value in np.ndenumerate(matrix):
            axis.text(j, i, f"{int(value)}", ha="center", va="center", fontsize=6,
                      color="white" if value < embed_dim / 2 else "black")
    fig.colorbar(image, ax=axis, label=f"dims kept (of {embed_dim})")
    axis.set_title(f"Dims per field of each cluster's model: {trial.label}", fontsize=9)
    _save(fig, path)
    note = f"From {trial.label}: the dims per field that each cluster's retrained model keeps (0 drops the field)."
    fallback = [c for c, dims in enumerate(description["cluster_dims"]) if dims is None]
    if fallback:
        note += (f" Cluster(s) {', '.join(map(str, fallback))} had too few rows for a model of their own and "
                 "are scored by the searched model, so they have no row here.")
    return Figure(path.name, title, path, note)


def _save(fig: Any, path: Path) -> None:
    """Write the figure through a temporary file, so a failed save leaves no partial PNG."""
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=DPI, bbox_inches="tight"), suffix=".png")
    finally:
        plt.close(fig)


def render_readme(name: str, description: str, figures: Sequence[Figure], files: Sequence[tuple[str, str]]) -> str:
    """Build the text of the results `README.md`: the files of the output directory, then each figure."""
    lines = [f"# Results of study {name}", ""]
    if description:
        lines += [description.strip(), ""]
    lines += ["| file | contents |", "|---|---|"]
    lines += [f"| [{filename}]({filename}) | {what} |" for filename, what in files]
    lines += ["", "## Figures", ""]
    for figure in figures:
        lines += [f"### {figure.title}", ""]
        if figure.path is not None:
            lines += [f"![{figure.title}]({figure.filename})", ""]
        lines += [figure.note, ""]
    return "\n".join(lines)
