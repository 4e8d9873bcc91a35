"""The public API's input forms (torch CPU tensors, fp16, bf16 as uint16), its refusals, and several tables."""

from __future__ import annotations

import re

import numpy as np
import pytest
from helpers import rel_err as _rel

from dlrmlab import api, reference, variants
from dlrmlab.config import Combine
from dlrmlab.errors import DlrmlabError
from dlrmlab.kernels.fused import FastConfig
from dlrmlab.kernels.paper import PaperConfig
from dlrmlab.workload import cast_table, table_as_float32


def _host(x) -> np.ndarray:
    return x.copy_to_host() if hasattr(x, "copy_to_host") else np.asarray(x)


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


@pytest.mark.torch
@pytest.mark.parametrize(
    "mode,weighted,pad,last",
    [("mean", False, None, False), ("sum", True, None, False), ("mean", False, 3, True), ("sum", False, 0, True)],
)
def test_torch_cpu_tensors_match_torch(torch, mode, weighted, pad, last):
    F = torch.nn.functional
    g = torch.Generator().manual_seed(0)
    w = torch.randn(20, 8, generator=g)
    ids = torch.randint(0, 20, (15,), generator=g)
    ids[[1, 7]] = 3  # make sure padding occurs
    ids[2] = 0
    off = torch.tensor([0, 4, 4, 9, 15] if last else [0, 4, 4, 9])  # an empty bag
    psw = torch.rand(15, generator=g) if weighted else None
    out = api.embedding_bag(ids, w, off, mode, psw, last, pad)
    assert isinstance(out, torch.Tensor)
    assert out.dtype == torch.float32 and out.device.type == "cpu"
    ref = F.embedding_bag(ids, w, off, mode=mode, per_sample_weights=psw, include_last_offset=last, padding_idx=pad)
    torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-6)


@pytest.mark.torch
def test_torch_cpu_2d_input(torch):
    w = torch.randn(10, 4)
    ids = torch.randint(0, 10, (3, 5))
    out = api.embedding_bag(ids, w, mode="sum")
    torch.testing.assert_close(out, torch.nn.functional.embedding_bag(ids, w, mode="sum"))


@pytest.mark.torch
def test_torch_cpu_int32_ids(torch):
    w = torch.randn(10, 4)
    ids = torch.tensor([1, 2, 3, 9], dtype=torch.int32)
    off = torch.tensor([0, 1], dtype=torch.int32)
    out = api.embedding_bag(ids, w, off, mode="mean")
    torch.testing.assert_close(out, torch.nn.functional.embedding_bag(ids, w, off, mode="mean"))


@pytest.mark.torch
def test_torch_bf16_weights(torch):
    w = torch.randn(12, 8).to(torch.bfloat16)
    ids, off = torch.tensor([1, 5, 11, 0, 5]), torch.tensor([0, 2])
    out = api.embedding_bag(ids, w, off, mode="sum")
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, torch.nn.functional.embedding_bag(ids, w.float(), off, mode="sum"))


@pytest.mark.torch
def test_torch_parameter_weight(torch):
    emb = torch.nn.EmbeddingBag(10, 4, mode="sum")
    ids, off = torch.tensor([1, 2, 3]), torch.tensor([0, 2])
    out = api.embedding_bag(ids, emb.weight, off, mode="sum")
    torch.testing.assert_close(out, emb(ids, off).detach())


def test_fp16_numpy_weights():
    rng = np.random.default_rng(5)
    w = rng.standard_normal((30, 16)).astype(np.float16)
    ids = rng.integers(0, 30, 20)
    off = np.array([0, 3, 3, 12, 20])
    out = _host(api.embedding_bag(ids, w, off, "sum", include_last_offset=True))
    ref = reference.embedding_bag(ids, w.astype(np.float32), off, "sum", include_last_offset=True)
    assert out.dtype == np.float32
    assert _rel(out, ref) <= 1e-6


def test_bf16_as_uint16_with_weight_dtype():
    rng = np.random.default_rng(6)
    w = cast_table(rng.standard_normal((25, 16), dtype=np.float32), "bfloat16")
    assert w.dtype == np.uint16
    ids = rng.integers(0, 25, 18)
    off = np.array([0, 5, 11])
    out = _host(api.embedding_bag(ids, w, off, "mean", weight_dtype="bfloat16"))
    ref = reference.embedding_bag(ids, table_as_float32(w, "bfloat16"), off, "mean")
    assert _rel(out, ref) <= 1e-6


def test_uint16_without_weight_dtype_raises():
    w = np.zeros((4, 4), np.uint16)
    with pytest.raises(DlrmlabError, match="not supported"):
        api.embedding_bag(np.array([1]), w, np.array([0]))


@pytest.mark.parametrize("weight_dtype", ["int2", "float64", "bf16"])
def test_bad_weight_dtype_raises(weight_dtype):
    with pytest.raises(DlrmlabError, match="weight_dtype"):
        api.embedding_bag(np.array([1]), np.zeros((4, 4), np.float32), np.array([0]), weight_dtype=weight_dtype)


@pytest.mark.parametrize("dtype", [np.int64, np.float64, np.int8])
def test_unsupported_weight_dtype_raises(dtype):
    with pytest.raises(DlrmlabError, match="not supported"):
        api.embedding_bag(np.array([1]), np.zeros((4, 4), dtype), np.array([0]))


def test_bad_shapes_raise():
    w = np.zeros((10, 4), np.float32)
    with pytest.raises(DlrmlabError, match="input must be 1-D"):
        api.embedding_bag(np.zeros((2, 2, 2), np.int64), w)
    with pytest.raises(DlrmlabError, match="offsets must be None"):
        api.embedding_bag(np.zeros((2, 3), np.int64), w, np.array([0, 3]))
    with pytest.raises(DlrmlabError, match="offsets are required"):
        api.embedding_bag(np.array([1, 2]), w)
    with pytest.raises(DlrmlabError, match="weight must be 2-D"):
        api.embedding_bag(np.array([1]), np.zeros(4, np.float32), np.array([0]))
    with pytest.raises(DlrmlabError, match="integer ids"):
        api.embedding_bag(np.array([1.0, 2.0]), w, np.array([0]))
    with pytest.raises(DlrmlabError, match="padding_idx"):
        api.embedding_bag(np.array([1]), w, np.array([0]), padding_idx=10)


def test_embedding_bags_three_tables():
    rng = np.random.default_rng(7)
    weights = [rng.standard_normal((r, 8), dtype=np.float32) for r in (10, 25, 17)]
    inputs, offsets, psws = [], [], []
    for w, bags in zip(weights, (2, 3, 1), strict=True):
        n = int(rng.integers(bags, 3 * bags + 1))
        inputs.append(rng.integers(0, w.shape[0], n))
        cuts = np.sort(rng.integers(0, n + 1, bags - 1))
        offsets.append(np.concatenate([[0], cuts, [n]]))
        psws.append(rng.random(n, dtype=np.float32))
    outs = api.embedding_bags(inputs, weights, offsets, "sum", psws, variant="rpf", prefetch_distance=2)
    assert len(outs) == 3
    for o, i, w, off, p in zip(outs, inputs, weights, offsets, psws, strict=True):
        ref = reference.embedding_bag(i, w, off, "sum", p, include_last_offset=True)
        assert _host(o).shape == (off.size - 1, 8)
        assert _rel(_host(o), ref) <= 1e-6
    # mean, unweighted
    outs = api.embedding_bags(inputs, weights, offsets, mode="mean")
    for o, i, w, off in zip(outs, inputs, weights, offsets, strict=True):
        assert _rel(_host(o), reference.embedding_bag(i, w, off, "mean", include_last_offset=True)) <= 1e-6


def test_embedding_bags_length_mismatch():
    w = np.zeros((4, 4), np.float32)
    with pytest.raises(DlrmlabError, match="one entry per table"):
        api.embedding_bags([np.array([1])] * 2, [w], [np.array([0, 1])] * 2)


def test_kernel_config_unknown_parameter_names_variant_and_knob():
    with pytest.raises(DlrmlabError, match="variant 'baseline' does not take 'bogus'; it takes: "):
        api.kernel_config("baseline", 4, "float32", Combine(), bogus=1)
    with pytest.raises(DlrmlabError, match="variant 'baseline' does not take 'bogus'"):
        api.embedding_bag(np.array([1]), np.zeros((4, 4), np.float32), np.array([0]), bogus=1)
    with pytest.raises(DlrmlabError, match="variant 'fast' does not take 'prefetch'"):
        api.embedding_bag(np.array([1]), np.zeros((4, 4), np.float32), np.array([0]), variant="fast",
                          prefetch="register")  # fmt: skip


def test_kernel_config_variants_and_overrides():
    cfg = api.kernel_config("optmt_rpf", 8, "float32", Combine(), prefetch_distance=4)
    assert isinstance(cfg, PaperConfig)
    assert cfg.max_registers == 42 and cfg.prefetch.name == "register" and cfg.prefetch.distance == 4
    assert api.kernel_config("optmt", 8, "float32", Combine()).max_registers == 42
    # an explicit None is "no cap" (what `dlrmlab tune optmt` sweeps as its uncapped point)
    assert api.kernel_config("optmt", 8, "float32", Combine(), max_registers=None).max_registers is None
    cfg = api.kernel_config("baseline", 8, "float16", Combine("mean", padded=True), block=[64, 4])
    assert cfg.block == (64, 4) and cfg.dtype == "float16" and cfg.combine == Combine("mean", padded=True)
    assert cfg.grid == 1024  # PyTorch's grid; the launch caps it in the simulator


def test_kernel_config_fast():
    cfg = api.kernel_config("fast", 32, "float16", Combine("sum", weighted=True), 5.0, unroll=4, chunk=16)
    assert isinstance(cfg, FastConfig)
    assert (cfg.dim, cfg.dtype, cfg.unroll, cfg.chunk) == (32, "float16", 4, 16)
    assert cfg.combine.weighted and not cfg.split_hot


@pytest.mark.parametrize("variant", ["l2p", "combined", "fast+l2p", "fast_graph", "l2window", "torch"])
def test_kernel_config_refuses_stage_variants(variant):
    with pytest.raises(DlrmlabError, match=re.escape(f"variant '{variant}' runs a whole stage")):
        api.kernel_config(variant, 8, "float32", Combine())
    with pytest.raises(DlrmlabError, match="runs a whole stage"):
        api.embedding_bag(np.array([1]), np.zeros((4, 4), np.float32), np.array([0]), variant=variant)


def test_single_table_variants():
    names = api.single_table_variants()
    assert {"baseline", "optmt", "rpf", "rpf_l1", "rpf_shared", "optmt_rpf", "fast"} == set(names)
    for n in names:
        assert variants.get(n).families in (("paper",), ("fast",), ("fast", "layout", "window"))
    with pytest.raises(DlrmlabError, match="layout and L2-window knobs apply to a whole stage"):
        api.kernel_config("fast", 32, "float32", Combine("sum"), layout="split-hot")


def test_unknown_variant_lists_the_table():
    with pytest.raises(DlrmlabError, match="unknown variant 'nope'; valid: ") as e:
        api.kernel_config("nope", 8, "float32", Combine())
    assert all(n in str(e.value) for n in variants.names())


@pytest.mark.parametrize("mode", ["max", "min"])
def test_modes_the_kernels_lack_are_refused(mode):
    with pytest.raises(DlrmlabError, match="mode must be one of sum, mean"):
        api.embedding_bag(np.array([1]), np.zeros((4, 4), np.float32), np.array([0]), mode=mode)
