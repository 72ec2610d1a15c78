"""Results store of a study: one row per trial in `results.parquet` and `results.csv`.

Each finished or finally failed trial is written at once: both files are rewritten with every row
through a temporary file and `os.replace`, so a crash leaves the previous complete files, never a
half-written one. A trial is keyed by (method, dataset, seed); writing a key again replaces its
row, so a rerun of a failed trial replaces the failure.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

import pandas as pd

from ihas.atomic import atomic_write
from ihas.config import first_difference

PARQUET_FILE = "results.parquet"
CSV_FILE = "results.csv"
KEY_COLUMNS = ("method", "dataset", "seed")
STATUS_OK = "ok"
STATUS_FAILED = "failed"
# Columns every row has, in this order; metric columns follow in sorted order.
BASE_COLUMNS = ("method", "dataset", "seed", "status", "error", "dataset_fingerprint", "test_auc",
                "test_logloss", "valid_auc", "num_params", "wall_s", "pipeline_s", "inference_s",
                "peak_rss_mb", "attempts", "finished_at", "config")


class ResultsMismatchError(ValueError):
    """The output directory contains finished trials that ran with other settings or data."""


class ResultsStore:
    """Rows of one study's output directory, rewritten atomically after each change."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.rows: dict[tuple[str, str, int], dict[str, Any]] = {}
        parquet = self.directory / PARQUET_FILE
        if parquet.exists():
            for row in pd.read_parquet(parquet).to_dict(orient="records"):
                row = {k: _from_cell(v) for k, v in row.items()}
                self.rows[_key(row)] = row

    def completed_keys(self) -> set[tuple[str, str, int]]:
        """Keys of the trials that finished successfully; a rerun skips them."""
        return {key for key, row in self.rows.items() if row.get("status") == STATUS_OK}

    def difference(self, key: tuple[str, str, int], pipeline: Mapping[str, Any], fingerprint: str) -> str | None:
        """Describe how the stored row of `key` differs from these pipeline settings and data, or return None."""
        row = self.rows[key]
        if row.get("dataset_fingerprint") != fingerprint:
            return (f"dataset fingerprint {str(row.get('dataset_fingerprint'))[:12]} there and {fingerprint[:12]} "
                    "now (other data under the same name)")
        stored = row.get("config")
        stored = json.loads(stored) if isinstance(stored, str) else dict(stored or {})
        found = first_difference(stored.get("pipeline", {}), pipeline)
        if found is None:
            return None
        setting, old, new = found
        return f"{setting} is {old!r} there and {new!r} now"

    def record(self, row: Mapping[str, Any]) -> None:
        """Add or replace the row of one trial and rewrite both files."""
        missing = [c for c in KEY_COLUMNS + ("status",) if c not in row]
        if missing:
            raise ValueError(f"result row lacks column(s) {missing}: {dict(row)}")
        if row["status"] not in (STATUS_OK, STATUS_FAILED):
            raise ValueError(f"result status must be {STATUS_OK!r} or {STATUS_FAILED!r}, got {row['status']!r}")
        clean = dict(row)
        if isinstance(clean.get("config"), Mapping):
            clean["config"] = json.dumps(clean["config"], sort_keys=True)
        self.rows[_key(clean)] = clean
        self.write()

    def frame(self) -> pd.DataFrame:
        """Return all rows as a DataFrame with the base columns first, sorted by key."""
        rows = sorted(self.rows.values(), key=lambda r: (str(r["method"]), str(r["dataset"]), int(r["seed"])))
        extra = sorted({k for r in rows for k in r} - set(BASE_COLUMNS))
        frame = pd.DataFrame(rows, columns=[*BASE_COLUMNS, *extra])
        frame["seed"] = frame["seed"].astype("int64")
        return frame

    def write(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        frame = self.frame()
        atomic_write(self.directory / PARQUET_FILE, lambda path: frame.to_parquet(path, index=False))
        atomic_write(self.directory / CSV_FILE, lambda path: frame.to_csv(path, index=False))


def _key(row: Mapping[str, Any]) -> tuple[str, str, int]:
    return (str(row["method"]), str(row["dataset"]), int(row["seed"]))


def _from_cell(value: Any) -> Any:
    """Turn pandas' missing values back into None and numpy scalars into Python values."""
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    if value is pd.NA or value is pd.NaT:
        return None
    return value


def rows_with_status(rows: Iterable[Mapping[str, Any]], status: str) -> list[Mapping[str, Any]]:
    return [row for row in rows if row.get("status") == status]
