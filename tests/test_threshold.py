import pytest
import torch

from ihas.threshold import count_histograms, deterministic_mask, histogram_thresholds

BINS = 10


def probs_from_counts(counts: list[int], bins: int = BINS) -> torch.Tensor:
    """Return one sample's probabilities: count[i] values at the centre of bin i."""
    values = [(i + 0.5) / bins for i, c in enumerate(counts) for _ in range(c)]
    return torch.tensor(values, dtype=torch.float32)


def thresholds_of(*count_rows: list[int]) -> tuple[list[float], list[bool]]:
    probs = torch.stack([probs_from_counts(row) for row in count_rows])
    threshold, fallback = histogram_thresholds(probs, BINS)
    return threshold.tolist(), fallback.tolist()


def naive_threshold(counts: list[int]) -> tuple[float, bool]:
    """The searcher's definition, written as a plain loop over one histogram."""
    bins = len(counts)
    peak = None
    for i in range(bins):
        following = counts[i + 1] if i + 1 < bins else 0
        if counts[i] > 0 and counts[i] >= following:
            peak = i
            break
    assert peak is not None
    for v in range(max(peak + 1, 1), bins - 1):
        if counts[v] <= counts[v - 1] and counts[v] <= counts[v + 1] and max(counts[v + 1:]) > counts[v]:
            return v / bins, False
    return 0.5, True


def test_count_histograms_edges():
    probs = torch.tensor([[0.0, 0.05, 0.1, 0.55, 0.99, 1.0]])
    # 0.0 and 0.05 -> bin 0; 0.1 -> bin 1; 0.55 -> bin 5; 0.99 and 1.0 -> bin 9 (p == 1 in the last bin).
    expected = torch.tensor([[2, 1, 0, 0, 0, 1, 0, 0, 0, 2]], dtype=torch.int32)
    assert torch.equal(count_histograms(probs, BINS), expected)


def test_bimodal_threshold_exact():
    # Peak at bin 0 (count 8 >= 3), valley at bin 3 (0 <= 1 and 0 <= 2, later bins reach 5).
    threshold, fallback = thresholds_of([8, 3, 1, 0, 2, 5, 1, 0, 0, 0])
    assert threshold == pytest.approx([0.3])
    assert fallback == [False]


def test_bimodal_keeps_dims_above_valley():
    row = probs_from_counts([8, 3, 1, 0, 2, 5, 1, 0, 0, 0])
    mask, num_fallback = deterministic_mask(row[None, :], BINS)
    assert num_fallback == 0
    # Kept: every p > 0.3, i.e. the 2 + 5 + 1 = 8 values in bins 4, 5 and 6.
    assert int(mask.sum()) == 8
    assert torch.equal(mask[0], (row > 0.3).float())


def test_mask_drops_a_probability_equal_to_the_threshold():
    # Only p > threshold is kept. Counts 8, 4, 3, 2, 3, 5, 1: the peak is bin 0 and the valley bin 3
    # (2 <= 3, 2 <= 3, and bin 5 has more later), so the threshold is 0.3. Bin 3 has 0.3 itself,
    # which is dropped, and the next float above it, which is kept.
    edge = torch.tensor(0.3)
    above = torch.nextafter(edge, torch.tensor(1.0))
    row = torch.cat([probs_from_counts([8, 4, 3, 0, 3, 5, 1, 0, 0, 0]), torch.stack([edge, above])])
    mask, num_fallback = deterministic_mask(row[None, :], BINS)
    assert num_fallback == 0
    assert mask[0, -2:].tolist() == [0.0, 1.0]
    assert int(mask.sum()) == 3 + 5 + 1 + 1
    # One mode in bin 5 and no valley: the 0.5 fallback, under the same strict comparison.
    half = torch.tensor(0.5)
    row = torch.stack([half, torch.nextafter(half, torch.tensor(1.0)), torch.tensor(0.55)])
    mask, num_fallback = deterministic_mask(row[None, :], BINS)
    assert num_fallback == 1
    assert mask[0].tolist() == [0.0, 1.0, 1.0]


def test_peak_not_in_first_bin():
    # Bin 0 is empty and bin 1 rises (2 < 6), so the first peak is bin 2 (6 >= 2). Bin 3 is no
    # valley (2 > count[4] = 1); bin 4 is (1 <= 2, 1 <= 4, and bin 5 rises above it).
    threshold, fallback = thresholds_of([0, 2, 6, 2, 1, 4, 0, 0, 0, 0])
    assert threshold == pytest.approx([0.4])
    assert fallback == [False]


def test_unimodal_falls_back():
    # One mode and an empty tail: bins 2..9 are minima of the counts, but nothing rises after them.
    threshold, fallback = thresholds_of([10, 4, 0, 0, 0, 0, 0, 0, 0, 0])
    assert threshold == pytest.approx([0.5])
    assert fallback == [True]


def test_monotone_increasing_falls_back():
    # The first peak is the last bin, so no interior bin lies after it.
    threshold, fallback = thresholds_of([1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
    assert threshold == pytest.approx([0.5])
    assert fallback == [True]


def test_monotone_decreasing_falls_back():
    threshold, fallback = thresholds_of([10, 9, 8, 7, 6, 5, 4, 3, 2, 1])
    assert threshold == pytest.approx([0.5])
    assert fallback == [True]


def test_all_mass_in_one_bin():
    threshold, fallback = thresholds_of([0, 0, 0, 0, 0, 0, 0, 12, 0, 0],
                                        [12, 0, 0, 0, 0, 0, 0, 0, 0, 0])
    assert threshold == pytest.approx([0.5, 0.5])
    assert fallback == [True, True]


def test_flat_valley_takes_first_bin():
    # A plateau of zeros in bins 2..5: the first of them (bin 2) is the valley.
    threshold, fallback = thresholds_of([9, 1, 0, 0, 0, 0, 3, 0, 0, 0])
    assert threshold == pytest.approx([0.2])
    assert fallback == [False]


def test_plateau_peak_then_valley():
    # Equal counts in bins 0 and 1: bin 0 is the first peak (4 >= 4); bin 1 is no valley because
    # 4 > count[2] = 2. Bin 2 is the valley: 2 <= 4, 2 <= 3, and bin 3 rises above it.
    threshold, fallback = thresholds_of([4, 4, 2, 3, 0, 0, 0, 0, 0, 0])
    assert threshold == pytest.approx([0.2])
    assert fallback == [False]


def test_rows_independent_in_batch():
    # Every row has 20 probabilities.
    threshold, fallback = thresholds_of([8, 3, 1, 0, 2, 5, 1, 0, 0, 0],
                                        [16, 4, 0, 0, 0, 0, 0, 0, 0, 0],
                                        [16, 1, 0, 0, 0, 0, 3, 0, 0, 0])
    assert threshold == pytest.approx([0.3, 0.5, 0.2])
    assert fallback == [False, True, False]


def test_vectorized_matches_naive_loop():
    generator = torch.Generator().manual_seed(0)
    # Mixtures near 0 and near 1 give bimodal rows, uniform rows irregular histograms, and values
    # skewed towards 0 or confined to [0, 0.25) often a single mode.
    low = torch.rand(300, 40, generator=generator) * 0.3
    high = 0.6 + torch.rand(300, 40, generator=generator) * 0.4
    choose = torch.rand(300, 40, generator=generator) < 0.3
    uniform = torch.rand(300, 40, generator=generator)
    skewed = torch.rand(300, 40, generator=generator) ** 4
    narrow = torch.rand(300, 40, generator=generator) * 0.25
    probs = torch.cat([torch.where(choose, high, low), uniform, skewed, narrow])
    for bins in (5, 10, 20):
        threshold, fallback = histogram_thresholds(probs, bins)
        counts = count_histograms(probs, bins)
        for i in range(probs.shape[0]):
            expected_threshold, expected_fallback = naive_threshold(counts[i].tolist())
            assert float(threshold[i]) == pytest.approx(expected_threshold), (bins, i)
            assert bool(fallback[i]) == expected_fallback, (bins, i)
        # The data must exercise both outcomes for the comparison to mean anything.
        assert 0 < int(fallback.sum()) < probs.shape[0]


def test_naive_counts_match_floor_rule():
    generator = torch.Generator().manual_seed(1)
    probs = torch.rand(5, 30, generator=generator)
    counts = count_histograms(probs, 7)
    for i in range(5):
        expected = [0] * 7
        for p in probs[i].tolist():
            expected[min(int(p * 7), 6)] += 1
        assert counts[i].tolist() == expected


def test_rejects_out_of_range_probs():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        histogram_thresholds(torch.tensor([[0.2, 1.5, 0.1]]), BINS)
    with pytest.raises(ValueError, match="NaN"):
        histogram_thresholds(torch.tensor([[0.2, float("nan"), 0.1]]), BINS)


def test_rejects_too_few_bins():
    with pytest.raises(ValueError, match="bins must be >= 3"):
        histogram_thresholds(torch.rand(2, 4), 2)
