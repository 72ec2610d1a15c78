"""Per-field vocabularies: value counts over the training split, then value -> id.

Id 0 of every field is its out-of-vocabulary id, shared by rare values (count < min_count in the
training split) and values never seen in training. Kept values get ids 1..n in order of
decreasing training count, ties broken by the value, so the ids are deterministic. The missing
value ("") is an ordinary value here: kept when frequent enough, out-of-vocabulary otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


class ValueCounter:
    """Counts of each value of one field, merged chunk by chunk; memory grows with distinct values only."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def update(self, tokens: pa.Array) -> None:
        if len(tokens) == 0:
            return
        vc = pc.value_counts(tokens)
        counts = self.counts
        for value, n in zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist()):
            counts[value] = counts.get(value, 0) + n

    def vocabulary(self, min_count: int) -> "Vocabulary":
        # Rare-value threshold: a value is kept when its training count >= min_count.
        kept = [(v, n) for v, n in self.counts.items() if n >= min_count]
        kept.sort(key=lambda item: (-item[1], item[0]))
        return Vocabulary(values=pa.array([v for v, _ in kept], type=pa.string()),
                          kept_count=len(kept), seen_count=len(self.counts))


@dataclass(frozen=True)
class Vocabulary:
    """The kept values of one field; `values[i]` has id i + 1."""

    values: pa.Array
    kept_count: int
    seen_count: int

    @property
    def field_dim(self) -> int:
        """Cardinality including the out-of-vocabulary id 0."""
        return self.kept_count + 1

    def encode(self, tokens: pa.Array) -> np.ndarray:
        """int32 ids of `tokens`: 1..n for kept values, 0 for anything else."""
        index = pc.index_in(tokens, value_set=self.values)
        return pc.fill_null(pc.add(index, 1), 0).to_numpy(zero_copy_only=False).astype(np.int32, copy=False)
