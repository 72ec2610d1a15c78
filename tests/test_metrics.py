import math
import warnings

import numpy as np
import pytest
import torch

from ihas.metrics import log_loss, roc_auc


def test_auc_four_samples_by_pair_count():
    # Positives score 0.8 and 0.35, negatives 0.4 and 0.1. Of the 4 positive-negative pairs,
    # (0.8, 0.4), (0.8, 0.1) and (0.35, 0.1) are ordered right and (0.35, 0.4) wrong: AUC = 3/4.
    y = np.array([1, 0, 1, 0])
    scores = np.array([0.8, 0.4, 0.35, 0.1])
    assert roc_auc(y, scores) == pytest.approx(0.75)


def test_auc_ties_count_half():
    # Pairs: (0.5 vs 0.5) tie = 1/2, (0.5 vs 0.2) right = 1, (0.9 vs 0.5) right, (0.9 vs 0.2) right.
    # AUC = (0.5 + 1 + 1 + 1) / 4 = 0.875.
    y = torch.tensor([1.0, 1.0, 0.0, 0.0])
    scores = torch.tensor([0.5, 0.9, 0.5, 0.2])
    assert roc_auc(y, scores) == pytest.approx(0.875)


def test_auc_single_class_is_nan_with_warning():
    with pytest.warns(RuntimeWarning, match="single class"):
        value = roc_auc(np.ones(5), np.linspace(0, 1, 5))
    assert math.isnan(value)


def test_auc_rejects_length_mismatch():
    with pytest.raises(ValueError, match="y_true has 3 values"):
        roc_auc(np.array([0, 1, 0]), np.array([0.1, 0.2]))


def test_logloss_known_values():
    # -(ln 0.8 + ln(1 - 0.4)) / 2 = -(−0.2231436 − 0.5108256) / 2 = 0.3669846
    assert log_loss(np.array([1, 0]), np.array([0.8, 0.4])) == pytest.approx(0.3669846, abs=1e-6)


def test_logloss_extreme_probs_finite():
    # p = 0 for a positive and p = 1 for a negative both clip to eps: loss = -ln(1e-7) = 16.118096.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        value = log_loss(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]))
    assert math.isfinite(value)
    assert value == pytest.approx(-math.log(1e-7), rel=1e-6)


def test_logloss_correct_extremes_near_zero():
    # p = 1 for a positive clips to 1 - eps: loss = -ln(1 - 1e-7), about 1e-7.
    value = log_loss(np.array([1, 0]), np.array([1.0, 0.0]))
    assert value == pytest.approx(1e-7, rel=1e-3)


def test_logloss_rejects_logits():
    with pytest.raises(ValueError, match="sigmoid"):
        log_loss(np.array([1, 0]), np.array([2.5, -1.0]))


def test_metrics_reject_nan_scores():
    with pytest.raises(ValueError, match="NaN"):
        roc_auc(np.array([1, 0]), np.array([float("nan"), 0.1]))
