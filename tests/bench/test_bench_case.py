"""BenchCase: the workload on the device once, host copies for references, rotating batches."""

from __future__ import annotations

import numpy as np
import pytest

from dlrmlab import hotness
from dlrmlab.bench.case import BenchCase, DeviceJagged, DeviceTableBatch
from dlrmlab.errors import DlrmlabError
from dlrmlab.reference import embedding_bag
from dlrmlab.workload import preset, table_as_float32


@pytest.fixture(scope="module")
def case():
    return BenchCase.create("tiny", "zipf:1.1", seed=3, n_batches=3)


def test_fields_and_device_copies(case):
    st = preset("tiny")
    assert case.stage == st and case.dataset == "zipf:1.1" and case.seed == 3
    assert (case.mode, case.weighted, case.n_batches, case.dim) == ("sum", False, 3, st.embedding_dim)
    assert case.stream is not None
    assert len(case.host_tables) == len(case.dev_tables) == st.num_tables
    for host, dev, rows in zip(case.host_tables, case.dev_tables, st.embedding_sizes, strict=True):
        assert host.shape == (rows, st.embedding_dim)
        flat = dev.copy_to_host()
        assert flat.ndim == 1 and flat.size == rows * st.embedding_dim
        np.testing.assert_array_equal(flat, host.reshape(-1))
    for hb, db in zip(case.host_batches, case.dev_batches, strict=True):
        assert len(db.tables) == st.num_tables
        for htb, dtb in zip(hb.tables, db.tables, strict=True):
            assert isinstance(dtb, DeviceTableBatch)
            idx, off, psw = dtb  # unpacks as a triple
            np.testing.assert_array_equal(idx.copy_to_host(), htb.indices)
            np.testing.assert_array_equal(off.copy_to_host(), htb.offsets)
            assert psw.copy_to_host().shape == (1,)  # the dummy: unweighted
        j = hb.jagged()
        assert isinstance(db.jagged, DeviceJagged)
        np.testing.assert_array_equal(db.jagged.indices.copy_to_host(), j.indices)
        np.testing.assert_array_equal(db.jagged.offsets.copy_to_host(), j.offsets)
        np.testing.assert_array_equal(db.jagged.table_offsets.copy_to_host(), j.table_offsets)


def test_batches_rotate_distinct_inputs(case):
    a, b = case.ids(0), case.ids(1)
    assert a.size == b.size and not np.array_equal(a, b)


def test_reference_matches_direct_computation_and_is_cached(case):
    ref = case.reference(1)
    tb = case.host_batches[1].tables[2]
    direct = embedding_bag(tb.indices, case.host_tables[2], tb.offsets, mode="sum", include_last_offset=True)
    np.testing.assert_array_equal(ref[2], direct)
    assert case.reference(1) is ref
    assert [r.shape for r in ref] == [(8, 32)] * 3


def test_describe_is_csv_friendly(case):
    d = case.describe()
    assert d["rows"] == "1000,700,1500"  # unequal tables: one string, not a list
    assert {"dataset", "preset", "tables", "dim", "dtype", "batch", "pooling", "seed", "mode", "weighted"} <= set(d)


def test_bf16_weighted_reference_uses_float32_values():
    st = preset("tiny", dtype="bfloat16")
    c = BenchCase.create(st, "random", n_batches=1, weighted=True)
    assert c.host_tables[0].dtype == np.uint16 and c.tolerance() == 1e-2
    tb = c.host_batches[0].tables[0]
    w = table_as_float32(c.host_tables[0], "bfloat16")
    want = embedding_bag(tb.indices, w, tb.offsets, "sum", tb.per_sample_weights, include_last_offset=True)
    np.testing.assert_allclose(c.reference(0)[0], want)
    np.testing.assert_array_equal(c.dev_batches[0].tables[0].psw.copy_to_host(), tb.per_sample_weights)
    jagged_psw = c.host_batches[0].jagged().per_sample_weights
    np.testing.assert_array_equal(c.dev_batches[0].jagged.psw.copy_to_host(), jagged_psw)


def test_tables_from_shares_tables(case):
    other = BenchCase.create("tiny", "random", seed=3, n_batches=1, tables_from=case)
    assert other.dev_tables is case.dev_tables and other.host_tables is case.host_tables
    with pytest.raises(DlrmlabError, match="same stage and seed"):
        BenchCase.create("tiny", "random", seed=4, n_batches=1, tables_from=case)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n_batches": 0}, "n_batches"),
        ({"mode": "median"}, "mode"),
        ({"mode": "max"}, "mode must be one of sum, mean"),  # the kernels' modes only
        ({"mode": "mean", "weighted": True}, "per_sample_weights"),
        ({"dataset": "nope"}, "unknown dataset"),
        ({"stage": "huge"}, "unknown preset"),
    ],
)
def test_bad_input(kwargs, match):
    args = {"stage": "tiny", "dataset": "random", **kwargs}
    with pytest.raises(DlrmlabError, match=match):
        BenchCase.create(**args)


def test_bad_batch_index(case):
    with pytest.raises(DlrmlabError, match="out of range"):
        case.reference(3)


def test_table_ids_span_every_batch(case):
    for t in range(case.num_tables):
        ids = case.table_ids(t)
        assert ids.dtype == np.int64
        want = np.concatenate([b.tables[t].indices for b in case.host_batches])
        np.testing.assert_array_equal(ids, want)


def test_rankings_are_frequency_rankings_of_the_case_and_cached(case):
    ranks = case.rankings()
    assert case.rankings() is ranks
    assert len(ranks) == case.num_tables
    for t, (r, rows) in enumerate(zip(ranks, case.stage.embedding_sizes, strict=True)):
        want = hotness.frequency_ranking(case.table_ids(t), rows)
        np.testing.assert_array_equal(r.order, want.order)
        np.testing.assert_array_equal(r.remap, want.remap)
        counts = np.bincount(case.table_ids(t), minlength=rows)
        np.testing.assert_array_equal(r.ranked_counts, counts[r.order])
        assert (np.diff(r.ranked_counts) <= 0).all()  # hottest first


def test_derived_builds_once_per_key(case):
    calls = []

    def make():
        calls.append(1)
        return object()

    a = case.derived("_test-key", make)
    assert case.derived("_test-key", make) is a and len(calls) == 1
    b = case.derived("_test-other", make)
    assert b is not a and len(calls) == 2


def test_tolerance_grows_with_the_longest_bag():
    """fp32 sums of long bags carry more rounding (every kernel adds a bag's rows in fp32 one by one)."""
    short = BenchCase.create(preset("tiny"), "random", n_batches=1)
    assert short.tolerance() == 1e-5
    long = BenchCase.create(preset("tiny", pooling=4096), "random", n_batches=1)
    assert long.tolerance() == pytest.approx(4096 * 2.0**-24)
