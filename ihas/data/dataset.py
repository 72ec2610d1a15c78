"""In-memory form of a prepared dataset, as later stages consume it.

A prepared dataset directory (written by `ihas prepare`) holds `train.parquet`, `valid.parquet`,
`test.parquet` and `metadata.json`. Each Parquet file has one int32 id column per field (named after
the field) and an int8 `label` column. Ids of field f lie in [0, field_dims[f]); id 0 is the field's
out-of-vocabulary id.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np
import pyarrow.parquet as pq

if TYPE_CHECKING:
    import torch

SPLITS = ("train", "valid", "test")
LABEL_COLUMN = "label"
METADATA_FILE = "metadata.json"
OOV_ID = 0
FORMAT_VERSION = 1  # the metadata.json layout this loader reads


@dataclass(frozen=True)
class Split:
    """One split: ids `x` (int32, shape [N, F], C-contiguous) and labels `y` (float32, shape [N], 0/1)."""

    x: np.ndarray
    y: np.ndarray

    def __post_init__(self) -> None:
        if self.x.ndim != 2 or self.x.dtype != np.int32:
            raise ValueError(f"x must be an int32 array of shape [N, F], got {self.x.dtype} {self.x.shape}")
        if self.y.shape != (self.x.shape[0],) or self.y.dtype != np.float32:
            raise ValueError(f"y must be a float32 array of shape [{self.x.shape[0]}], got {self.y.dtype} {self.y.shape}")

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def tensors(self, device: "str | torch.device" = "cpu") -> "tuple[torch.Tensor, torch.Tensor]":
        """Return (x int32 [N, F], y float32 [N]) as tensors; on the CPU they share the arrays' memory."""
        return _as_tensor(self.x).to(device), _as_tensor(self.y).to(device)


@dataclass(frozen=True)
class PreparedDataset:
    """Field layout, the three splits and the metadata of one prepared dataset."""

    field_names: tuple[str, ...]
    field_dims: tuple[int, ...]
    train: Split
    valid: Split
    test: Split
    metadata: Mapping[str, Any]

    @property
    def num_fields(self) -> int:
        return len(self.field_names)

    @property
    def fingerprint(self) -> str:
        """A short identifier of the data: the source sha256 plus seed and min-count, hashed."""
        return str(self.metadata.get("fingerprint", ""))

    def split(self, name: str) -> Split:
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; use one of {', '.join(SPLITS)}")
        return getattr(self, name)


def load_prepared(path: str | Path) -> PreparedDataset:
    """Load a directory written by `ihas prepare` into memory."""
    root = Path(path)
    meta_path = root / METADATA_FILE
    if not meta_path.is_file():
        raise FileNotFoundError(
            f"{meta_path} not found: {root} is not a finished prepared dataset. "
            f"Run `ihas prepare --preset NAME --input FILE --output {root}` first.")
    metadata = json.loads(meta_path.read_text())
    version = metadata.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(f"{meta_path}: format_version {version!r} is not the supported {FORMAT_VERSION}; "
                         f"prepare the dataset again with this version of ihas (`ihas prepare ... --force`)")
    field_names = tuple(metadata["fields"])
    field_dims = tuple(int(metadata["field_dims"][name]) for name in field_names)
    splits = {name: _read_split(root / f"{name}.parquet", field_names) for name in SPLITS}
    return PreparedDataset(field_names=field_names, field_dims=field_dims, metadata=metadata, **splits)


def _read_split(path: Path, field_names: tuple[str, ...]) -> Split:
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; the prepared dataset is incomplete, prepare it again")
    table = pq.read_table(path, columns=[*field_names, LABEL_COLUMN])
    x = np.empty((table.num_rows, len(field_names)), dtype=np.int32)
    for j, name in enumerate(field_names):
        x[:, j] = table.column(name).to_numpy()
    y = table.column(LABEL_COLUMN).to_numpy().astype(np.float32)
    return Split(x=x, y=y)


def _as_tensor(array: np.ndarray) -> "torch.Tensor":
    # Arrays shared through Ray's object store are read-only. Stage code never writes to its input
    # tensors, so they share that memory instead of copying it, and torch's warning about
    # non-writable arrays is silenced here alone. torch is imported here so that `ihas prepare`,
    # which only needs the constants above, does not pay for importing it.
    import torch

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(array)
