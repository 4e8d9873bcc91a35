"""Quantized row formats: FBGEMM's bytes (against fbgemm-gpu-cpu where it imports, and against golden bytes
worked out by hand from FBGEMM's formula), the torch quantizers, the fp8 codec and the dequantizer."""

from __future__ import annotations

import numpy as np
import pytest

from dlrmlab import quant
from dlrmlab.errors import DlrmlabError


def _fbgemm():
    """torch.ops.fbgemm with its row-wise ops, or a skip saying why not."""
    torch = pytest.importorskip("torch")
    try:
        import fbgemm_gpu  # noqa: F401  (registers torch.ops.fbgemm)

        torch.ops.fbgemm.FloatToFused8BitRowwiseQuantized  # noqa: B018
    except Exception as e:  # an ABI mismatch surfaces as OSError, RuntimeError or AttributeError
        pytest.skip(f"fbgemm-gpu-cpu is not importable with torch {torch.__version__} "
                    f"({type(e).__name__}: {str(e)[:120]}); install fbgemm-gpu-cpu==1.8.0 for torch 2.13")
    return torch


def _weights(rows: int, dim: int, dtype, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((rows, dim)) * rng.choice([1e-3, 0.1, 3.0, 100.0], (rows, 1))
    w[0], w[1] = 0.0, 1.5  # a constant row: range 0
    return w.astype(dtype)


@pytest.mark.torch
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("dim", [8, 40, 128])
def test_bytes_match_fbgemm(dtype, dim):
    torch = _fbgemm()
    w = _weights(300, dim, dtype)
    t = torch.from_numpy(w)
    ops = torch.ops.fbgemm
    int8 = ops.FloatToFused8BitRowwiseQuantized(t) if dtype == np.float32 else ops.HalfToFused8BitRowwiseQuantized(t)
    np.testing.assert_array_equal(quant.quantize(w, "int8"), int8.numpy())
    int4 = ops.FloatOrHalfToFusedNBitRowwiseQuantizedSBHalf(t, 4)
    np.testing.assert_array_equal(quant.quantize(w, "int4"), int4.numpy())
    # and FBGEMM's dequantizers agree with ours, bit for bit
    np.testing.assert_array_equal(quant.dequantize(int8.numpy(), "int8", dim),
                                  ops.Fused8BitRowwiseQuantizedToFloat(int8).numpy())
    np.testing.assert_array_equal(quant.dequantize(int4.numpy(), "int4", dim),
                                  ops.FusedNBitRowwiseQuantizedSBHalfToFloat(int4, 4).numpy())


def test_int8_golden_bytes():
    # range 255: inverse scale 255 / (255 + 1e-8) is 1.0 in fp32, so codes are the values rounded half to even
    w = np.array([[0.0, 2.5, 3.5, 255.0]], np.float32)
    want = [0, 2, 4, 255, *np.float32(1.0).tobytes(), *np.float32(0.0).tobytes()]
    assert quant.quantize(w, "int8").tolist() == [want]
    # range 2: inverse 127.5; (x + 1) * 127.5 = 0, 63.75, 191.25, 255
    w = np.array([[-1.0, -0.5, 0.5, 1.0]], np.float32)
    want = [0, 64, 191, 255, *np.float32(np.float32(2.0) / np.float32(255.0)).tobytes(), *np.float32(-1).tobytes()]
    assert quant.quantize(w, "int8").tolist() == [want]


def test_int4_golden_bytes():
    # min 1, range 15: scale 1, codes 0 1 2(.5) 15 4(3.5) 0 0 0, two per byte, low nibble first; fp16 1.0 = 0x3C00
    w = np.array([[1.0, 2.0, 3.5, 16.0, 4.5, 1.0, 1.0, 1.0]], np.float32)
    assert quant.quantize(w, "int4").tolist() == [[0x10, 0xF2, 0x04, 0x00, 0x00, 0x3C, 0x00, 0x3C]]
    # the bias is fp16(min) and the codes are taken from it: fp16(0.1) = 0x2E66 = 0.0999755859375
    w = np.array([[0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 1.6]], np.float32)
    q = quant.quantize(w, "int4")
    assert q[0, -2:].view(np.float16)[0] == np.float16(0.1) and q[0, -2:].tolist() == [0x66, 0x2E]
    scale = q[0, -4:-2].view(np.float16)[0]
    assert scale == np.float16((np.float32(1.6) - np.float32(np.float16(0.1))) / np.float32(15))
    assert q[0, 3] >> 4 == 15 and q[0, 0] == 0


def test_fp8_golden_bytes():
    # amax 448: no scaling. 448 = 0x7E, -1 = 0xB8, 0.5 = 0x30, 17 is a tie between 16 (0x58) and 18 (0x59): even
    w = np.array([[448.0, -1.0, 0.5, 17.0]], np.float32)
    assert quant.quantize(w, "fp8").tolist() == [[0x7E, 0xB8, 0x30, 0x58, *np.float32(1.0).tobytes()]]
    zero = quant.quantize(np.zeros((1, 4), np.float32), "fp8")
    assert zero.tolist() == [[0, 0, 0, 0, *np.float32(1.0).tobytes()]]


@pytest.mark.torch
def test_e4m3_codec_matches_torch():
    torch = pytest.importorskip("torch")
    vals = quant._E4M3_VALUES
    x = np.concatenate([vals, quant._E4M3_MIDS, -quant._E4M3_MIDS, np.nextafter(quant._E4M3_MIDS, 0),
                        np.random.default_rng(1).uniform(-448, 448, 5000)]).astype(np.float32)
    theirs = torch.from_numpy(x).to(torch.float8_e4m3fn).view(torch.uint8).numpy()
    np.testing.assert_array_equal(quant.e4m3_encode(x), theirs)
    codes = np.arange(256, dtype=np.uint8)
    finite = (codes & 0x7F) != 0x7F
    back = torch.from_numpy(codes).view(torch.float8_e4m3fn).float().numpy()
    np.testing.assert_array_equal(quant.e4m3_decode(codes)[finite], back[finite])


@pytest.mark.torch
@pytest.mark.parametrize("fmt", list(quant.FORMATS))
def test_torch_quantizer_gives_the_numpy_bytes(fmt):
    torch = pytest.importorskip("torch")
    for dtype in (np.float32, np.float16):
        w = _weights(400, 32, dtype, seed=3)
        np.testing.assert_array_equal(quant.quantize_torch(torch.from_numpy(w), fmt).numpy(), quant.quantize(w, fmt))


@pytest.mark.parametrize("fmt", list(quant.FORMATS))
def test_round_trip_error_within_half_a_step(fmt):
    w = _weights(200, 16, np.float32, seed=2)
    q = quant.quantize(w, fmt)
    assert q.shape == (200, quant.FORMATS[fmt].row_bytes(16))
    back = quant.dequantize(q, fmt, 16)
    _, scale, _ = quant.split_rows(q, fmt, 16)
    err = np.abs(back - w)
    if fmt == "fp8":  # 3 mantissa bits: half a step is at most 1/16 of the value (subnormals: of 2**-9 * scale)
        assert (err <= np.maximum(np.abs(w) / 16, 2.0**-10 * scale[:, None]) * 1.0001).all()
    else:  # int4's bias is fp16(min), so its first step can be a little over half
        slack = 1.0001 if fmt == "int8" else 1.01
        assert (err <= scale[:, None] * 0.5 * slack + 1e-6 * np.abs(w)).all()


def test_pack_rows_pads_to_16_bytes():
    w = _weights(5, 128, np.float32)
    for fmt, stride in (("int8", 144), ("int4", 80), ("fp8", 144)):
        q = quant.quantize(w, fmt)
        p = quant.pack_rows(q, fmt, 128)
        assert p.shape == (5, stride) and quant.FORMATS[fmt].row_stride(128) == stride
        np.testing.assert_array_equal(p[:, : q.shape[1]], q)
        assert not p[:, q.shape[1] :].any()
        np.testing.assert_array_equal(quant.dequantize(p, fmt, 128), quant.dequantize(q, fmt, 128))


def test_refusals():
    with pytest.raises(DlrmlabError, match="multiple of 8"):
        quant.quantize(np.zeros((2, 12), np.float32), "int4")
    with pytest.raises(DlrmlabError, match="NaN or infinite"):
        quant.quantize(np.full((2, 8), np.inf, np.float32), "int8")
    with pytest.raises(DlrmlabError, match="float32 or float16"):
        quant.quantize(np.zeros((2, 8), np.int32), "int8")
    with pytest.raises(DlrmlabError, match="valid: int8, int4, fp8"):
        quant.quantize(np.zeros((2, 8), np.float32), "int2")
    with pytest.raises(DlrmlabError, match="at least 16 bytes"):
        quant.dequantize(np.zeros((2, 12), np.uint8), "int8", 8)


def test_sectors_per_row():
    assert quant.sectors_per_row(512, 512) == 16  # fp32, 128 values
    assert quant.sectors_per_row(136, 144) == 5  # int8: starts at 0 and 16 of a sector, both span 5
    assert quant.sectors_per_row(68, 80) == 3  # int4
    assert quant.sectors_per_row(24, 32) == 1 and quant.sectors_per_row(24, 48) == 1.5  # 16..39 spans 2 sectors


@pytest.mark.torch
def test_quantize_fast_gives_the_same_bytes():
    pytest.importorskip("torch")
    w = _weights(50, 16, np.float32, seed=5)
    for fmt in quant.FORMATS:
        np.testing.assert_array_equal(quant.quantize_fast(w, fmt), quant.quantize(w, fmt))
