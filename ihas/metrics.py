"""Evaluation metrics over a whole split: ROC AUC and log loss."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

logger = logging.getLogger(__name__)

ArrayLike = np.ndarray | torch.Tensor


def _as_float64(values: ArrayLike, name: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        array = array.reshape(-1)
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or infinite values; check the model output before scoring")
    return array


def _check_pair(y_true: ArrayLike, values: ArrayLike, name: str) -> tuple[np.ndarray, np.ndarray]:
    y = _as_float64(y_true, "y_true")
    v = _as_float64(values, name)
    if y.shape != v.shape:
        raise ValueError(f"y_true has {y.size} values but {name} has {v.size}; pass one {name[:-1]} per label")
    if y.size == 0:
        raise ValueError("y_true is empty; a metric needs at least one sample")
    if not np.all((y == 0) | (y == 1)):
        raise ValueError(f"y_true must contain only 0 and 1, got values {np.unique(y)[:5]}")
    return y, v


def roc_auc(y_true: ArrayLike, scores: ArrayLike) -> float:
    """Return the ROC AUC of `scores` (logits or probabilities) against 0/1 labels over all samples.

    With a single class in `y_true` the AUC is undefined, so this warns and returns NaN.
    """
    y, s = _check_pair(y_true, scores, "scores")
    if np.all(y == y[0]):
        message = f"ROC AUC is undefined with a single class (all {int(y[0])} over {y.size} samples); returning NaN"
        warnings.warn(message, RuntimeWarning, stacklevel=2)
        logger.warning(message)
        return float("nan")
    return float(roc_auc_score(y, s))


def log_loss(y_true: ArrayLike, probs: ArrayLike, eps: float = 1e-7) -> float:
    """Return the mean binary cross-entropy of probabilities `probs`, clipped to [eps, 1 - eps].

    The clipping keeps the loss finite for a probability of exactly 0 or 1 (at most -ln(eps) per
    sample). The sum runs in float64.
    """
    if not 0.0 < eps < 0.5:
        raise ValueError(f"eps must be in (0, 0.5), got {eps}")
    y, p = _check_pair(y_true, probs, "probs")
    if np.any((p < 0) | (p > 1)):
        raise ValueError("probs must lie in [0, 1]; pass sigmoid(logits), not the logits")
    p = np.clip(p, eps, 1.0 - eps)
    return float(-np.mean(y * np.log(p) + (1.0 - y) * np.log1p(-p)))
