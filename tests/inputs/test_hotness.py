"""Hotness statistics: counts, coverage, frequency ranking, hot sets and hot-row files."""

from __future__ import annotations

import numpy as np
import pytest

from dlrmlab import hotness
from dlrmlab.datasets import make_stream
from dlrmlab.errors import DlrmlabError

# Row 3 three times, row 1 twice, row 0 once; rows 2 and 4 never.
IDS = np.array([3, 1, 3, 0, 3, 1])


def test_counts():
    np.testing.assert_array_equal(hotness.counts(IDS), [1, 2, 0, 3])
    np.testing.assert_array_equal(hotness.counts(IDS, rows=6), [1, 2, 0, 3, 0, 0])
    np.testing.assert_array_equal(hotness.counts(IDS.astype(np.int32), rows=4), [1, 2, 0, 3])
    assert hotness.counts(np.zeros(0, np.int64)).size == 0
    np.testing.assert_array_equal(hotness.counts(np.zeros(0, np.int64), rows=3), [0, 0, 0])


def test_counts_out_of_range():
    with pytest.raises(DlrmlabError, match="out of range for 3 rows"):
        hotness.counts(IDS, rows=3)


def test_distinct():
    assert hotness.distinct(IDS) == 3
    assert hotness.distinct(np.zeros(0, np.int64)) == 0


def test_coverage_curve():
    curve = hotness.coverage_curve(IDS)
    np.testing.assert_allclose(curve, [3 / 6, 5 / 6, 1.0])
    assert hotness.coverage_curve(np.zeros(0, np.int64)).size == 0


@pytest.mark.parametrize("dataset", ["random", "low", "high"])
def test_coverage_curve_monotone_ending_at_one(dataset):
    ids = make_stream(dataset, seed=1).take(20_000, 5000)
    curve = hotness.coverage_curve(ids)
    assert curve.size == hotness.distinct(ids)
    assert (np.diff(curve) >= 0).all()
    assert (np.diff(curve, 2) <= 1e-12).all()  # hottest first: each row adds no more than the one before
    assert curve[-1] == pytest.approx(1.0, abs=1e-12)
    assert curve[0] > 0


def test_top_coverage():
    assert hotness.top_coverage(IDS, [1, 2, 3, 100]) == pytest.approx({1: 0.5, 2: 5 / 6, 3: 1.0, 100: 1.0})
    assert set(hotness.top_coverage(IDS)) == {1000, 5000, 60000}
    assert hotness.top_coverage(np.zeros(0, np.int64), [5]) == {5: 0.0}


@pytest.mark.parametrize("k", [0, -1])
def test_top_coverage_needs_positive_k(k):
    with pytest.raises(DlrmlabError, match="K must be positive"):
        hotness.top_coverage(IDS, [1, k])


def test_frequency_ranking_hand_made():
    r = hotness.frequency_ranking(IDS, rows=5)
    np.testing.assert_array_equal(r.order, [3, 1, 0, 2, 4])  # ties (2, 4: never seen) keep row order
    np.testing.assert_array_equal(r.remap, [2, 1, 3, 0, 4])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_frequency_ranking_property(seed):
    rows = 3000
    ids = make_stream("medium", seed=seed).take(10_000, rows)
    table = np.random.default_rng(seed).standard_normal((rows, 4)).astype(np.float32)
    r = hotness.frequency_ranking(ids, rows)
    np.testing.assert_array_equal(np.sort(r.order), np.arange(rows))
    np.testing.assert_array_equal(r.order[r.remap], np.arange(rows))
    np.testing.assert_array_equal(table[r.order][r.remap[ids]], table[ids])
    c = hotness.counts(ids, rows)[r.order]
    assert (np.diff(c) <= 0).all()  # hottest first
    # remapped ids are as hot as before, and the hottest row becomes row 0
    assert hotness.top_coverage(r.remap[ids], [10]) == hotness.top_coverage(ids, [10])
    assert np.bincount(r.remap[ids]).argmax() == 0


def test_hot_set():
    np.testing.assert_array_equal(hotness.hot_set(IDS, 1), [3])
    np.testing.assert_array_equal(hotness.hot_set(IDS, 2), [3, 1])
    np.testing.assert_array_equal(hotness.hot_set(IDS, 10), [3, 1, 0])  # only rows that were accessed
    np.testing.assert_array_equal(hotness.hot_set(IDS, 5, rows=5), [3, 1, 0])
    assert hotness.hot_set(IDS, 2).dtype == np.int64


def test_hot_set_covers_top_coverage():
    ids = make_stream("low", seed=3).take(30_000, 10_000)
    hot = hotness.hot_set(ids, 500, rows=10_000)
    assert hot.size == 500
    assert np.isin(ids, hot).mean() == pytest.approx(hotness.top_coverage(ids, [500])[500])


@pytest.mark.parametrize("k", [0, -3])
def test_hot_set_needs_positive_k(k):
    with pytest.raises(DlrmlabError, match="must be positive"):
        hotness.hot_set(IDS, k)


def test_hot_set_larger_than_table():
    with pytest.raises(DlrmlabError, match="larger than the table"):
        hotness.hot_set(IDS, 6, rows=5)


def test_hot_rows_round_trip(tmp_path):
    ids = make_stream("high", seed=4).take(5000, 2000)
    hot = hotness.hot_set(ids, 100, rows=2000)
    path = tmp_path / "hot.txt"
    np.savetxt(path, hot, fmt="%d")  # the artifact's format: one id per line
    lines = path.read_text().splitlines()
    assert lines == [str(int(v)) for v in hot]
    back = hotness.read_hot_rows(path, rows=2000)
    np.testing.assert_array_equal(back, hot)
    np.testing.assert_array_equal(hotness.read_hot_rows(str(path)), hot)


def test_read_hot_rows_errors(tmp_path):
    p = tmp_path / "hot.txt"
    p.write_text("3\n7\n")
    with pytest.raises(DlrmlabError, match="out of range for 5 rows"):
        hotness.read_hot_rows(p, rows=5)
    p.write_text("0\n1\n2\n0\n")
    with pytest.raises(DlrmlabError, match="more than the table"):
        hotness.read_hot_rows(p, rows=3)
    p.write_text("0\nx\n")
    with pytest.raises(DlrmlabError, match=":2:"):
        hotness.read_hot_rows(p)
    with pytest.raises(DlrmlabError, match="not found"):
        hotness.read_hot_rows(tmp_path / "missing.txt")


@pytest.mark.parametrize(
    "fn",
    [
        hotness.counts,
        hotness.distinct,
        hotness.coverage_curve,
        hotness.top_coverage,
        hotness.describe,
        lambda ids: hotness.frequency_ranking(ids, 10),
        lambda ids: hotness.hot_set(ids, 2),
    ],
)
def test_negative_ids_rejected(fn):
    with pytest.raises(DlrmlabError, match="non-negative"):
        fn(np.array([1, -2, 3]))


@pytest.mark.parametrize("bad", [np.array([[1, 2]]), np.array([1.0, 2.0]), np.array(3)])
def test_ids_must_be_1d_integers(bad):
    with pytest.raises(DlrmlabError, match="1-D integer"):
        hotness.distinct(bad)


def test_describe():
    d = hotness.describe(IDS, ks=[1, 2])
    assert d == {"ids": 6, "distinct": 3, "max_id": 3, "top_coverage": {"1": 0.5, "2": 0.833333}}
    assert hotness.describe(np.zeros(0, np.int64))["max_id"] is None
