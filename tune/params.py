"""Hyperparameters of a finished tuning study, applied to the iHAS methods of an ablation study.

`python -m ablations --study NAME --params-from results/tune-STUDY/best.json` reads the searched
values from `best.json` and sets them on every iHAS variant of the study (`ihas` and `ihas-N`).
Baselines and `base` keep their own settings, because lambda, tau, K and the bin count mean
nothing to them. The values go into the study's per-method overrides, so they take precedence
over its study-wide overrides, and the variants' fixed settings (iHAS-3's zero polarization,
iHAS-4's agnostic gate) still apply on top.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Mapping

from ablations.study import Study, StudyError
from tune.space import PARAM_NAMES, to_overrides


def is_ihas_method(method: str) -> bool:
    return method == "ihas" or method.startswith("ihas-")


def load_best_params(path: str | Path) -> dict[str, Any]:
    """Read the searched values from a tuning study's `best.json`; raise `StudyError` when unusable."""
    path = Path(path)
    if not path.is_file():
        raise StudyError(f"--params-from: {path} not found; give the best.json of a finished `python -m tune` run")
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise StudyError(f"--params-from: {path} is not valid JSON: {error}") from error
    if not isinstance(payload, Mapping) or payload.get("status") != "ok":
        status = payload.get("status") if isinstance(payload, Mapping) else None
        raise StudyError(f"--params-from: {path} contains no best config (status {status!r}); "
                         f"the tuning study finished without a complete trial")
    params = payload.get("params")
    if not isinstance(params, Mapping) or sorted(params) != sorted(PARAM_NAMES):
        raise StudyError(f"--params-from: {path} must list params {list(PARAM_NAMES)}, got {params!r}")
    for name, value in params.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise StudyError(f"--params-from: {path}: params.{name} must be a finite number, got {value!r}")
    return dict(params)


def apply_params(study: Study, params: Mapping[str, Any]) -> Study:
    """Return `study` with the searched values set on each of its iHAS methods."""
    overrides = to_overrides(params)
    method_overrides = {method: _merge(study.method_overrides.get(method, {}), overrides)
                        for method in study.methods if is_ihas_method(method)}
    merged = {**study.method_overrides, **method_overrides}
    try:
        return dataclasses.replace(study, method_overrides=merged)
    except ValueError as error:
        raise StudyError(f"--params-from: the tuned values do not fit study {study.name!r}: {error}") from error


def _merge(current: Mapping[str, Any], changes: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    merged = {key: dict(value) if isinstance(value, Mapping) else value for key, value in current.items()}
    for section, values in changes.items():
        merged[section] = {**merged.get(section, {}), **values}
    return merged
