"""Value transforms, split and vocabulary against their definitions (METHOD.md section 1)."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from ihas.data.encode import assign_splits, numeric_tokens, parse_labels
from ihas.data.vocab import ValueCounter


def reference_numeric(text: str) -> str:
    """Per-value reference: empty -> missing; v > 2 -> floor(ln(v)^2); else the integer itself."""
    if text == "":
        return ""
    v = float(text)
    return str(math.floor(math.log(v) ** 2)) if v > 2 else str(math.floor(v))


def test_numeric_transform_matches_the_definition_value_by_value():
    values = ["", "0", "1", "2", "3", "-1", "-7", "260", "260.0", "17668.0", "1e3", "5", "2.5", "-0.0",
              "123456789012", "99999999999999999999999", "-12345678901234", "0.5"]
    tokens, invalid = numeric_tokens(pa.array(values))
    assert not invalid.any()
    assert tokens.to_pylist() == [reference_numeric(v) for v in values]


def test_float_written_integers_equal_plain_integers():
    tokens, _ = numeric_tokens(pa.array(["260.0", "260", "1.0", "1", "-1.0", "-1"]))
    t = tokens.to_pylist()
    assert t[0] == t[1]
    assert t[2] == t[3] == "1"
    assert t[4] == t[5] == "-1"


def test_non_numeric_values_are_flagged_not_parsed():
    values = ["12", "abc", "", "inf", "nan", "1e400", "0x10", "3"]
    _, invalid = numeric_tokens(pa.array(values))
    assert invalid.tolist() == [False, True, False, True, True, True, True, False]


@pytest.mark.parametrize("threshold", [None, 4.0])
def test_labels(threshold):
    values = ["0", "1", "1.0", "2", "x", "", "4", "5", "3.5"]
    y, invalid = parse_labels(pa.array(values), threshold)
    if threshold is None:
        assert invalid.tolist() == [False, False, False, True, True, True, True, True, True]
        assert y[~invalid].tolist() == [0, 1, 1]
    else:
        assert invalid.tolist() == [False, False, False, False, True, True, False, False, False]
        assert y[~invalid].tolist() == [0, 0, 0, 0, 1, 1, 0]


def test_split_is_a_function_of_seed_and_row_index():
    whole = assign_splits(7, 0, 10_000)
    pieces = np.concatenate([assign_splits(7, start, 1000) for start in range(0, 10_000, 1000)])
    assert np.array_equal(whole, pieces)
    assert not np.array_equal(whole, assign_splits(8, 0, 10_000))
    share = np.bincount(whole, minlength=3) / len(whole)
    assert abs(share[0] - 0.8) < 0.02
    assert abs(share[1] - 0.1) < 0.015
    assert abs(share[2] - 0.1) < 0.015


def test_vocabulary_keeps_count_at_least_min_count_and_orders_ids():
    counter = ValueCounter()
    counter.update(pa.array(["a"] * 3 + ["b"] * 2 + ["c"] * 3 + [""] * 2))
    counter.update(pa.array(["b", "d"]))
    vocab = counter.vocabulary(min_count=3)
    # counts: a 3, b 3, c 3, "" 2, d 1 -> kept a, b, c (>= 3), ties by value; id 0 for the rest
    assert vocab.values.to_pylist() == ["a", "b", "c"]
    assert vocab.field_dim == 4
    assert vocab.encode(pa.array(["c", "a", "", "d", "zzz", "b"])).tolist() == [3, 1, 0, 0, 0, 2]
    assert counter.vocabulary(min_count=2).encode(pa.array([""])).tolist() == [4]  # missing is a value too
