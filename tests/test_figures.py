"""Tests of the study figures and the results README: hand-set models for the numbers, a real run for the files."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import torch

from ablations.figures import (CLUSTER_DIMS_FILE, HISTOGRAM_FILE, INFERENCE_FILE, README_FILE, SavedTrial,
                               render_readme, sample_probabilities, saved_trials, write_figures)
from ihas.config import ModelConfig, PipelineConfig, SearchConfig
from ihas.models.dlrm import MixedDimDLRM
from ihas.serialize import save_routed_model
from ihas.stages.inference import RoutedModel
from tests.designed import FIELD_DIMS, MASK_A, MASK_B, ROW_A, ROW_B, dataset, designed_model, masked_point, split

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def name_of(method: str, dataset_name: str, seed: int) -> str:
    return f"{method}-{dataset_name}-seed{seed}"


def save_designed(models_dir: Path, method: str, polarization: float) -> None:
    """Save the hand-set routed model: cluster 0 retrained with dims [3, 0], cluster 1 scored by the base model."""
    model, gate = designed_model()
    centroids = torch.stack([masked_point(MASK_A, ROW_A), masked_point(MASK_B, ROW_B)])
    torch.manual_seed(1)
    routed = RoutedModel(model, gate, centroids, [MixedDimDLRM(FIELD_DIMS, [3, 0], (4,)), None], bins=20)
    config = PipelineConfig(variant=method, model=ModelConfig(embed_dim=4, mlp_dims=(4,)),
                            search=SearchConfig(polarization=polarization))
    save_routed_model(routed, models_dir / name_of(method, "designed", 0), variant=method, config=config,
                      field_names=("f0", "f1"), field_dims=FIELD_DIMS)


def designed_data():
    rows = split([ROW_A, ROW_B], [1, 0])
    return dataset(rows, rows, test=split([ROW_A], [1]))


def row(method: str, inference_s: float | None = 0.01, status: str = "ok") -> dict:
    return {"method": method, "dataset": "designed", "seed": 0, "status": status, "inference_s": inference_s}


def check_png(path: Path) -> np.ndarray:
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    pixels = matplotlib.image.imread(path)
    height, width = pixels.shape[:2]
    assert 200 <= width <= 6000
    assert 150 <= height <= 6000
    assert float(pixels[..., :3].std()) > 0.01  # something was drawn on the white background
    return pixels


def test_sample_probabilities_hand_computed(tmp_path):
    save_designed(tmp_path, "ihas", polarization=1.0)
    trial = saved_trials([row("ihas")], tmp_path, name_of)[0]
    probs, bins = sample_probabilities(trial, designed_data())
    # Row A embeds to [1, 1, 1, -1] and [-1, -1, -1, -1]; the gate's logits are 100 times that.
    assert bins == 20
    assert (probs > 0.999).sum() == 3
    assert (probs < 0.001).sum() == 5


def test_one_histogram_panel_says_what_is_missing(tmp_path):
    save_designed(tmp_path / "models", "ihas", polarization=1.0)
    figures = write_figures(tmp_path, [row("ihas")], methods=["ihas"], datasets={"designed": designed_data()},
                            models_dir=tmp_path / "models", name_of=name_of)
    histogram = figures[0]
    assert histogram.path == tmp_path / HISTOGRAM_FILE
    check_png(histogram.path)
    assert "with polarization: ihas on designed, seed 0" in histogram.note
    assert "without it (iHAS-3)" in histogram.note
    assert "panel is missing" in histogram.note


def test_histogram_pairs_with_and_without_polarization(tmp_path):
    save_designed(tmp_path / "models", "ihas", polarization=1.0)
    save_designed(tmp_path / "models", "ihas-3", polarization=0.0)
    rows = [row("ihas"), row("ihas-3")]
    figures = write_figures(tmp_path, rows, methods=["ihas", "ihas-3"], datasets={"designed": designed_data()},
                            models_dir=tmp_path / "models", name_of=name_of)
    note = figures[0].note
    assert "with polarization: ihas on designed, seed 0" in note
    assert "without polarization: ihas-3 on designed, seed 0" in note
    assert "panel is missing" not in note
    # Two panels side by side make the image wider than one panel.
    two_panels = check_png(tmp_path / HISTOGRAM_FILE).shape[1]
    single = tmp_path / "single"
    save_designed(single / "models", "ihas", polarization=1.0)
    write_figures(single, [row("ihas")], methods=["ihas"], datasets={"designed": designed_data()},
                  models_dir=single / "models", name_of=name_of)
    assert two_panels > 1.5 * check_png(single / HISTOGRAM_FILE).shape[1]


def test_cluster_dims_names_fallback_cluster(tmp_path):
    save_designed(tmp_path / "models", "ihas", polarization=1.0)
    figures = write_figures(tmp_path, [row("ihas")], methods=["ihas"], datasets={"designed": designed_data()},
                            models_dir=tmp_path / "models", name_of=name_of)
    dims = figures[2]
    assert dims.path == tmp_path / CLUSTER_DIMS_FILE
    check_png(dims.path)
    assert "Cluster(s) 1 had too few rows" in dims.note


def test_nothing_drawn_without_finished_trials(tmp_path):
    figures = write_figures(tmp_path, [row("ihas", status="failed"), row("base", inference_s=None)],
                            methods=["ihas", "base"], datasets={"designed": designed_data()},
                            models_dir=tmp_path / "models", name_of=name_of)
    assert [f.path for f in figures] == [None, None, None]
    assert all(f.note.startswith("Not drawn") for f in figures)
    assert not list(tmp_path.glob("*.png"))
    readme = render_readme("empty", "", figures, [("table.md", "the table")])
    assert "![" not in readme
    assert "Not drawn: no finished trial reported an inference time." in readme


def test_saved_trials_skip_missing_models(tmp_path):
    save_designed(tmp_path, "ihas", polarization=1.0)
    found = saved_trials([row("ihas"), row("base"), row("ihas-3", status="failed")], tmp_path, name_of)
    assert [t.method for t in found] == ["ihas"]
    assert isinstance(found[0], SavedTrial)
    assert found[0].polarization == 1.0


def test_driver_figures_are_pngs(transfer_study_run):
    outcome, _ = transfer_study_run
    for filename in (HISTOGRAM_FILE, INFERENCE_FILE, CLUSTER_DIMS_FILE):
        path = outcome.output_dir / filename
        assert path.stat().st_size > 1000
        check_png(path)


def test_driver_readme_links_every_figure(transfer_study_run):
    outcome, _ = transfer_study_run
    readme = (outcome.output_dir / README_FILE).read_text()
    links = re.findall(r"\]\(([^)]+)\)", readme)
    for filename in (HISTOGRAM_FILE, INFERENCE_FILE, CLUSTER_DIMS_FILE, "table.md", "results.parquet"):
        assert filename in links
    for link in links:
        assert (outcome.output_dir / link).exists(), link
    # ihas-fm was searched with the polarization term and ihas-3 without it, so both panels are drawn.
    assert "with polarization: ihas-fm on criteo-10k, seed 0" in readme
    assert "without polarization: ihas-3 on criteo-10k, seed 0" in readme
    assert "panel is missing" not in readme
    # The cluster dims come from a method searched with the polarization term before an ablation.
    assert "From ihas-fm on criteo-10k, seed 0" in readme


@pytest.mark.parametrize("values, expected", [([0.5, None], True), ([None, None], False)])
def test_inference_plot_needs_a_time(tmp_path, values, expected):
    rows = [row("base", values[0]), row("ihas", values[1])]
    figures = write_figures(tmp_path, rows, methods=["base", "ihas"], datasets={}, models_dir=tmp_path,
                            name_of=name_of)
    assert (figures[1].path is not None) == expected
    assert (tmp_path / INFERENCE_FILE).exists() == expected


def test_broken_model_skips_only_its_figures(tmp_path):
    save_designed(tmp_path / "models", "ihas", polarization=1.0)
    (tmp_path / "models" / name_of("ihas", "designed", 0) / "model.pt").write_bytes(b"not a torch file")
    figures = write_figures(tmp_path, [row("ihas")], methods=["ihas"], datasets={"designed": designed_data()},
                            models_dir=tmp_path / "models", name_of=name_of)
    histogram, inference = figures[0], figures[1]
    assert histogram.path is None
    assert histogram.note.startswith("Not drawn: drawing it failed with")
    assert not (tmp_path / HISTOGRAM_FILE).exists()
    assert inference.path == tmp_path / INFERENCE_FILE
    check_png(inference.path)
