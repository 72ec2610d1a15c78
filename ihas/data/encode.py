"""Value transforms on Arrow chunks: labels, numeric values, and the seeded split.

Every function takes a whole column (a pyarrow string array, "" meaning missing) and works with
vectorized Arrow and NumPy operations, never a Python loop per row.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# A decimal number, optionally signed, with an optional fraction and exponent: "5", "-1", "260.0", "1e6".
# "inf", "nan", hex and thousands separators do not match and count as invalid.
NUMBER_PATTERN = r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$"
MISSING = ""
# Transformed numeric categories are clipped to +-2**62 so that they fit int64; only integers
# below -2**62 (about -4.6e18) share one category, since v > 2 is already compressed by the log.
_NUMERIC_LIMIT = float(2**62)

TRAIN, VALID, TEST = 0, 1, 2
SPLIT_NAMES = ("train", "valid", "test")


def parse_numbers(col: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Parse a string column: (values float64 with 0 where not a number, is_missing, is_invalid).

    Missing is the empty string; invalid is anything else that is not a finite decimal number.
    """
    missing = pc.equal(col, MISSING)
    missing_np = missing.to_numpy(zero_copy_only=False)
    if not pc.any(pc.invert(pc.or_(missing, pc.match_substring_regex(col, NUMBER_PATTERN)))).as_py():
        # Fast path, the common case: every value is a number or empty.
        values = pc.cast(pc.if_else(missing, "0", col), pa.float64()).to_numpy(zero_copy_only=False)
        invalid = ~np.isfinite(values)
    else:
        ok = pc.match_substring_regex(col, NUMBER_PATTERN)
        values = pc.cast(pc.if_else(ok, col, "0"), pa.float64()).to_numpy(zero_copy_only=False)
        invalid = ~(ok.to_numpy(zero_copy_only=False) | missing_np) | ~np.isfinite(values)
    return np.where(np.isfinite(values), values, 0.0), missing_np, invalid


def numeric_tokens(col: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """METHOD.md section 1 numeric transform, as category tokens: (tokens string array, is_invalid).

    Empty -> the missing category (""); v > 2 -> floor(ln(v)^2); otherwise floor(v), negatives
    included, as its own category. Values written as floats ("260.0") are numbers too.
    """
    # Transform each distinct value once, then spread the results back to the rows.
    encoded = pc.dictionary_encode(col)
    indices = encoded.indices.to_numpy(zero_copy_only=False)
    tokens, invalid = _numeric_tokens_distinct(encoded.dictionary)
    return tokens.take(encoded.indices), invalid[indices]


def _numeric_tokens_distinct(col: pa.Array) -> tuple[pa.Array, np.ndarray]:
    values, missing, invalid = parse_numbers(col)
    # log-square compression of large counts: floor(ln(v)^2) for v > 2, the value itself otherwise
    with np.errstate(divide="ignore", invalid="ignore"):
        squashed = np.floor(np.log(np.maximum(values, 2.0)) ** 2)
    transformed = np.where(values > 2, squashed, np.floor(values))
    transformed = np.clip(transformed, -_NUMERIC_LIMIT, _NUMERIC_LIMIT).astype(np.int64)
    tokens = pc.cast(pa.array(transformed), pa.string())
    tokens = pc.if_else(pa.array(missing), MISSING, tokens)
    return tokens, invalid


def parse_labels(col: pa.Array, threshold: float | None) -> tuple[np.ndarray, np.ndarray]:
    """Labels as (int8 0/1, is_invalid).

    Without a threshold the value must be the number 0 or 1 ("0", "1", "1.0"); with one, any
    finite number is accepted and the label is value >= threshold (ratings).
    """
    encoded = pc.dictionary_encode(col)
    indices = encoded.indices.to_numpy(zero_copy_only=False)
    y, invalid = _labels_distinct(encoded.dictionary, threshold)
    return y[indices], invalid[indices]


def _labels_distinct(col: pa.Array, threshold: float | None) -> tuple[np.ndarray, np.ndarray]:
    values, missing, invalid = parse_numbers(col)
    invalid = invalid | missing
    if threshold is None:
        invalid = invalid | ~((values == 0) | (values == 1))
        y = values == 1
    else:
        y = values >= threshold
    return np.where(invalid, 0, y).astype(np.int8), invalid


def assign_splits(seed: int, start: int, n: int) -> np.ndarray:
    """Split of rows start..start+n-1 (uint8: 0 train, 1 valid, 2 test), a pure function of (seed, row).

    Each row index is hashed with splitmix64 keyed by the seed; hash % 10 gives 80/10/10 in
    expectation. Being a function of the row index, both passes over the file agree.
    """
    with np.errstate(over="ignore"):
        z = np.arange(start, start + n, dtype=np.uint64) + np.uint64(seed & 0xFFFFFFFFFFFFFFFF) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    bucket = (z % np.uint64(10)).astype(np.uint8)
    return np.where(bucket < 8, TRAIN, np.where(bucket == 8, VALID, TEST)).astype(np.uint8)
