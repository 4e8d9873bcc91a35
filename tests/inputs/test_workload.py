"""Stage shapes, pooling, batches in CSR / jagged form, and table dtypes."""

from __future__ import annotations

import numpy as np
import pytest

from dlrmlab.errors import DlrmlabError
from dlrmlab.workload import (
    PRESETS,
    EmbeddingStage,
    JaggedBatch,
    Pooling,
    TableBatch,
    Workload,
    cast_table,
    preset,
    table_as_float32,
)

# --- presets ---------------------------------------------------------------------------------------------


def test_paper_preset():
    s = preset("paper")
    assert s.embedding_sizes == (500_000,) * 12
    assert s.num_tables == 12
    assert s.embedding_dim == 128
    assert s.batch_size == 2048
    assert s.pooling == Pooling("fixed", 150)
    assert (s.dtype, s.index_dtype) == ("float32", "int64")
    assert s.table_bytes() == 12 * 500_000 * 128 * 4
    assert s.lookups_per_batch() == 12 * 2048 * 150
    assert s.describe() == {
        "preset": "paper",
        "tables": 12,
        "rows": 500_000,
        "dim": 128,
        "dtype": "float32",
        "index_dtype": "int64",
        "batch": 2048,
        "pooling": "150",
    }


def test_tiny_preset():
    s = preset("tiny")
    assert s.embedding_sizes == (1000, 700, 1500)
    assert s.embedding_dim == 32
    assert s.batch_size == 8
    assert str(s.pooling) == "5"
    assert s.describe()["rows"] == [1000, 700, 1500]
    assert set(PRESETS) == {"paper", "tiny"}


def test_preset_overrides():
    assert preset("paper", batch_size=4096).batch_size == 4096
    s = preset("tiny", rows=10, tables=2)
    assert s.embedding_sizes == (10, 10)
    assert preset("paper", tables=3).embedding_sizes == (500_000,) * 3
    assert preset("paper", dtype="bfloat16").element_bytes == 2
    assert preset("paper") is PRESETS["paper"]  # no overrides: the preset itself, unchanged


@pytest.mark.parametrize("kw", [{"rows": 0}, {"tables": 0}])
def test_preset_rejects_zero_rows_or_tables(kw):
    with pytest.raises(DlrmlabError, match="positive"):
        preset("tiny", **kw)


def test_unknown_preset():
    with pytest.raises(DlrmlabError, match="unknown preset 'huge'; valid: paper, tiny"):
        preset("huge")


# --- pooling ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "kind", "a", "b", "mean", "mx", "text"),
    [
        ("150", "fixed", 150, 0, 150.0, 150, "150"),
        (150, "fixed", 150, 0, 150.0, 150, "150"),
        (" 7 ", "fixed", 7, 0, 7.0, 7, "7"),
        ("uniform:0-10", "uniform", 0, 10, 5.0, 10, "uniform:0-10"),
        ("uniform:3-3", "uniform", 3, 3, 3.0, 3, "uniform:3-3"),
        ("poisson:3", "poisson", 3.0, 0, 3.0, None, "poisson:3"),
        ("poisson:2.5", "poisson", 2.5, 0, 2.5, None, "poisson:2.5"),
    ],
)
def test_pooling_parse(spec, kind, a, b, mean, mx, text):
    p = Pooling.parse(spec)
    assert (p.kind, p.a, p.b) == (kind, a, b)
    assert p.mean == mean
    assert p.max == mx
    assert str(p) == text
    assert Pooling.parse(p) is p
    assert Pooling.parse(str(p)) == p


BAD_POOLINGS = "0 -1 abc 1.5 uniform:5-2 uniform:0-0 uniform:x-3 uniform:1 poisson:0 poisson:-2 poisson:abc poisson:nan"


@pytest.mark.parametrize("spec", ["", *BAD_POOLINGS.split()])
def test_pooling_parse_errors(spec):
    with pytest.raises(DlrmlabError, match="pooling"):
        Pooling.parse(spec)


def test_pooling_parse_keeps_the_precise_message():
    with pytest.raises(DlrmlabError, match="positive"):
        Pooling.parse("0")


@pytest.mark.parametrize("spec", ["poisson:inf", "poisson:1e30"])
def test_pooling_rejects_unusable_poisson_mean(spec):
    with pytest.raises(DlrmlabError, match="pooling"):
        Pooling.parse(spec)


def test_pooling_direct_errors():
    with pytest.raises(DlrmlabError, match="unknown pooling kind"):
        Pooling("normal", 3)
    with pytest.raises(DlrmlabError):
        Pooling("fixed", 2.5)


def test_pooling_samples():
    rng = np.random.default_rng(0)
    np.testing.assert_array_equal(Pooling.parse("4").sample(rng, 5), [4] * 5)
    u = Pooling.parse("uniform:2-5").sample(rng, 2000)
    assert u.min() == 2 and u.max() == 5
    p = Pooling.parse("poisson:3").sample(rng, 20_000)
    assert p.min() >= 0 and abs(p.mean() - 3) < 0.1


# --- the stage's shape -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"embedding_sizes": (0,)}, "rows must be positive"),
        ({"embedding_sizes": (10, -1)}, "rows must be positive"),
        ({"embedding_sizes": ()}, "at least one table"),
        ({"sparse_feature_size": 0}, "embedding dim must be positive"),
        ({"sparse_feature_size": -4}, "embedding dim must be positive"),
        ({"batch_size": 0}, "batch size must be positive"),
        ({"batch_size": -1}, "batch size must be positive"),
        ({"dtype": "float64"}, "unknown table dtype 'float64'"),
        ({"dtype": "fp16"}, "unknown table dtype"),
        ({"index_dtype": "int16"}, "unknown index dtype"),
        ({"index_dtype": "int32", "embedding_sizes": (2**31,)}, "int32 ids"),
        ({"pooling": "0"}, "pooling"),
    ],
)
def test_stage_errors(kwargs, match):
    args = {"embedding_sizes": (10, 20), "sparse_feature_size": 4, "batch_size": 2, **kwargs}
    with pytest.raises(DlrmlabError, match=match):
        EmbeddingStage(**args)


def test_stage_accepts_int32_at_the_limit_and_normalises_fields():
    s = EmbeddingStage([2**31 - 1], 4, 2, "uniform:1-3", index_dtype="int32")
    assert s.embedding_sizes == (2**31 - 1,)
    assert s.pooling == Pooling("uniform", 1, 3)


# --- batches ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("index_dtype", ["int32", "int64"])
@pytest.mark.parametrize("pooling", ["5", "uniform:0-6", "poisson:3"])
def test_batch_csr_form(index_dtype, pooling):
    stage = preset("tiny", index_dtype=index_dtype, pooling=pooling, batch_size=16)
    batch = Workload(stage, "random", seed=1).batch()
    assert len(batch.tables) == stage.num_tables
    for rows, t in zip(stage.embedding_sizes, batch.tables, strict=True):
        assert t.num_bags == stage.batch_size
        assert t.offsets.shape == (stage.batch_size + 1,)
        assert t.offsets[0] == 0 and t.offsets[-1] == t.indices.size
        assert (np.diff(t.offsets) >= 0).all()
        assert t.indices.dtype == np.dtype(index_dtype)
        assert t.offsets.dtype == np.dtype(index_dtype)
        assert t.indices.size == 0 or (t.indices.min() >= 0 and t.indices.max() < rows)
        assert t.per_sample_weights is None
    if pooling == "5":
        assert all(t.indices.size == 16 * 5 for t in batch.tables)
    assert batch.all_ids().dtype == np.int64


def test_weighted_batch_has_per_sample_weights_and_same_ids():
    plain = Workload("tiny", "medium", seed=3).batch()
    weighted = Workload("tiny", "medium", seed=3, weighted=True).batch()
    for p, w in zip(plain.tables, weighted.tables, strict=True):
        np.testing.assert_array_equal(w.indices, p.indices)
        np.testing.assert_array_equal(w.offsets, p.offsets)
        assert w.per_sample_weights.dtype == np.float32
        assert w.per_sample_weights.shape == w.indices.shape
        assert (w.per_sample_weights >= 0).all() and (w.per_sample_weights < 1).all()


def test_variable_pooling_yields_empty_bags():
    stage = preset("tiny", pooling="uniform:0-6", batch_size=64)
    batch = Workload(stage, "random", seed=0).batch()
    lengths = np.concatenate([np.diff(t.offsets) for t in batch.tables])
    assert (lengths == 0).any()
    assert lengths.min() == 0 and lengths.max() <= 6
    assert (lengths == 6).any()


@pytest.mark.parametrize("index_dtype", ["int32", "int64"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("pooling", ["5", "uniform:0-6"])
def test_jagged_round_trip(index_dtype, weighted, pooling):
    stage = preset("tiny", index_dtype=index_dtype, pooling=pooling, batch_size=32)
    batch = Workload(stage, "low", seed=2, weighted=weighted).batch()
    j = batch.jagged()
    T, B = stage.num_tables, stage.batch_size
    assert j.num_tables == T
    assert j.offsets.shape == (T * B + 1,)
    assert j.offsets[0] == 0 and j.offsets[-1] == j.indices.size
    np.testing.assert_array_equal(j.table_offsets, np.arange(T + 1) * B)
    np.testing.assert_array_equal(j.lengths, np.concatenate([np.diff(t.offsets) for t in batch.tables]))
    assert j.indices.dtype == np.dtype(index_dtype)
    np.testing.assert_array_equal(j.indices, batch.all_ids())
    for t, orig in enumerate(batch.tables):
        back = j.table(t)
        assert back.indices.dtype == orig.indices.dtype
        np.testing.assert_array_equal(back.indices, orig.indices)
        np.testing.assert_array_equal(back.offsets, orig.offsets)
        if weighted:
            np.testing.assert_array_equal(back.per_sample_weights, orig.per_sample_weights)
        else:
            assert back.per_sample_weights is None
    # and back again
    again = JaggedBatch.from_tables([j.table(t) for t in range(T)])
    np.testing.assert_array_equal(again.indices, j.indices)
    np.testing.assert_array_equal(again.offsets, j.offsets)
    np.testing.assert_array_equal(again.table_offsets, j.table_offsets)


def test_jagged_from_hand_made_tables():
    a = TableBatch(np.array([1, 2, 3]), np.array([0, 0, 3]))
    b = TableBatch(np.array([4]), np.array([0, 1]))
    j = JaggedBatch.from_tables([a, b])
    np.testing.assert_array_equal(j.indices, [1, 2, 3, 4])
    np.testing.assert_array_equal(j.offsets, [0, 0, 3, 4])
    np.testing.assert_array_equal(j.table_offsets, [0, 2, 3])
    np.testing.assert_array_equal(j.table(1).offsets, [0, 1])


def test_jagged_rejects_mixed_weights():
    a = TableBatch(np.array([1]), np.array([0, 1]), np.ones(1, np.float32))
    b = TableBatch(np.array([2]), np.array([0, 1]))
    with pytest.raises(DlrmlabError, match="per_sample_weights"):
        JaggedBatch.from_tables([a, b])


def _batches_equal(x, y) -> bool:
    return all(
        np.array_equal(a.indices, b.indices) and np.array_equal(a.offsets, b.offsets)
        for a, b in zip(x.tables, y.tables, strict=True)
    )


@pytest.mark.parametrize("dataset", ["random", "low", "zipf:1.2"])
def test_batches_deterministic_per_seed(dataset):
    stage = preset("tiny", pooling="poisson:4")
    a = list(Workload(stage, dataset, seed=5, weighted=True).batches(3))
    b = list(Workload(stage, dataset, seed=5, weighted=True).batches(3))
    c = list(Workload(stage, dataset, seed=6, weighted=True).batches(3))
    assert len(a) == 3
    for x, y in zip(a, b, strict=True):
        assert _batches_equal(x, y)
        for p, q in zip(x.tables, y.tables, strict=True):
            np.testing.assert_array_equal(p.per_sample_weights, q.per_sample_weights)
    assert not _batches_equal(a[0], c[0])
    assert not _batches_equal(a[0], a[1])  # consecutive batches differ


def test_reset_replays_batches():
    wl = Workload("tiny", "medium", seed=7)
    first = wl.batch()
    wl.batch()
    wl.reset()
    assert _batches_equal(wl.batch(), first)


def test_ids_is_one_batch_and_leaves_the_stream_reset():
    stage = preset("tiny", rows=500)
    wl = Workload(stage, "high", seed=8)
    ids = wl.ids()
    assert ids.size == stage.lookups_per_batch()
    np.testing.assert_array_equal(ids, wl.batch().all_ids())
    wl.reset()
    np.testing.assert_array_equal(wl.ids(37), ids[:37])
    with pytest.raises(DlrmlabError, match="must be positive"):
        wl.ids(0)


def test_workload_accepts_a_stream_object():
    from dlrmlab.datasets import make_stream

    wl = Workload("tiny", make_stream("zipf:1.3", seed=4), seed=4)
    assert wl.dataset == "zipf:1.3"
    assert _batches_equal(wl.batch(), Workload("tiny", "zipf:1.3", seed=4).batch())


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_make_tables(dtype):
    wl = Workload(preset("tiny", dtype=dtype), seed=1)
    tables = wl.make_tables()
    assert [t.shape for t in tables] == [(r, 32) for r in (1000, 700, 1500)]
    want = {"float32": np.float32, "float16": np.float16, "bfloat16": np.uint16}[dtype]
    assert all(t.dtype == want for t in tables)
    np.testing.assert_array_equal(wl.make_tables()[0], tables[0])
    assert not np.array_equal(wl.make_tables(seed=2)[0], tables[0])


# --- table dtypes ----------------------------------------------------------------------------------------


def _normal(n=10_000, seed=0):
    x = np.random.default_rng(seed).standard_normal(n).astype(np.float32)
    return x * np.float32(100)


def test_cast_float32_is_identity():
    x = _normal()
    np.testing.assert_array_equal(table_as_float32(cast_table(x, "float32"), "float32"), x)
    assert cast_table(x, "float32").dtype == np.float32


@pytest.mark.parametrize(("dtype", "storage", "rel"), [("float16", np.float16, 2**-11), ("bfloat16", np.uint16, 2**-8)])
def test_cast_round_trip_within_precision(dtype, storage, rel):
    x = _normal()
    c = cast_table(x, dtype)
    assert c.dtype == storage and c.shape == x.shape
    back = table_as_float32(c, dtype)
    assert back.dtype == np.float32
    # round to nearest: error at most half an ulp, i.e. 2**-(mantissa bits + 1) relative
    np.testing.assert_allclose(back, x, rtol=rel, atol=0)
    assert not np.array_equal(back, x)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_cast_2d_keeps_shape(dtype):
    x = _normal(64).reshape(8, 8)
    assert table_as_float32(cast_table(x, dtype), dtype).shape == (8, 8)


def test_bfloat16_exact_for_representable_values():
    rng = np.random.default_rng(1)
    bits = rng.integers(0, 2**16, size=20_000, dtype=np.uint32)
    exp = (bits >> 7) & 0xFF
    bits = bits[exp != 0xFF]  # finite values only
    x = (bits << 16).astype(np.uint32).view(np.float32)
    np.testing.assert_array_equal(cast_table(x, "bfloat16"), bits.astype(np.uint16))
    np.testing.assert_array_equal(table_as_float32(cast_table(x, "bfloat16"), "bfloat16"), x)


def test_bfloat16_rounds_to_nearest_even():
    x = np.array([1.0, 1 + 2**-8, 1 + 3 * 2**-8, 1 + 2**-8 + 2**-20, -2.0, 3.0e38], np.float32)
    np.testing.assert_array_equal(cast_table(x, "bfloat16"), [0x3F80, 0x3F80, 0x3F82, 0x3F81, 0xC000, 0x7F62])


def test_bfloat16_infinities():
    x = np.array([np.inf, -np.inf, 3.4e38], np.float32)
    np.testing.assert_array_equal(table_as_float32(cast_table(x, "bfloat16"), "bfloat16"), [np.inf, -np.inf, np.inf])


def test_bfloat16_keeps_nan():
    x = np.array([0x7FC00000, 0x7FFFFFFF, 0x7F800001, 0xFFFFFFFF], np.uint32).view(np.float32)
    assert np.isnan(table_as_float32(cast_table(x, "bfloat16"), "bfloat16")).all()


def test_float16_exact_for_representable_values():
    x = np.random.default_rng(2).standard_normal(1000).astype(np.float16).astype(np.float32)
    np.testing.assert_array_equal(table_as_float32(cast_table(x, "float16"), "float16"), x)


def test_cast_unknown_dtype():
    with pytest.raises(DlrmlabError, match="unknown table dtype"):
        cast_table(np.zeros(3, np.float32), "int2")
