"""The kernels' policies on their own: each device function a kernel is built from, run in a tiny kernel (in the
simulator here, on the GPU there) and checked against NumPy, as cuEmbed tests its Addresser and Combiner.

* element loaders (``kernels/elements.py``): one element, and the halves of a packed 16-bit word, to fp32;
* bag loops (``prefetch.py``): the row factor and each prefetch policy's loop over a bag;
* the fast kernel's policies (``kernels/fused.py``): table of a bag, addresser, bounds check, row factor,
  row-slice loader, combiner, writer, and the register-prefetched part of a bag.

The whole kernels are checked against the reference in test_kernels_sim.py; here a policy that is wrong shows
up by name. Sums of several rows are compared within 1e-5 (a GPU contracts multiply-adds into FMAs).
"""

from __future__ import annotations

import numpy as np
import pytest
from numba import float32, int64

from dlrmlab import quant
from dlrmlab.backend import cuda
from dlrmlab.config import Combine
from dlrmlab.errors import DlrmlabError
from dlrmlab.kernels import elements
from dlrmlab.kernels import fused as fk
from dlrmlab.kernels import quantized as qk
from dlrmlab.prefetch import L1Prefetch, NoPrefetch, RegisterPrefetch, SharedStaging, _row_factor
from dlrmlab.workload import cast_table

DTYPES = ["float32", "float16", "bfloat16"]
#: (mode, weighted, padded): every combination a kernel is specialised for
COMBINES = [("sum", False, False), ("sum", True, False), ("sum", False, True), ("sum", True, True),
            ("mean", False, False), ("mean", False, True)]  # fmt: skip
COMBINE_IDS = ["sum", "weighted", "padded", "weighted-padded", "mean", "mean-padded"]
PAD = 3


def bf16_to_f32(bits: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns (uint16) to fp32: the upper half of an fp32 word."""
    return (np.asarray(bits, np.uint16).astype(np.uint32) << 16).view(np.float32)


def as_f32(table: np.ndarray, dtype: str) -> np.ndarray:
    """The fp32 values a kernel reads from ``table`` stored as ``dtype``."""
    return bf16_to_f32(table) if dtype == "bfloat16" else table.astype(np.float32)


def factors(ids: np.ndarray, psw: np.ndarray, combine: Combine) -> np.ndarray:
    """What each row of a bag is multiplied by: its weight (or 1), 0 for the padding row."""
    f = psw.astype(np.float32) if combine.weighted else np.ones(ids.size, np.float32)
    return np.where(ids == PAD, np.float32(0), f) if combine.padded else f


# --- element loaders ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_scalar_loader_reads_one_element_as_fp32(dtype):
    load = elements.scalar_loader(dtype)

    @cuda.jit
    def kernel(w, out):
        i = cuda.grid(1)
        if i < out.size:
            out[i] = load(w, i)

    values = np.array([0.0, 1.0, -2.5, 3.140625, 65504.0, -1e-3, 7.75, 0.5], np.float32)
    w = cast_table(values, dtype)
    out = np.zeros(values.size, np.float32)
    kernel[1, 8](w, out)
    np.testing.assert_array_equal(out, as_f32(w, dtype))


def test_scalar_loader_refuses_an_unknown_dtype():
    with pytest.raises(DlrmlabError, match="unknown table dtype 'int8'"):
        elements.scalar_loader("int8")


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_unpack_lo_and_hi_give_the_halves_of_a_packed_word(dtype):
    lo, hi = elements.unpack_lo(dtype), elements.unpack_hi(dtype)

    @cuda.jit
    def kernel(words, out):
        i = cuda.grid(1)
        if i < words.size:
            out[i, 0] = lo(words[i])
            out[i, 1] = hi(words[i])

    halves = cast_table(np.array([1.5, -2.0, 0.0, 3.25, -0.125, 100.0], np.float32), dtype)
    pairs = halves.view(np.uint16).reshape(-1, 2)  # little endian: element 2k is the low half of word k
    words = (pairs[:, 0].astype(np.uint32) | (pairs[:, 1].astype(np.uint32) << 16)).astype(np.uint32)
    out = np.zeros((words.size, 2), np.float32)
    kernel[1, 4](words, out)
    want = bf16_to_f32(pairs) if dtype == "bfloat16" else pairs.view(np.float16).astype(np.float32)
    np.testing.assert_array_equal(out, want)


# --- bag loops (the paper kernel's prefetch policies) ---------------------------------------------------------


@pytest.mark.parametrize(("mode", "weighted", "padded"), COMBINES, ids=COMBINE_IDS)
def test_row_factor(mode, weighted, padded):
    combine = Combine(mode, weighted, padded)
    factor = _row_factor(combine)

    @cuda.jit
    def kernel(ids, psw, pad, f_out, c_out):
        e = cuda.grid(1)
        if e < ids.size:
            f, c = factor(int64(ids[e]), e, psw, pad)
            f_out[e] = f
            c_out[e] = c

    ids = np.array([0, PAD, 5, PAD, 1], np.int64)
    psw = np.array([0.5, 2.0, -1.0, 3.0, 0.25], np.float32)
    f_out, c_out = np.zeros(5, np.float32), np.zeros(5, np.int64)
    kernel[1, 8](ids, psw, PAD, f_out, c_out)
    np.testing.assert_array_equal(f_out, factors(ids, psw, combine))
    np.testing.assert_array_equal(c_out, (ids != PAD) if padded else np.ones(5))


BAG_LOOPS = [NoPrefetch(), RegisterPrefetch(1), RegisterPrefetch(3), L1Prefetch(2), SharedStaging(3)]
BX, BY = 8, 2  # threads per bag's columns, bags per block (SharedStaging sizes its buffer by the block)


@pytest.mark.parametrize("policy", BAG_LOOPS, ids=lambda p: f"{p.name}-{p.params().get('prefetch_distance', 0)}")
@pytest.mark.parametrize(("mode", "weighted", "padded"), COMBINES, ids=COMBINE_IDS)
def test_bag_loop_sums_and_counts_a_bag(policy, mode, weighted, padded):
    """One thread per (bag, column): the loop's sum and row count against NumPy, for bags empty, shorter than
    the prefetch distance, and several distances long with a tail."""
    combine = Combine(mode, weighted, padded)
    bag_loop = policy.build(elements.scalar_loader("float32"), combine, (BX, BY))

    @cuda.jit
    def kernel(weight, dim, indices, offsets, psw, pad, out, counts):
        bag = cuda.blockIdx.x * cuda.blockDim.y + cuda.threadIdx.y
        feat = cuda.threadIdx.x
        if bag < offsets.size - 1 and feat < dim:
            acc, cnt = bag_loop(weight, dim, indices, psw, offsets[bag], offsets[bag + 1], feat, pad)
            out[bag, feat] = acc
            counts[bag, feat] = cnt

    rng = np.random.default_rng(7)
    rows, dim = 12, 6  # 6 of the block's 8 columns: the others idle
    w = rng.standard_normal((rows, dim)).astype(np.float32)
    offsets = np.array([0, 0, 1, 5, 12], np.int64)
    ids = rng.integers(0, rows, offsets[-1]).astype(np.int32)
    ids[[2, 6]] = PAD
    psw = rng.random(ids.size).astype(np.float32)
    out, counts = np.zeros((4, dim), np.float32), np.zeros((4, dim), np.int64)
    kernel[2, (BX, BY)](w.ravel(), dim, ids, offsets, psw, PAD, out, counts)
    for b in range(4):
        sel = slice(offsets[b], offsets[b + 1])
        f = factors(ids[sel], psw[sel], combine)
        np.testing.assert_allclose(out[b], (w[ids[sel]] * f[:, None]).sum(0), rtol=1e-5, atol=1e-5, err_msg=b)
        kept = int((ids[sel] != PAD).sum()) if padded else offsets[b + 1] - offsets[b]
        assert (counts[b] == kept).all(), b


# --- the fast kernel's policies ------------------------------------------------------------------------------


def test_table_of_bag_with_empty_tables():
    table_of_bag = fk._table_of_bag()

    @cuda.jit
    def kernel(table_offsets, out):
        b = cuda.grid(1)
        if b < out.size:
            out[b] = table_of_bag(table_offsets, b)

    table_offsets = np.array([0, 3, 3, 7, 7, 10], np.int64)  # tables 1 and 3 have no bags
    out = np.full(10, -1, np.int64)
    kernel[1, 16](table_offsets, out)
    np.testing.assert_array_equal(out, np.searchsorted(table_offsets, np.arange(10), side="right") - 1)


@pytest.mark.parametrize("split_hot", [False, True])
def test_addresser(split_hot):
    dim = 8
    row_offset = fk._addresser(fk.FastConfig(dim=dim, split_hot=split_hot))

    @cuda.jit
    def kernel(ids, base, hot_rows, hot_base, out):
        i = cuda.grid(1)
        if i < ids.size:
            out[i] = row_offset(int64(ids[i]), base, hot_rows, hot_base)

    ids = np.array([0, 1, 4, 5, 9], np.int64)
    out = np.zeros(5, np.int64)
    kernel[1, 8](ids, 1000, 5, 40, out)
    want = np.where(split_hot & (ids < 5), 40 + ids * dim, 1000 + ids * dim)  # hot rows behind their own base
    np.testing.assert_array_equal(out, want)


@pytest.mark.parametrize("checked", [False, True])
def test_checker_counts_bad_ids_and_keeps_the_first(checked):
    in_bounds = fk._checker(fk.FastConfig(dim=4, bounds_check=checked))

    @cuda.jit
    def kernel(ids, tables, table_rows, record, errors, ok):
        e = cuda.grid(1)
        if e < ids.size:
            ok[e] = in_bounds(int64(ids[e]), tables[e], e, table_rows, errors, record[e])

    ids = np.array([0, 5, 6, -1, 2, 9, 4], np.int64)
    tables = np.array([0, 0, 0, 1, 1, 1, 1], np.int64)
    table_rows = np.array([6, 5], np.int64)
    record = np.array([1, 1, 0, 1, 1, 1, 1], np.bool_)  # position 2 is bad but another thread reports it
    errors = np.array([0, 2**62], np.int64)
    ok = np.zeros(ids.size, np.bool_)
    kernel[1, 8](ids, tables, table_rows, record, errors, ok)
    bad = (ids < 0) | (ids >= table_rows[tables])
    if checked:
        np.testing.assert_array_equal(ok, ~bad)
        assert errors.tolist() == [int((bad & record).sum()), int(np.flatnonzero(bad & record)[0])]
    else:  # compiled away: every id is read
        assert ok.all() and errors.tolist() == [0, 2**62]


@pytest.mark.parametrize(("mode", "weighted", "padded"), COMBINES, ids=COMBINE_IDS)
def test_fast_factor(mode, weighted, padded):
    combine = Combine(mode, weighted, padded)
    factor = fk._factor(fk.FastConfig(dim=4, combine=combine))

    @cuda.jit
    def kernel(psw, ids, pad, out):
        e = cuda.grid(1)
        if e < ids.size:
            out[e] = factor(psw, e, int64(ids[e]), pad)

    ids = np.array([PAD, 0, 7, PAD], np.int64)
    psw = np.array([2.0, 0.5, -3.0, 1.5], np.float32)
    out = np.zeros(4, np.float32)
    kernel[1, 4](psw, ids, PAD, out)
    np.testing.assert_array_equal(out, factors(ids, psw, combine))


def expected_slices(table: np.ndarray, cfg: fk.FastConfig) -> np.ndarray:
    """``[row, lane, v * vec + q]``: what each lane holds of each row (0 past the row's end)."""
    rows = table.shape[0]
    out = np.zeros((rows, cfg.lanes, cfg.vectors * cfg.vec), np.float32)
    for lane in range(cfg.lanes):
        for v in range(cfg.vectors):
            col = (v * cfg.lanes + lane) * cfg.vec
            if col < cfg.dim:
                out[:, lane, v * cfg.vec : (v + 1) * cfg.vec] = table[:, col : col + cfg.vec]
    return out


SLICES = [(dtype, dim, vector) for dtype in DTYPES for dim, vector in [(8, True), (48, True), (16, False), (6, False)]]
SLICES += [("float32", 4, True), ("float32", 36, True), ("float32", 160, True)]  # one lane; 9 of 16; two vectors


@pytest.mark.parametrize(("dtype", "dim", "vector"), SLICES)
def test_slice_loader_gives_each_lane_its_columns(dtype, dim, vector):
    """Each lane's 16-byte vectors (4 fp32, or 8 fp16/bf16 unpacked from 4 words) or scalars, exactly as the
    row holds them; lanes past the row's end hold zeros."""
    cfg = fk.FastConfig(dim=dim, dtype=dtype, vector=vector)
    load_row_slice, ACC = fk._slice_loader(cfg), cfg.vectors * cfg.vec

    @cuda.jit
    def kernel(packed, row_offsets, out):
        vals = cuda.local.array((2, ACC), float32)
        lane = cuda.threadIdx.x
        for r in range(row_offsets.size):
            load_row_slice(packed, row_offsets[r], vals, r % 2)
            for a in range(ACC):
                out[r, lane, a] = vals[r % 2, a]

    rng = np.random.default_rng(dim)
    table = cast_table(rng.standard_normal((3, dim)).astype(np.float32), dtype)
    out = np.full((3, cfg.lanes, ACC), np.nan, np.float32)
    kernel[1, cfg.lanes](table.ravel(), np.arange(3, dtype=np.int64) * dim, out)
    np.testing.assert_array_equal(out, expected_slices(as_f32(table, dtype), cfg))


@pytest.mark.parametrize("factors_on", [False, True])
def test_combiner_adds_a_present_row_scaled(factors_on):
    cfg = fk.FastConfig(dim=8, combine=Combine("sum", weighted=factors_on))
    add_row, ACC = fk._combiner(cfg), cfg.vectors * cfg.vec

    @cuda.jit
    def kernel(vals, f, present, acc, counted):
        for slot in range(vals.shape[0]):
            counted[slot] = add_row(acc, vals, slot, f[slot], present[slot])

    vals = np.arange(4 * ACC, dtype=np.float32).reshape(4, ACC)
    f = np.array([2.0, 0.0, 0.5, 3.0], np.float32)
    present = np.array([True, True, True, False])  # the last: a tail's padding slot, adds nothing
    acc, counted = np.ones(ACC, np.float32), np.zeros(4, np.int64)
    kernel[1, 1](vals, f, present, acc, counted)
    scale = f if factors_on else np.ones(4, np.float32)
    np.testing.assert_allclose(acc, 1 + (vals * (scale * present)[:, None]).sum(0), rtol=1e-6)
    np.testing.assert_array_equal(counted, present & (f != 0))  # a row that weighs 0 is not counted


@pytest.mark.parametrize(("mode", "weighted", "padded"), COMBINES, ids=COMBINE_IDS)
@pytest.mark.parametrize(("rows", "nonzero"), [(5, 3), (0, 0), (4, 0)])
def test_writer_scales_a_mean_and_writes_each_lanes_columns(mode, weighted, padded, rows, nonzero):
    cfg = fk.FastConfig(dim=20, vector=False, combine=Combine(mode, weighted, padded))  # 32 lanes, 12 past the end
    write_bag, ACC = fk._writer(cfg), cfg.vectors * cfg.vec

    @cuda.jit
    def kernel(acc_in, rows, nonzero, out):
        acc = cuda.local.array(ACC, float32)
        for a in range(ACC):
            acc[a] = acc_in[cuda.threadIdx.x, a]
        write_bag(out, 1, acc, rows, nonzero)

    acc_in = np.arange(cfg.lanes * ACC, dtype=np.float32).reshape(cfg.lanes, ACC) + 1
    out = np.zeros((2, cfg.dim), np.float32)
    kernel[1, cfg.lanes](acc_in, rows, nonzero, out)
    n = nonzero if padded and not weighted else rows  # a mean skips the padding rows
    scale = 1 / n if mode == "mean" and n > 0 else 1.0
    np.testing.assert_allclose(out[1], acc_in[: cfg.dim, 0] * np.float32(scale), rtol=1e-6)
    assert not out[0].any()  # only the bag's own row is written


@pytest.mark.parametrize(("dtype", "dim", "unroll"), [("float32", 8, 3), ("float16", 16, 2), ("bfloat16", 8, 1),
                                                       ("float32", 6, 4)])  # fmt: skip
@pytest.mark.parametrize(("mode", "weighted", "padded", "checked"),
                         [("sum", False, False, False), ("sum", True, True, False), ("mean", False, True, True)])
def test_part_from_registers_sums_a_bag(dtype, dim, unroll, mode, weighted, padded, checked):
    """The ids="registers" loop: rows ``begin..end`` of a bag added into ``acc`` with their factors, full
    blocks of ``unroll`` rows and a shorter tail; with ``checked``, bad ids add nothing and are reported."""
    cfg = fk.FastConfig(dim=dim, dtype=dtype, vector=dim % 8 == 0, unroll=unroll, ids="registers",
                        combine=Combine(mode, weighted, padded), bounds_check=checked)  # fmt: skip
    sum_part, ACC, IN_FLIGHT = fk._part_from_registers(cfg), cfg.vectors * cfg.vec, cfg.unroll

    @cuda.jit
    def kernel(packed, indices, psw, pad, bounds, table_rows, errors, out, nonzero):
        acc = cuda.local.array(ACC, float32)
        vals = cuda.local.array((IN_FLIGHT, ACC), float32)
        ids = cuda.local.array(IN_FLIGHT, int64)
        fs = cuda.local.array(IN_FLIGHT, float32)
        lane = cuda.threadIdx.x
        for b in range(bounds.size - 1):
            for a in range(ACC):
                acc[a] = 0.0
            nonzero[b, lane] = sum_part(packed, indices, psw, pad, bounds[b], bounds[b + 1], int64(0), int64(0),
                                        int64(0), acc, vals, ids, fs, 0, table_rows, errors)
            for a in range(ACC):
                out[b, lane, a] = acc[a]

    rng = np.random.default_rng(unroll)
    n_rows = 10
    table = cast_table(rng.standard_normal((n_rows, dim)).astype(np.float32), dtype)
    bounds = np.array([0, 0, 2, 2 + unroll, 9 + 2 * unroll], np.int64)  # empty, a tail only, one block, blocks+tail
    ids = rng.integers(0, n_rows, bounds[-1]).astype(np.int64)
    ids[[1, 4]] = PAD
    if checked:
        ids[[3, bounds[-1] - 1]] = [n_rows, -2]
    psw = rng.random(ids.size).astype(np.float32)
    errors = np.array([0, 2**62], np.int64)
    out = np.zeros((bounds.size - 1, cfg.lanes, ACC), np.float32)
    nonzero = np.zeros((bounds.size - 1, cfg.lanes), np.int64)
    kernel[1, cfg.lanes](table.ravel(), ids, psw, PAD, bounds, np.array([n_rows], np.int64), errors, out, nonzero)

    good = (ids >= 0) & (ids < n_rows)
    f = np.where(good, factors(ids, psw, Combine(mode, weighted, padded)), np.float32(0))
    rows = expected_slices(as_f32(table, dtype), cfg)[np.where(good, ids, 0)]  # [id position, lane, acc]
    for b in range(bounds.size - 1):
        sel = slice(bounds[b], bounds[b + 1])
        np.testing.assert_allclose(out[b], (rows[sel] * f[sel, None, None]).sum(0), rtol=1e-5, atol=1e-5)
        assert (nonzero[b] == int((f[sel] != 0).sum())).all(), b
    bad = np.flatnonzero(~good)
    assert errors.tolist() == ([bad.size, int(bad[0])] if checked else [0, 2**62])


# --- quantized rows (kernels/quantized.py) --------------------------------------------------------------------


@pytest.mark.parametrize(("fmt", "dim"), [("int8", 16), ("fp8", 16), ("int4", 32)])
def test_quantized_combiner_dequantizes_every_code(fmt, dim):
    """Every code of the format, held packed as the loader holds it (four words of codes, then scale and bias
    bits), comes out as the NumPy reference's ``scale * q + bias``; fp8's subnormals and signs included."""
    cfg = fk.FastConfig(dim=dim, dtype=fmt)
    add_row, held_n, acc_n = qk.combiner(cfg), cfg.held, cfg.accumulators
    f = quant.row_format(fmt)
    codes = np.arange(256, dtype=np.uint8)
    if fmt == "fp8":
        codes = codes[(codes & 0x7F) != 0x7F]  # E4M3FN's two NaN codes are never written
    codes = np.resize(codes, -(-codes.size // 16) * 16).reshape(-1, 16)  # 16 bytes of codes per row
    scale, bias = np.float32(0.375), np.float32(-1.25)
    meta = np.array([scale, bias], f.meta_dtype).view(np.uint8)
    held = np.zeros((codes.shape[0], held_n), np.uint32)
    held[:, :4] = codes.view(np.uint32)
    held[:, 4] = np.resize(meta, 8)[:4].view(np.uint32)[0]
    held[:, 5] = np.resize(meta, 8)[4:].view(np.uint32)[0]

    @cuda.jit
    def kernel(held, out):
        acc = cuda.local.array(acc_n, float32)
        for slot in range(held.shape[0]):
            for a in range(acc_n):
                acc[a] = 0.0
            add_row(acc, held, slot, float32(1.0), True)
            for a in range(acc_n):
                out[slot, a] = acc[a]

    out = np.zeros((codes.shape[0], acc_n), np.float32)
    kernel[1, 1](held, out)
    values = out[:, :dim] + (out[:, dim:] if acc_n > dim else 0)
    rows = np.concatenate([codes, np.tile(meta[: f.meta_bytes], (codes.shape[0], 1))], axis=1)
    np.testing.assert_array_equal(values, quant.dequantize(rows, fmt, dim))
