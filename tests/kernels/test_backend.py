"""Backend selection and the intrinsics' simulator stand-ins, run as real (simulated) kernels."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import simulator_only

from dlrmlab import backend, intrinsics
from dlrmlab.backend import cuda


@simulator_only
def test_simulator_mode():
    from numba import config

    assert backend.SIMULATOR is True
    assert backend.mode() == "simulator"
    assert "simulator" in backend.describe_mode()
    assert config.ENABLE_CUDASIM
    assert backend.default_preset() == "tiny"


@pytest.mark.gpu
def test_gpu_mode():
    assert backend.mode() == "gpu" and backend.SIMULATOR is False
    assert backend.default_preset() == "paper"


def test_mode_is_consistent():
    assert backend.mode() == ("simulator" if backend.SIMULATOR else "gpu")


@backend.jit(max_registers=32)
def _axpb(x, out, a, b):
    i = cuda.grid(1)
    if i < x.shape[0]:
        out[i] = a * x[i] + b


def test_jit_with_max_registers_runs():
    x = np.arange(20, dtype=np.float32)
    out = np.zeros_like(x)
    _axpb[3, 8](x, out, np.float32(2), np.float32(1))
    np.testing.assert_array_equal(out, 2 * x + 1)


@backend.jit
def _block_reverse(x, out):
    tmp = cuda.shared.array(32, np.float32)
    t = cuda.threadIdx.x
    tmp[t] = x[t]
    cuda.syncthreads()
    out[t] = tmp[31 - t]


def test_plain_jit():
    x = np.arange(32, dtype=np.float32)
    out = np.zeros_like(x)
    _block_reverse[1, 32](x, out)
    np.testing.assert_array_equal(out, x[::-1])


# --- timing events -------------------------------------------------------------------------------------


def test_event_times_a_launch():
    x = np.arange(20, dtype=np.float32)
    d_x, d_out = cuda.to_device(x), cuda.device_array_like(x)
    s = cuda.stream()
    e0, e1 = backend.event(), backend.event()
    e0.record(s)
    _axpb[3, 8, s](d_x, d_out, np.float32(2), np.float32(1))
    e1.record(s)
    e1.synchronize()
    assert e1.query()
    assert e0.elapsed_time(e1) >= 0.0
    np.testing.assert_array_equal(d_out.copy_to_host(), 2 * x + 1)


@simulator_only
def test_event_is_a_host_stand_in_in_simulator():
    e0, e1 = backend.event(), backend.event()
    assert isinstance(e0, backend.HostEvent)
    with pytest.raises(RuntimeError, match="not recorded"):
        e0.elapsed_time(e1)
    e0.record()
    e1.record(0)
    assert e0.elapsed_time(e1) >= 0.0


# --- intrinsics ------------------------------------------------------------------------------------------


@cuda.jit
def _load16_f32(a, out):
    i = cuda.grid(1)
    if i * 4 < a.shape[0]:
        intrinsics.prefetch_l2_evict_last(a, i * 4)
        intrinsics.prefetch_l1(a, i * 4)
        v = intrinsics.load16(a, i * 4)
        for k in range(4):
            out[i * 4 + k] = v[k]


@cuda.jit
def _load16_words(a, words):
    i = cuda.grid(1)
    if i * 8 < a.shape[0]:
        v = intrinsics.load16(a, i * 8)
        for k in range(4):
            words[i * 4 + k] = v[k]


@cuda.jit
def _load16_f16(a, out):
    # Eight halves per 16-byte load: low half of each word first (little-endian).
    i = cuda.grid(1)
    if i * 8 < a.shape[0]:
        v = intrinsics.load16(a, i * 8)
        for k in range(4):
            out[i * 8 + 2 * k] = intrinsics.f32_from_f16_bits(v[k] & 0xFFFF)
            out[i * 8 + 2 * k + 1] = intrinsics.f32_from_f16_bits(v[k] >> 16)


@cuda.jit
def _load16_bf16(a, out):
    # bfloat16 is the upper half of an fp32.
    i = cuda.grid(1)
    if i * 8 < a.shape[0]:
        v = intrinsics.load16(a, i * 8)
        for k in range(4):
            out[i * 8 + 2 * k] = intrinsics.f32_from_bits((v[k] & 0xFFFF) << 16)
            out[i * 8 + 2 * k + 1] = intrinsics.f32_from_bits(v[k] & 0xFFFF0000)


@cuda.jit
def _from_bits(bits, out):
    i = cuda.grid(1)
    if i < bits.shape[0]:
        out[i] = intrinsics.f32_from_bits(bits[i])


@cuda.jit
def _from_f16_bits(bits, out):
    i = cuda.grid(1)
    if i < bits.shape[0]:
        out[i] = intrinsics.f32_from_f16_bits(bits[i])


@cuda.jit
def _prefetch_then_copy(a, out):
    i = cuda.grid(1)
    if i < a.shape[0]:
        intrinsics.prefetch_l2_evict_last(a, i)
        intrinsics.prefetch_l1(a, i)
        out[i] = a[i]


@cuda.jit
def _load16_at(a, i, out):
    v = intrinsics.load16(a, i)
    out[0] = v[0]


SPECIALS = [0.0, -0.0, 1.0, -2.5, 65504.0, 6.1035156e-05, 5.9604645e-08, np.inf, -np.inf]


def _halves(n=32) -> np.ndarray:
    h = np.random.default_rng(0).standard_normal(n).astype(np.float16)
    h[: len(SPECIALS)] = SPECIALS
    return h


def test_load16_float32():
    a = np.random.default_rng(1).standard_normal(32).astype(np.float32)
    out = np.zeros_like(a)
    _load16_f32[2, 4](a, out)
    np.testing.assert_array_equal(out, a)


def test_load16_float16_gives_packed_words():
    h = _halves()
    words = np.zeros(16, np.uint32)
    _load16_words[1, 4](h, words)
    np.testing.assert_array_equal(words, h.view(np.uint32))


def test_load16_float16_unpacked():
    h = _halves()
    out = np.zeros(h.size, np.float32)
    _load16_f16[1, 4](h, out)
    np.testing.assert_array_equal(out, h.astype(np.float32))


def test_load16_bfloat16_unpacked():
    from dlrmlab.workload import cast_table, table_as_float32

    x = np.random.default_rng(2).standard_normal(32).astype(np.float32)
    x[:5] = [0.0, -0.0, 1.0, np.inf, -3.0e38]
    bf = cast_table(x, "bfloat16")
    out = np.zeros(bf.size, np.float32)
    _load16_bf16[1, 4](bf, out)
    np.testing.assert_array_equal(out, table_as_float32(bf, "bfloat16"))


def test_f32_from_bits():
    x = np.array([0.0, -0.0, 1.0, -1.5, 3.4028235e38, 1e-45, np.inf, -np.inf], np.float32)
    bits = x.view(np.uint32)
    out = np.zeros_like(x)
    _from_bits[1, 8](bits, out)
    np.testing.assert_array_equal(out, x)
    assert np.signbit(out[1])


def test_f32_from_f16_bits():
    h = _halves(16)
    out = np.zeros(h.size, np.float32)
    _from_f16_bits[1, 16](h.view(np.uint16), out)
    np.testing.assert_array_equal(out, h.astype(np.float32))


def test_prefetches_change_nothing():
    a = np.arange(10, dtype=np.float32)
    before = a.copy()
    out = np.zeros_like(a)
    _prefetch_then_copy[1, 16](a, out)
    np.testing.assert_array_equal(out, before)
    np.testing.assert_array_equal(a, before)


@simulator_only
@pytest.mark.parametrize(("dtype", "index"), [(np.float32, 1), (np.float32, 2), (np.float16, 4), (np.uint16, 1)])
def test_misaligned_load16_raises_in_simulator(dtype, index):
    a = np.zeros(32, dtype)
    out = np.zeros(1, np.float32 if dtype == np.float32 else np.uint32)
    with pytest.raises(AssertionError, match="misaligned"):
        _load16_at[1, 1](a, index, out)


@pytest.mark.parametrize(("dtype", "index"), [(np.float32, 4), (np.float16, 8), (np.uint16, 16)])
def test_aligned_load16_at_index(dtype, index):
    a = np.arange(32).astype(dtype)
    out = np.zeros(1, np.float32 if dtype == np.float32 else np.uint32)
    _load16_at[1, 1](a, index, out)
    want = a[index] if dtype == np.float32 else a[index : index + 2].view(np.uint32)[0]
    assert out[0] == want


@cuda.jit
def _byte_perm(x, y, s, out):
    i = cuda.grid(1)
    if i < s.shape[0]:
        out[i] = intrinsics.byte_perm(x[0], y[0], s[i])


def test_byte_perm_picks_bytes_of_y_x():
    """PTX ``prmt.b32``'s default mode: byte k of the result is byte ``(s >> 4k) & 7`` of ``y:x`` (here on the
    stand-in; on a GPU, libdevice's ``__nv_byte_perm``)."""
    x, y = np.array([0x03020100], np.int32), np.array([0x07060504], np.int32)
    s = np.array([0x3210, 0x7654, 0x0123, 0x7440, 0x7442], np.int32)
    out = np.zeros(s.size, np.int32)
    _byte_perm[1, 32](x, y, s, out)
    assert [int(v) & 0xFFFFFFFF for v in out] == [0x03020100, 0x07060504, 0x00010203, 0x07040400, 0x07040402]
