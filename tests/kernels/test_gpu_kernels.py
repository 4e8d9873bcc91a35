"""GPU tests of the paper kernel family, intrinsics, occupancy and L2 state (run on the device)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import rel_err as _rel

from dlrmlab import api, reference
from dlrmlab.workload import Workload, cast_table, preset, table_as_float32

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def paper_table():
    """One table of the `paper` shape (500K x 128 fp32) and one batch of 2048 bags x 150 ids."""
    stage = preset("paper", tables=1)
    wl = Workload(stage, "medium", seed=3)
    w = wl.make_tables()[0]
    tb = wl.batch().tables[0]
    return w, tb


def test_intrinsics_on_gpu():
    from dlrmlab.backend import cuda
    from dlrmlab.intrinsics import f32_from_bits, f32_from_f16_bits, load16, prefetch_l1, prefetch_l2_evict_last

    @cuda.jit
    def k(a, h, out, outh, bits):
        i = cuda.grid(1)
        if i == 0:
            prefetch_l2_evict_last(a, 4)
            prefetch_l1(a, 8)
            x = load16(a, 4)
            for j in range(4):
                out[j] = x[j]
            y = load16(h, 8)
            for j in range(4):
                outh[2 * j] = f32_from_f16_bits(y[j] & 0xFFFF)
                outh[2 * j + 1] = f32_from_f16_bits(y[j] >> 16)
            out[4] = f32_from_bits(bits[0])

    a = np.arange(16, dtype=np.float32) * 1.5
    h = (np.arange(16, dtype=np.float32) - 3.25).astype(np.float16)
    out = np.zeros(5, np.float32)
    outh = np.zeros(8, np.float32)
    bits = np.array([np.float32(-2.75).view(np.uint32)], np.uint32)
    k[1, 32](a, h, out, outh, bits)
    np.testing.assert_array_equal(out[:4], a[4:8])
    assert out[4] == np.float32(-2.75)
    np.testing.assert_array_equal(outh, h[8:16].astype(np.float32))
    sass_or_ptx = next(iter(k.inspect_asm().values()))
    assert "prefetch.global.L2::evict_last" in sass_or_ptx
    assert "ld.global.nc.v4.f32" in sass_or_ptx


@pytest.mark.parametrize("hint", ["L1::no_allocate", "L2::256B", "L1::no_allocate.L2::256B"])
def test_load_hints_reach_the_ptx(hint):
    from dlrmlab.backend import cuda
    from dlrmlab.intrinsics import load16_hinted

    load = load16_hinted(hint)

    @cuda.jit
    def k(a, out):
        x = load(a, 4 * cuda.grid(1))
        for j in range(4):
            out[4 * cuda.grid(1) + j] = x[j]

    a = np.arange(64, dtype=np.float32)
    out = np.zeros(64, np.float32)
    k[1, 16](a, out)
    np.testing.assert_array_equal(out, a)
    assert f"ld.global.nc.{hint}.v4.f32" in next(iter(k.inspect_asm().values()))


@pytest.mark.parametrize(
    "variant,params",
    [
        ("baseline", {}),
        ("optmt", {}),
        ("optmt", {"max_registers": 32}),
        ("rpf", {"prefetch_distance": 1}),
        ("rpf", {"prefetch_distance": 4}),
        ("rpf", {"prefetch_distance": 16}),
        ("rpf_l1", {}),
        ("rpf_shared", {"prefetch_distance": 4}),
        ("optmt_rpf", {}),
        ("baseline", {"block": (64, 4), "grid": 264}),
    ],
)
def test_paper_variants_match_reference_on_paper_shape(paper_table, variant, params):
    w, tb = paper_table
    out = api.embedding_bag(tb.indices, w, tb.offsets, mode="sum", include_last_offset=True, variant=variant, **params)
    ref = reference.embedding_bag(tb.indices, w, tb.offsets, mode="sum", include_last_offset=True)
    assert _rel(out.copy_to_host(), ref) <= 1e-6


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("variant", ["baseline", "rpf"])
def test_half_tables(dtype, variant):
    rng = np.random.default_rng(5)
    w32 = rng.standard_normal((20000, 64), dtype=np.float32)
    w = cast_table(w32, dtype)
    ids = rng.integers(0, 20000, 4000)
    off = np.sort(rng.integers(0, 4000, 257))
    off[0], off[-1] = 0, 4000
    out = api.embedding_bag(
        ids, w, off, mode="mean", include_last_offset=True, variant=variant, weight_dtype=dtype
    ).copy_to_host()
    ref = reference.embedding_bag(ids, table_as_float32(w, dtype), off, mode="mean", include_last_offset=True)
    assert _rel(out, ref) <= 1e-6


def test_weights_padding_mean_on_gpu():
    rng = np.random.default_rng(6)
    w = rng.standard_normal((5000, 100), dtype=np.float32)  # width not a multiple of 32
    ids = rng.integers(0, 50, 3000)  # many padding hits
    off = np.sort(rng.integers(0, 3000, 300))
    off[0], off[-1] = 0, 3000
    psw = rng.random(3000, dtype=np.float32)
    for variant in ("baseline", "rpf", "rpf_shared", "rpf_l1"):
        out = api.embedding_bag(ids, w, off, "sum", psw, True, padding_idx=7, variant=variant).copy_to_host()
        ref = reference.embedding_bag(ids, w, off, "sum", psw, True, padding_idx=7)
        assert _rel(out, ref) <= 1e-6
        out = api.embedding_bag(ids, w, off, "mean", None, True, padding_idx=7, variant=variant).copy_to_host()
        ref = reference.embedding_bag(ids, w, off, "mean", None, True, padding_idx=7)
        assert _rel(out, ref) <= 1e-6


def test_torch_tensors_zero_copy_on_torch_stream():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    w = torch.randn(1000, 128, device="cuda")
    ids = torch.from_numpy(rng.integers(0, 1000, 600)).cuda()
    off = torch.arange(0, 601, 6, device="cuda")
    out = api.embedding_bag(ids, w, off, "sum", include_last_offset=True, stream=torch.cuda.current_stream())
    ref = torch.nn.functional.embedding_bag(ids, w, off, mode="sum", include_last_offset=True)
    assert isinstance(out, torch.Tensor) and out.is_cuda
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def _driver_occupancy(kernel, threads_per_block: int) -> int:
    """Resident blocks per SM as the driver computes it (cuOccupancyMaxActiveBlocksPerMultiprocessor)."""
    from cuda.bindings import driver as drv

    from dlrmlab import occupancy

    fn = occupancy.compiled(kernel)._codelibrary.get_cufunc()
    fn = getattr(fn, "handle", fn)
    fn = fn if isinstance(fn, drv.CUfunction) else drv.CUfunction(int(fn))
    err, blocks = drv.cuOccupancyMaxActiveBlocksPerMultiprocessor(fn, threads_per_block, 0)
    assert int(err) == 0
    return int(blocks)


def test_occupancy_calculator_matches_driver():
    from dlrmlab import occupancy
    from dlrmlab.config import Combine
    from dlrmlab.kernels import paper

    rng = np.random.default_rng(8)
    w = rng.standard_normal((1000, 128), dtype=np.float32)
    ids = rng.integers(0, 1000, 300)
    off = np.arange(0, 301, 3)
    for cap in (None, 32, 64):
        api.embedding_bag(ids, w, off, "sum", include_last_offset=True, variant="baseline", max_registers=cap)
        cfg = api.kernel_config("baseline", 128, "float32", Combine("sum"), max_registers=cap)
        k = paper.build(cfg)  # the kernel embedding_bag just launched (one per configuration)
        res = occupancy.kernel_resources(k)
        assert res["registers"] and (cap is None or res["registers"] <= cap)
        calc = occupancy.theoretical(res["registers"], 256, res["shared_bytes"])
        assert calc.blocks_per_sm == _driver_occupancy(k, 256)


def test_persisting_l2_restores_state_on_error():
    from dlrmlab import cudart
    from dlrmlab.backend import cuda
    from dlrmlab.errors import DlrmlabError
    from dlrmlab.l2window import persisting_l2

    before = cudart.get_persisting_l2_limit()
    s = cuda.stream()
    buf = cuda.device_array(1 << 20, np.float32)
    with pytest.raises(RuntimeError, match="boom"):
        with persisting_l2(4 << 20) as l2:
            assert cudart.get_persisting_l2_limit() >= 4 << 20
            l2.set_window(s, buf.device_ctypes_pointer.value, buf.nbytes, 1.0)
            raise RuntimeError("boom")
    assert cudart.get_persisting_l2_limit() == before
    p = cudart.device_properties()
    with pytest.raises(DlrmlabError):
        with persisting_l2(p["persisting_l2_max_bytes"] + 1):
            pass
    with pytest.raises(DlrmlabError):
        with persisting_l2(1 << 20) as l2:
            l2.set_window(s, buf.device_ctypes_pointer.value, p["access_policy_max_window_bytes"] + 1)
    assert cudart.get_persisting_l2_limit() == before


def test_pin_kernel_then_embedding(paper_table):
    from dlrmlab import hotness, l2pin
    from dlrmlab.backend import cuda

    w, tb = paper_table
    hot = hotness.hot_set(tb.indices, 60000, w.shape[0])
    dw = cuda.to_device(w.reshape(-1))
    l2pin.pin(dw, w.shape[1], cuda.to_device(hot), 4)
    cuda.synchronize()
    out = api.embedding_bag(tb.indices, w, tb.offsets, "sum", include_last_offset=True).copy_to_host()
    ref = reference.embedding_bag(tb.indices, w, tb.offsets, "sum", include_last_offset=True)
    assert _rel(out, ref) <= 1e-6


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_fast_paper_shape_and_graph_replay(dtype):
    from dlrmlab.backend import cuda
    from dlrmlab.errors import DlrmlabError
    from dlrmlab.fused import PackedTables, fused_forward
    from dlrmlab.graph import StageGraph

    stage = preset("paper", tables=3, dtype=dtype)
    wl = Workload(stage, "zipf:1.05", seed=4)
    tabs = wl.make_tables()
    b = wl.batch()
    j = b.jagged()
    dev = tuple(cuda.to_device(x) for x in (j.indices, j.offsets, j.table_offsets)) + (None,)
    packed = PackedTables.from_arrays(tabs, dtype=dtype)
    out = fused_forward(packed, dev, mode="sum")
    ref = np.concatenate(
        [
            reference.embedding_bag(tb.indices, table_as_float32(w, dtype), tb.offsets, "sum", None, True)
            for w, tb in zip(tabs, b.tables, strict=True)
        ]
    )
    assert _rel(out.copy_to_host(), ref) <= 1e-6
    out2 = cuda.device_array_like(out)
    with StageGraph.capture(lambda s: fused_forward(packed, dev, out=out2, stream=s), inputs=[out2]) as g:
        out2.copy_to_device(np.full(out2.shape, np.nan, np.float32))
        g.replay([out2])
        g.stream.synchronize()
        assert _rel(out2.copy_to_host(), ref) <= 1e-6
        with pytest.raises(DlrmlabError, match="reallocated"):
            g.replay([cuda.device_array_like(out2)])
    with pytest.raises(DlrmlabError, match="destroyed"):  # leaving the block freed the graph
        g.replay()


def test_fast_misaligned_falls_back_to_scalar():
    from dlrmlab.backend import cuda
    from dlrmlab.fused import PackedTables, fused_forward

    rng = np.random.default_rng(9)
    w = rng.standard_normal((100, 32), dtype=np.float32)
    buf = cuda.to_device(np.concatenate([[0.0], w.reshape(-1)]).astype(np.float32))
    packed = PackedTables.from_arrays([w])
    packed.packed = buf[1:]  # 4-byte offset: 16-byte loads would be misaligned
    assert not packed.vector_ok()
    ids = rng.integers(0, 100, 40)
    off = np.arange(0, 41, 4)
    dev = (cuda.to_device(ids), cuda.to_device(off), cuda.to_device(np.array([0, 10])), None)
    out = fused_forward(packed, dev).copy_to_host()
    assert _rel(out, reference.embedding_bag(ids, w, off, "sum", None, True)) <= 1e-6


@pytest.mark.parametrize(
    "dim,dtype",
    [
        (16, "float32"),
        (32, "float32"),
        (64, "float16"),
        (100, "float32"),
        (256, "bfloat16"),
        (512, "float32"),
        (30, "float32"),
    ],
)
def test_fast_widths_on_gpu(dim, dtype):
    from dlrmlab.backend import cuda
    from dlrmlab.fused import PackedTables, fused_forward

    stage = preset(
        "tiny", sparse_feature_size=dim, dtype=dtype, tables=4, rows=20000, batch_size=512, pooling="uniform:0-40"
    )
    wl = Workload(stage, "zipf:1.1", seed=dim, weighted=True)
    tabs, b = wl.make_tables(), wl.batch()
    j = b.jagged()
    dev = tuple(cuda.to_device(x) for x in (j.indices, j.offsets, j.table_offsets, j.per_sample_weights))
    out = fused_forward(PackedTables.from_arrays(tabs, dtype=dtype), dev, mode="sum").copy_to_host()
    ref = np.concatenate(
        [
            reference.embedding_bag(
                tb.indices, table_as_float32(w, dtype), tb.offsets, "sum", tb.per_sample_weights, True
            )
            for w, tb in zip(tabs, b.tables, strict=True)
        ]
    )
    assert _rel(out, ref) <= 1e-6


def test_cupy_arrays_zero_copy():
    cp = pytest.importorskip("cupy")
    rng = np.random.default_rng(11)
    w = rng.standard_normal((3000, 64), dtype=np.float32)
    ids = rng.integers(0, 3000, 900)
    off = np.arange(0, 901, 9)
    out = api.embedding_bag(cp.asarray(ids), cp.asarray(w), cp.asarray(off), "sum", include_last_offset=True)
    ref = reference.embedding_bag(ids, w, off, "sum", None, True)
    assert _rel(out.copy_to_host(), ref) <= 1e-6
