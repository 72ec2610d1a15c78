"""End-to-end tests of `run_pipeline`: every variant on real data, a learning bar, and resume."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from ihas.config import ClusterConfig, PipelineConfig, RetrainConfig, SearchConfig, TrainConfig
from ihas.pipeline import run_pipeline
from ihas.reporting import LocalReporter
from ihas.serialize import load_routed_model
from ihas.variants import VARIANTS, get_variant
from tests.test_training import InterruptingReporter

VARIANT_NAMES = list(VARIANTS)


def tiny_config(variant: str, **changes) -> PipelineConfig:
    """One epoch per stage, with gate steps every 4 batches so the bi-level loop runs on small data."""
    settings = dict(
        variant=variant, seed=0,
        train=TrainConfig(batch_size=2048, max_epochs=1, patience=1),
        search=SearchConfig(pretrain_epochs=1, max_epochs=1, patience=1, val_every=4),
        cluster=ClusterConfig(num_clusters=2, batch_size=4096),
        retrain=RetrainConfig(min_train_rows=64))
    settings.update(changes)
    return PipelineConfig(**settings)


def check_complete(metrics: dict, data, variant: str) -> None:
    for key in ("test_auc", "test_logloss", "valid_auc", "valid_logloss", "inference_seconds",
                "inference_samples_per_s"):
        assert math.isfinite(metrics[key]), f"{variant}: {key} = {metrics[key]}"
    assert 0.0 <= metrics["test_auc"] <= 1.0
    assert metrics["test_logloss"] > 0
    assert metrics["num_params"] > 0
    assert metrics["test_rows"] == len(data.test)
    k = metrics["num_clusters"]
    assert k == (2 if get_variant(variant).cluster else 1) or metrics.get("num_dropped_clusters", 0) > 0
    assert sum(metrics[f"cluster_{c}_test_rows"] for c in range(k)) == len(data.test)
    assert sum(metrics[f"num_params_cluster_{c}"] for c in range(k)) <= metrics["num_params"]


@pytest.mark.parametrize("variant", VARIANT_NAMES)
def test_every_variant_on_criteo(criteo_data, variant, tmp_path):
    metrics = run_pipeline(tiny_config(variant), criteo_data, output_dir=tmp_path / "model")
    check_complete(metrics, criteo_data, variant)
    assert (tmp_path / "model" / "model.pt").is_file()
    assert load_routed_model(tmp_path / "model").num_clusters == metrics["num_clusters"]


@pytest.mark.parametrize("variant", VARIANT_NAMES)
def test_every_variant_on_movielens(movielens_data, variant):
    metrics = run_pipeline(tiny_config(variant, train=TrainConfig(batch_size=4096, max_epochs=1, patience=1)),
                           movielens_data)
    check_complete(metrics, movielens_data, variant)


def best_single_field_auc(data) -> float:
    """Test AUC of the best one-field predictor: each id scored by its smoothed training click rate."""
    best = 0.0
    for j, size in enumerate(data.field_dims):
        ids = data.train.x[:, j]
        clicks = np.bincount(ids, weights=data.train.y, minlength=size)
        counts = np.bincount(ids, minlength=size)
        rate = (clicks + 1.0) / (counts + 2.0)
        best = max(best, roc_auc_score(data.test.y, rate[data.test.x[:, j]]))
    return best


def test_base_learns_on_movielens(movielens_data):
    # Bar: a DLRM that sees user, item and their attributes jointly must beat the best single-field
    # click-rate table (measured: item_id, test AUC 0.713) by a clear margin. Measured Base test AUC
    # on this split: 0.765 after 4 epochs and 0.773 after 6 (seeds 0 and 1, 2-core VM). A loop that
    # does not learn stays near 0.5, and one that only learns per-id biases stays near 0.71.
    reference = best_single_field_auc(movielens_data)
    assert 0.68 < reference < 0.75
    config = PipelineConfig(variant="base", train=TrainConfig(max_epochs=4, patience=2))
    metrics = run_pipeline(config, movielens_data)
    assert metrics["test_auc"] > reference + 0.02
    assert metrics["test_auc"] > 0.73


def test_resume_after_interruption_skips_finished_stages(criteo_data, tmp_path):
    config = tiny_config("ihas", search=SearchConfig(pretrain_epochs=1, max_epochs=2, patience=2, val_every=2))
    reference = run_pipeline(config, criteo_data)

    # Reports: pretrain 0, search 0, search 1, cluster, retrain... The third call raises before
    # saving, as if the process were killed during search epoch 1.
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(config, criteo_data, reporter=InterruptingReporter(tmp_path, fail_at=3))

    saved = LocalReporter(tmp_path).latest_checkpoint()
    reporter = LocalReporter(tmp_path)
    resumed = run_pipeline(config, criteo_data, reporter=reporter)
    # The wall time counts the interrupted run's saved work too, not only the resumed part.
    assert saved["elapsed_s"] > 0
    assert resumed["wall_seconds"] > saved["elapsed_s"]
    stages = [(row["stage"], row["epoch"]) for row in reporter.history]
    assert stages[0] == ("search", 1)
    assert ("pretrain", 0) not in stages
    assert ("cluster", 0) in stages
    assert stages[-1] == ("test", 0)
    check_complete(resumed, criteo_data, "ihas")
    # Batches, noise and optimizer state all resume exactly, so the result equals the uninterrupted run's.
    assert resumed["test_auc"] == pytest.approx(reference["test_auc"], abs=1e-9)
    assert resumed["test_logloss"] == pytest.approx(reference["test_logloss"], abs=1e-9)


def test_resume_rejects_other_config(criteo_data, tmp_path):
    config = tiny_config("base")
    run_pipeline(config, criteo_data, reporter=LocalReporter(tmp_path))
    # The error names the one setting that changed, with both values.
    changed = config.replace(train=dataclasses.replace(config.train, max_epochs=config.train.max_epochs + 1))
    with pytest.raises(ValueError) as caught:
        run_pipeline(changed, criteo_data, reporter=LocalReporter(tmp_path))
    assert f"train.max_epochs is {config.train.max_epochs} there and {config.train.max_epochs + 1}" in str(caught.value)
    with pytest.raises(ValueError, match="seed is 0 there and 1 in this run"):
        run_pipeline(tiny_config("base", seed=1), criteo_data, reporter=LocalReporter(tmp_path))


def test_unknown_variant_lists_names(criteo_data):
    with pytest.raises(ValueError, match="ihas-1"):
        run_pipeline(tiny_config("ihas-9"), criteo_data)
