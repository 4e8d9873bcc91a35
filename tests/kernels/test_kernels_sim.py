"""Every kernel variant against the NumPy reference, through the CUDA simulator on tiny shapes."""

from __future__ import annotations

import hypothesis
import numpy as np
import pytest
from helpers import examples
from helpers import rel_err as _rel

from dlrmlab import api, hotness, reference
from dlrmlab.backend import cuda
from dlrmlab.config import Combine
from dlrmlab.errors import DlrmlabError
from dlrmlab.fused import PackedTables, configure, fused_forward
from dlrmlab.kernels.fused import FastConfig
from dlrmlab.workload import Workload, cast_table, preset, table_as_float32

PAPER_VARIANTS = ["baseline", "optmt", "rpf", "rpf_l1", "rpf_shared", "optmt_rpf"]


@pytest.mark.parametrize("variant", PAPER_VARIANTS)
@pytest.mark.parametrize("index_dtype", ["int32", "int64"])
def test_paper_variants_tiny(variant, index_dtype):
    rng = np.random.default_rng(1)
    w = rng.standard_normal((40, 36), dtype=np.float32)  # 36 columns: two chunks of 32, one partial
    ids = rng.integers(0, 40, 25).astype(index_dtype)
    off = np.array([0, 4, 4, 11, 25], dtype=index_dtype)  # an empty bag, variable sizes
    psw = rng.random(25, dtype=np.float32)
    cases = [("sum", None, None), ("mean", None, 3), ("sum", psw, 5), ("mean", None, None)]
    for mode, weights, pad in cases:
        out = api.embedding_bag(ids, w, off, mode, weights, True, pad, variant=variant, prefetch_distance=3)
        ref = reference.embedding_bag(ids, w, off, mode, weights, True, pad)
        assert _rel(out.copy_to_host(), ref) <= 1e-6, (mode, pad)


@pytest.mark.parametrize("knobs", [{}, {"unroll": 3, "chunk": 4, "bags_per_block": 2}, {"vector": False}])
@pytest.mark.parametrize("dim", [36, 6])  # 6: not a multiple of 4, scalar loads
def test_api_fast_variant_one_table(knobs, dim):
    """embedding_bag(variant="fast") runs the fast kernel on one table, with the API's combine cases."""
    rng = np.random.default_rng(3)
    w = rng.standard_normal((40, dim), dtype=np.float32)
    ids = rng.integers(0, 40, 25)
    off = np.array([0, 4, 4, 11, 25])
    psw = rng.random(25, dtype=np.float32)
    for mode, weights, pad in [("sum", None, None), ("mean", None, 3), ("sum", psw, 5), ("mean", None, None)]:
        out = api.embedding_bag(ids, w, off, mode, weights, True, pad, variant="fast", **knobs)
        ref = reference.embedding_bag(ids, w, off, mode, weights, True, pad)
        assert _rel(out.copy_to_host(), ref) <= 1e-6, (mode, pad)


def test_api_torch_forms_without_last_offset_and_2d():
    rng = np.random.default_rng(2)
    w = rng.standard_normal((30, 8), dtype=np.float32)
    ids = rng.integers(0, 30, 12)
    out = api.embedding_bag(ids, w, np.array([0, 5, 9]), "mean").copy_to_host()
    np.testing.assert_allclose(out, reference.embedding_bag(ids, w, np.array([0, 5, 9]), "mean"), rtol=1e-6)
    out2 = api.embedding_bag(ids.reshape(3, 4), w, mode="sum").copy_to_host()
    np.testing.assert_allclose(out2, reference.embedding_bag(ids.reshape(3, 4), w, mode="sum"), rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"prefetch_distance": 0, "variant": "rpf"}, "prefetch distance"),
        ({"prefetch_distance": 17, "variant": "rpf"}, "prefetch distance"),
        ({"max_registers": 8}, "register cap"),
        ({"max_registers": 300}, "register cap"),
        ({"variant": "nope"}, "unknown variant 'nope'"),
        ({"variant": "l2p"}, "runs a whole stage"),
        ({"variant": "rpf", "unroll": 4}, "variant 'rpf' does not take 'unroll'"),
        ({"variant": "fast", "prefetch_distance": 2}, "variant 'fast' does not take 'prefetch_distance'"),
        ({"variant": "fast", "unroll": 0}, "unroll"),
        ({"grid": 0}, "grid"),
        ({"block": (48, 4)}, "block"),
        ({"mode": "max"}, "mode"),
    ],
)
def test_api_bad_input_before_launch(kwargs, match):
    w = np.ones((10, 4), np.float32)
    kwargs = {"mode": "sum", **kwargs}
    with pytest.raises(DlrmlabError, match=match):
        api.embedding_bag(np.array([1, 2]), w, np.array([0, 2]), include_last_offset=True, **kwargs)


def test_api_rejects_bad_ids_and_offsets():
    w = np.ones((10, 4), np.float32)
    with pytest.raises(DlrmlabError, match="out of range"):
        api.embedding_bag(np.array([1, 10]), w, np.array([0, 2]), "sum", include_last_offset=True)
    with pytest.raises(DlrmlabError, match="out of range"):
        api.embedding_bag(np.array([1, -1]), w, np.array([0, 2]), "sum", include_last_offset=True)
    with pytest.raises(DlrmlabError, match="non-decreasing"):
        api.embedding_bag(np.array([1, 2, 3]), w, np.array([0, 2, 1, 3]), "sum", include_last_offset=True)
    with pytest.raises(DlrmlabError, match="per_sample_weights"):
        api.embedding_bag(np.array([1]), w, np.array([0, 1]), "mean", np.ones(1, np.float32), True)


# --- fast kernel fuzzing ----------------------------------------------------------------------------------


def _fast_case(dim, dtype, pooling, tables, weighted, seed):
    stage = preset("tiny", sparse_feature_size=dim, pooling=pooling, dtype=dtype, tables=tables, rows=300)
    wl = Workload(stage, "zipf:1.1", seed=seed, weighted=weighted)
    tabs = wl.make_tables()
    b = wl.batch()
    j = b.jagged()
    dev = (
        cuda.to_device(j.indices),
        cuda.to_device(j.offsets),
        cuda.to_device(j.table_offsets),
        None if j.per_sample_weights is None else cuda.to_device(j.per_sample_weights),
    )
    return tabs, b, dev


@pytest.mark.parametrize(
    "dim,dtype,pooling,tables,weighted,mode,pad,overrides",
    [
        (16, "float32", "5", 3, False, "sum", None, {}),
        (128, "float32", "uniform:0-12", 2, True, "sum", None, {"unroll": 4, "chunk": 8}),
        (36, "float32", "poisson:6", 4, False, "mean", 7, {"unroll": 3, "chunk": 4}),
        (6, "float32", "uniform:0-9", 1, False, "sum", None, {}),  # not a multiple of 4: scalar loads
        (64, "float16", "uniform:1-9", 2, True, "sum", None, {"unroll": 2}),
        (24, "bfloat16", "poisson:5", 3, False, "mean", None, {"chunk": 5}),
        (520, "float32", "3", 1, False, "sum", None, {"unroll": 1, "bags_per_block": 2}),  # > 512: 5 vectors
        (32, "float32", "uniform:0-4", 5, False, "sum", None, {"vector": False}),
        (128, "float32", "uniform:0-20", 3, False, "sum", None, {"split": 4, "bags_per_block": 1, "unroll": 10}),
        (64, "bfloat16", "uniform:0-9", 2, True, "sum", None, {"load_hint": "L1::no_allocate.L2::256B"}),
    ],
)
def test_fast_matches_reference(dim, dtype, pooling, tables, weighted, mode, pad, overrides):
    tabs, b, dev = _fast_case(dim, dtype, pooling, tables, weighted, seed=dim)
    packed = PackedTables.from_arrays(tabs, dtype=dtype)
    out = fused_forward(packed, dev, mode=mode, padding_idx=pad, **overrides).copy_to_host()
    ref = np.concatenate(
        [
            reference.embedding_bag(
                tb.indices, table_as_float32(w, dtype), tb.offsets, mode, tb.per_sample_weights, True, pad
            )
            for w, tb in zip(tabs, b.tables, strict=True)
        ]
    )
    assert _rel(out, ref) <= 1e-6


def test_fast_rejects_mixed_tables_and_bad_config():
    a = np.zeros((10, 8), np.float32)
    with pytest.raises(DlrmlabError, match="one width"):
        PackedTables.from_arrays([a, np.zeros((10, 16), np.float32)])
    with pytest.raises(DlrmlabError, match="one dtype"):
        PackedTables.from_arrays([a, np.zeros((10, 8), np.float16)])
    with pytest.raises(DlrmlabError, match="multiple of 4"):
        FastConfig(dim=6, vector=True)
    with pytest.raises(DlrmlabError, match="unroll"):
        FastConfig(dim=8, unroll=0)
    with pytest.raises(DlrmlabError, match="bags_per_block"):
        FastConfig(dim=128, bags_per_block=64)
    with pytest.raises(DlrmlabError, match="mode"):
        FastConfig(dim=8, combine=Combine("max"))
    with pytest.raises(DlrmlabError, match="load_hint must be one of"):
        FastConfig(dim=8, load_hint="L2::evict_first")
    with pytest.raises(DlrmlabError, match="storage"):
        PackedTables.from_arrays([cast_table(a, "bfloat16")], dtype="float16")


def test_fast_rejects_wrong_table_count():
    tabs, _b, dev = _fast_case(8, "float32", "2", 3, False, seed=1)
    packed = PackedTables.from_arrays(tabs[:2])
    with pytest.raises(DlrmlabError, match="tables"):
        fused_forward(packed, dev)


def test_fast_grid_is_one_block_per_tile():
    """Blocks start in order, so the bags in flight slide over the table-major bags (about one table at a
    time); the simulator shrinks every grid to a couple of blocks and walks the rest grid-stride."""
    from dlrmlab import backend, launch
    from dlrmlab.fused import grid_for

    cfg = configure(128, bags_per_block=4)
    assert grid_for(cfg, 24_576) == launch.grid(6_144)
    assert grid_for(cfg, 24_577) == launch.grid(6_145)
    if backend.SIMULATOR:
        assert grid_for(cfg, 24_576) == launch.SIMULATOR_MAX_BLOCKS


def test_fast_lane_geometry():
    assert configure(128).lanes == 32 and configure(128).vectors == 1
    assert configure(512).vectors == 4
    assert configure(16).lanes == 4 and configure(16).threads == 128
    assert configure(128, "float16").lanes == 16
    assert configure(6).vector is False and configure(6).lanes == 8


@pytest.mark.parametrize("budget_rows", [0, 7, 40, 10_000])
def test_fast_split_hot_layout_matches_reference(budget_rows):
    tabs, b, _dev = _fast_case(16, "float32", "uniform:0-8", 3, False, seed=4)
    ranks = [hotness.frequency_ranking(tb.indices, w.shape[0]) for w, tb in zip(tabs, b.tables, strict=True)]
    packed = PackedTables.ranked_split(tabs, ranks, budget_rows * 16 * 4)
    assert packed.split and packed.hot_bytes <= budget_rows * 16 * 4
    j = b.jagged()
    ranked = np.concatenate([packed.remap_ids(t, tb.indices) for t, tb in enumerate(b.tables)])
    dev = (cuda.to_device(ranked), cuda.to_device(j.offsets), cuda.to_device(j.table_offsets), None)
    out = fused_forward(packed, dev, mode="mean", padding_idx=None, unroll=2, chunk=4).copy_to_host()
    ref = np.concatenate(
        [
            reference.embedding_bag(tb.indices, w, tb.offsets, "mean", None, True)
            for w, tb in zip(tabs, b.tables, strict=True)
        ]
    )
    assert _rel(out, ref) <= 1e-6


st = hypothesis.strategies


@pytest.mark.slow
@hypothesis.settings(max_examples=examples(12))
@hypothesis.given(
    dim=st.integers(1, 70),
    dtype=st.sampled_from(["float32", "float16", "bfloat16"]),
    tables=st.integers(1, 4),
    hi=st.integers(0, 12),
    weighted=st.booleans(),
    unroll=st.integers(1, 5),
    chunk=st.integers(1, 9),
    seed=st.integers(0, 1000),
)
def test_fast_fuzz(dim, dtype, tables, hi, weighted, unroll, chunk, seed):
    """Random widths, dtypes, bag-size distributions and table counts against the reference."""
    pooling = f"uniform:0-{hi}" if hi else "1"
    tabs, b, dev = _fast_case(dim, dtype, pooling, tables, weighted, seed)
    packed = PackedTables.from_arrays(tabs, dtype=dtype)
    out = fused_forward(packed, dev, mode="sum", unroll=unroll, chunk=chunk).copy_to_host()
    ref = np.concatenate(
        [
            reference.embedding_bag(
                tb.indices, table_as_float32(w, dtype), tb.offsets, "sum", tb.per_sample_weights, True
            )
            for w, tb in zip(tabs, b.tables, strict=True)
        ]
    )
    assert _rel(out, ref) <= 1e-6 or np.abs(out - ref).max() <= 1e-5


def test_id_staging_is_parsed_once_and_recorded_as_its_string():
    from dlrmlab.kernels.fused import KNOBS, IdStaging

    cfg = FastConfig(dim=8, ids="registers")
    assert cfg.ids is IdStaging.REGISTERS and cfg == FastConfig(dim=8, ids=IdStaging.REGISTERS)
    assert type(cfg.params()["ids"]) is str and cfg.params()["ids"] == "registers"
    with pytest.raises(DlrmlabError, match="ids must be 'shared' or 'registers', got 'global'"):
        FastConfig(dim=8, ids="global")
    # the knobs are FastConfig's fields but those the shape and layout decide
    assert KNOBS == {"unroll", "bags_per_block", "split", "chunk", "ids", "max_registers", "vector", "bounds_check",
                     "load_hint"}
