"""Quantized table rows: FBGEMM's fused row-wise int8 and int4 layouts, and fp8 (e4m3) rows with a scale.

The embedding stage is bound by bytes moved, so production inference stores rows in fewer bytes with a
per-row scale (and bias). One row of ``dim`` values is stored as a byte string:

=========  ==========================================================  ===========================  ==============
format     data bytes                                                  then, at the row's end       dequantized
=========  ==========================================================  ===========================  ==============
``int8``   ``dim`` uint8 codes                                         fp32 scale, fp32 bias        scale * q + bias
``int4``   ``ceil(dim / 2)`` bytes, two codes each, low nibble first   fp16 scale, fp16 bias        scale * q + bias
``fp8``    ``dim`` OCP fp8 E4M3FN values (bias 7, max 448, no inf)     fp32 scale                   scale * x
=========  ==========================================================  ===========================  ==============

``int8`` is FBGEMM's ``FloatToFused8BitRowwiseQuantized`` (``FloatOrHalfToFused8BitRowwiseQuantizedSBFloat``
in ``src/QuantUtils.cc``): scale = (max - min) / 255, bias = min, q = round-half-even((x - min) * 255 /
(max - min + 1e-8)), all in fp32. ``int4`` is ``FloatToFusedNBitRowwiseQuantizedSBHalf`` with bit rate 4:
bias = fp16(min), range = max - float(bias), scale = fp16(range / 15) (1 when range or the fp16 scale is 0,
or its inverse overflows), q = clamp(round-half-even((x - bias) / scale), 0, 15) computed as ``(x - bias) *
(1 / scale)``. Both quantizers here give FBGEMM's bytes exactly (tests compare with ``fbgemm-gpu-cpu``).

FBGEMM has no CPU op for an e4m3 row with a per-row scale: its ``FloatToFP8RowwiseQuantized`` (GPU only)
stores its own "hfp8" (4 exponent bits, exponent bias 15, values scaled into +-0.9375) followed by an fp32
scale and 4 unused bytes; its inference TBE's ``FP8`` rows carry no scale. dlrmlab's ``fp8`` is the OCP
E4M3FN of ``torch.float8_e4m3fn`` and ``__nv_fp8_e4m3``: scale = amax / 448 (1 for an all-zero row), x =
e4m3(w * (448 / amax)) rounded to nearest even, saturated at +-448.

In a packed buffer (:func:`pack_rows`) each row starts on a 16-byte boundary, as FBGEMM's inference TBE
pads rows to ``row_alignment`` 16: 16-byte vector loads then read a row's codes, and the scale (and bias)
is one aligned 4-byte load (hence ``dim`` a multiple of 4 for int8 and fp8, of 8 for int4).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from dlrmlab.config import TABLE_DTYPES, table_dtype
from dlrmlab.errors import DlrmlabError

#: Rows of a packed buffer start on this boundary (FBGEMM's inference TBE ``row_alignment`` on GPUs).
ROW_ALIGN = 16
#: Largest finite E4M3FN value.
E4M3_MAX = 448.0
_INT8_EPS = np.float32(1e-8)


@dataclass(frozen=True)
class RowFormat:
    """One quantized row layout: how many bits a value takes and what follows the codes."""

    name: str
    bits: int
    #: bytes after the codes: scale (and bias)
    meta_bytes: int
    #: dtype of the scale (and bias)
    meta_dtype: str
    has_bias: bool
    #: dim must be a multiple of this (the scale is one aligned 4-byte load)
    dim_multiple: int
    #: the FBGEMM op whose rows these are byte for byte ("" when FBGEMM has none)
    fbgemm: str

    def data_bytes(self, dim: int) -> int:
        return -(-dim * self.bits // 8)

    def row_bytes(self, dim: int) -> int:
        """Bytes of one row as FBGEMM's op returns it (codes, then scale and bias)."""
        return self.data_bytes(dim) + self.meta_bytes

    def row_stride(self, dim: int) -> int:
        """Bytes from one row to the next in a packed buffer (rows padded to :data:`ROW_ALIGN`)."""
        return -(-self.row_bytes(dim) // ROW_ALIGN) * ROW_ALIGN

    def values_per_byte(self) -> int:
        return 8 // self.bits

    def check_dim(self, dim: int) -> int:
        if dim <= 0 or dim % self.dim_multiple:
            raise DlrmlabError(f"{self.name} rows need dim to be a positive multiple of {self.dim_multiple} (the "
                               f"row's scale is one aligned 4-byte load), got {dim}")
        return dim

    def params(self, dim: int) -> dict:
        """What a result row records about the format."""
        return {"table_format": self.name, "row_bytes": self.row_bytes(dim), "row_stride": self.row_stride(dim)}


FORMATS: dict[str, RowFormat] = {
    "int8": RowFormat("int8", 8, 8, "float32", True, 4, "FloatToFused8BitRowwiseQuantized"),
    "int4": RowFormat("int4", 4, 4, "float16", True, 8, "FloatToFusedNBitRowwiseQuantizedSBHalf(bit_rate=4)"),
    "fp8": RowFormat("fp8", 8, 4, "float32", False, 4, ""),
}


def row_format(name: str) -> RowFormat:
    """The format called ``name``; else a DlrmlabError naming the valid ones."""
    if name not in FORMATS:
        raise DlrmlabError(f"unknown quantized row format {name!r}; valid: {', '.join(FORMATS)}")
    return FORMATS[name]


def sectors_per_row(row_bytes: int, stride: int, sector: int = 32) -> float:
    """32-byte sectors one row read touches, averaged over where rows start in a buffer of rows ``stride``
    apart (the buffer sector-aligned): a 136-byte int8 row at stride 144 touches 5, a 512-byte fp32 row 16."""
    period = sector // math.gcd(int(stride), sector)
    starts = [(k * int(stride)) % sector for k in range(period)]
    return sum((s + int(row_bytes) - 1) // sector + 1 for s in starts) / period


def dim_from_row_bytes(fmt: str, width: int) -> int:
    """The dim of rows ``width`` bytes wide in ``fmt`` (as FBGEMM's dequantize ops infer it)."""
    f = row_format(fmt)
    dim = (int(width) - f.meta_bytes) * f.values_per_byte()
    if dim <= 0 or f.row_bytes(dim) != width:
        raise DlrmlabError(f"{fmt} rows cannot be {width} bytes wide (codes + {f.meta_bytes} bytes of scale/bias)")
    return dim


def is_quantized(dtype: str) -> bool:
    """Whether a table dtype name is a quantized row format."""
    return dtype in FORMATS


def vector_values(dtype: str) -> int:
    """Values one 16-byte load holds, of a float table dtype (``config.TABLE_DTYPES``) or a row format."""
    return 16 * row_format(dtype).values_per_byte() if is_quantized(dtype) else table_dtype(dtype).vector


# --- NumPy ---------------------------------------------------------------------------------------------------


def _float_rows(weight: Any, fmt: RowFormat) -> np.ndarray:
    w = np.asarray(weight)
    if w.ndim != 2:
        raise DlrmlabError(f"weight must be 2-D (num_embeddings, embedding_dim), got shape {w.shape}")
    if w.dtype not in (np.float32, np.float16):
        raise DlrmlabError(f"quantizing needs float32 or float16 weights, got {w.dtype}")
    fmt.check_dim(w.shape[1])
    w = w.astype(np.float32)
    if w.size and not np.isfinite(w).all():
        raise DlrmlabError("weight holds NaN or infinite values: they have no quantized form")
    return w


def _int8(w: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    lo, hi = w.min(1), w.max(1)
    rng = hi - lo
    inv = np.float32(255.0) / (rng + _INT8_EPS)
    q = np.clip(np.rint((w - lo[:, None]) * inv[:, None]), 0, 255).astype(np.uint8)
    return q, [rng / np.float32(255.0), lo]


def _int4(w: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    lo, hi = w.min(1), w.max(1)
    bias = lo.astype(np.float16)
    lo = bias.astype(np.float32)
    rng = hi - lo
    scale = np.where(rng == 0, np.float32(1.0), rng / np.float32(15.0)).astype(np.float16).astype(np.float32)
    scale[scale == 0] = 1.0
    with np.errstate(divide="ignore", over="ignore"):
        inv = np.float32(1.0) / scale
    bad = np.isinf(inv)
    scale[bad], inv[bad] = 1.0, 1.0
    with np.errstate(invalid="ignore"):
        q = np.clip(np.rint((w - lo[:, None]) * inv[:, None]), 0, 15).astype(np.uint8)
    return q[:, 0::2] | (q[:, 1::2] << 4), [scale.astype(np.float16), bias]


def _e4m3_table() -> tuple[np.ndarray, np.ndarray]:
    """Values of the non-negative finite E4M3FN codes 0..126, and the midpoints between neighbours."""
    codes = np.arange(127)
    e, m = codes >> 3, codes & 7
    vals = np.where(e == 0, m * 2.0**-9, (8 + m) * 2.0 ** (e - 10.0))
    return vals, (vals[:-1] + vals[1:]) / 2


_E4M3_VALUES, _E4M3_MIDS = _e4m3_table()


def e4m3_encode(x: np.ndarray) -> np.ndarray:
    """fp32 -> E4M3FN codes (uint8), round to nearest even, saturating at +-448 (as torch's cast, then clamp).

    Normal values: the fp32 mantissa rounded to 3 bits on the bit pattern (add 0x7FFFF plus the lowest kept
    bit, then truncate), the exponent rebiased from 127 to 7. Below 2**-6 (subnormal; step 2**-9): the code is
    the value in steps, rounded half to even (8 is the smallest normal, 2**-6, whose code is 8 too)."""
    x = np.asarray(x, np.float32)
    a = np.minimum(np.abs(x), np.float32(E4M3_MAX))
    bits = a.view(np.uint32)
    r = (bits + (np.uint32(0x7FFFF) + ((bits >> 20) & 1))) & np.uint32(0xFFF00000)
    normal = (((r >> 23).astype(np.int32) - 120) << 3) | ((r >> 20) & 7).astype(np.int32)
    code = np.where(a < np.float32(2.0**-6), np.rint(a * np.float32(512.0)).astype(np.int32), normal).astype(np.uint8)
    return code | (np.signbit(x).astype(np.uint8) << 7)


def e4m3_decode(code: np.ndarray) -> np.ndarray:
    """E4M3FN codes -> fp32 (the codes a quantizer writes: no NaN)."""
    c = np.asarray(code, np.uint8)
    v = _E4M3_VALUES[np.minimum(c & 0x7F, 126)].astype(np.float32)
    return np.where(c & 0x80, -v, v)


def _fp8(w: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    amax = np.abs(w).max(1)
    zero = amax == 0
    safe = np.where(zero, np.float32(E4M3_MAX), amax)
    inv = np.float32(E4M3_MAX) / safe
    scale = np.where(zero, np.float32(1.0), amax / np.float32(E4M3_MAX)).astype(np.float32)
    return e4m3_encode(w * inv[:, None]), [scale]


_QUANTIZERS = {"int8": _int8, "int4": _int4, "fp8": _fp8}


def quantize(weight: Any, fmt: str) -> np.ndarray:
    """fp32/fp16 rows -> ``(rows, row_bytes)`` uint8, each row in ``fmt``'s layout (FBGEMM's bytes for int8/int4)."""
    f = row_format(fmt)
    w = _float_rows(weight, f)
    codes, meta = _QUANTIZERS[f.name](w)
    tail = [np.ascontiguousarray(m.astype(f.meta_dtype)).view(np.uint8).reshape(-1, np.dtype(f.meta_dtype).itemsize)
            for m in meta]
    return np.ascontiguousarray(np.concatenate([codes, *tail], axis=1))


def split_rows(rows: np.ndarray, fmt: str, dim: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``(codes, scale, bias or None)`` of quantized rows (``rows`` may carry padding past ``row_bytes``)."""
    f = row_format(fmt)
    rows = np.ascontiguousarray(np.asarray(rows))
    if rows.dtype != np.uint8 or rows.ndim != 2 or rows.shape[1] < f.row_bytes(dim):
        raise DlrmlabError(f"{fmt} rows of dim {dim} must be a 2-D uint8 array of at least {f.row_bytes(dim)} "
                           f"bytes per row, got {rows.dtype} {rows.shape}")
    nd, m = f.data_bytes(dim), np.dtype(f.meta_dtype)
    meta = np.ascontiguousarray(rows[:, nd : nd + f.meta_bytes]).view(m).astype(np.float32)
    return rows[:, :nd], meta[:, 0], meta[:, 1] if f.has_bias else None


def dequantize(rows: np.ndarray, fmt: str, dim: int) -> np.ndarray:
    """Quantized rows -> fp32 ``(rows, dim)``, as FBGEMM's ``...ToFloat`` ops compute it (one rounding)."""
    f = row_format(fmt)
    codes, scale, bias = split_rows(rows, fmt, dim)
    if f.name == "fp8":
        return (e4m3_decode(codes) * scale[:, None]).astype(np.float32)
    if f.bits == 4:
        codes = np.stack([codes & 0xF, codes >> 4], axis=2).reshape(codes.shape[0], -1)[:, :dim]
    out = codes.astype(np.float64) * scale.astype(np.float64)[:, None] + bias.astype(np.float64)[:, None]
    return out.astype(np.float32)


def pack_rows(rows: np.ndarray, fmt: str, dim: int) -> np.ndarray:
    """Quantized rows padded with zeros to :meth:`RowFormat.row_stride` bytes: ``(rows, stride)`` uint8."""
    f = row_format(fmt)
    codes_meta = np.asarray(rows)
    split_rows(codes_meta, fmt, dim)  # validates
    out = np.zeros((codes_meta.shape[0], f.row_stride(dim)), np.uint8)
    out[:, : f.row_bytes(dim)] = codes_meta[:, : f.row_bytes(dim)]
    return out


# --- torch (imported by the caller: torch is an optional dependency) -------------------------------------------


def quantize_torch(weight: Any, fmt: str) -> Any:
    """:func:`quantize` for a torch tensor (any device): a uint8 tensor with the same bytes as the NumPy one."""
    import torch  # optional dependency

    f = row_format(fmt)
    if weight.dim() != 2 or weight.dtype not in (torch.float32, torch.float16):
        raise DlrmlabError(f"quantizing needs a 2-D float32 or float16 tensor, got {weight.dtype} "
                           f"{tuple(weight.shape)}")
    f.check_dim(int(weight.shape[1]))
    w = weight.float()
    if w.numel() and not bool(torch.isfinite(w).all()):
        raise DlrmlabError("weight holds NaN or infinite values: they have no quantized form")
    if f.name == "int8":
        lo, hi = w.amin(1), w.amax(1)
        rng = hi - lo
        inv = torch.full_like(rng, 255.0) / (rng + float(_INT8_EPS))  # scalar / tensor is a reciprocal
        codes = torch.round((w - lo[:, None]) * inv[:, None]).clamp(0, 255).to(torch.uint8)
        meta = [rng / 255.0, lo]
    elif f.name == "int4":
        bias = w.amin(1).half()
        lo = bias.float()
        rng = w.amax(1) - lo
        scale = torch.where(rng == 0, torch.ones_like(rng), rng / 15.0).half().float()
        scale = torch.where(scale == 0, torch.ones_like(scale), scale)
        inv = torch.ones_like(scale) / scale
        bad = torch.isinf(inv)
        scale, inv = torch.where(bad, 1.0, scale), torch.where(bad, 1.0, inv)
        q = torch.round((w - lo[:, None]) * inv[:, None]).clamp(0, 15).to(torch.uint8)
        codes = q[:, 0::2] | (q[:, 1::2] << 4)
        meta = [scale.half(), bias]
    else:
        amax = w.abs().amax(1)
        zero = amax == 0
        inv = torch.full_like(amax, E4M3_MAX) / torch.where(zero, torch.full_like(amax, E4M3_MAX), amax)
        x = (w * inv[:, None]).clamp(-E4M3_MAX, E4M3_MAX)
        codes = x.to(torch.float8_e4m3fn).view(torch.uint8)
        meta = [torch.where(zero, torch.ones_like(amax), amax / E4M3_MAX)]
    tail = [m.to(getattr(torch, f.meta_dtype)).contiguous().view(torch.uint8).reshape(w.shape[0], -1) for m in meta]
    return torch.cat([codes, *tail], dim=1).contiguous()


def quantize_fast(weight: np.ndarray, fmt: str) -> np.ndarray:
    """:func:`quantize`'s bytes, computed by torch where it imports (on the GPU when there is one: NumPy takes
    minutes for the paper's 6 million rows), else by NumPy."""
    try:
        import torch  # optional dependency
    except ImportError:
        return quantize(weight, fmt)
    w = np.asarray(weight)
    if w.ndim != 2 or w.dtype not in (np.float32, np.float16):
        return quantize(w, fmt)  # its own refusals
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return quantize_torch(torch.from_numpy(np.ascontiguousarray(w)).to(device), fmt).cpu().numpy()


def dequantize_torch(rows: Any, fmt: str, dim: int) -> Any:
    """:func:`dequantize` for a uint8 torch tensor (any device; rows may carry padding): fp32 ``(rows, dim)``,
    ``scale * q + bias`` in fp32 (within an ulp of FBGEMM's single rounding)."""
    import torch  # optional dependency

    f = row_format(fmt)
    nd = f.data_bytes(dim)
    meta = rows[:, nd : nd + f.meta_bytes].contiguous().view(getattr(torch, f.meta_dtype)).float()
    codes = rows[:, :nd]
    if f.name == "fp8":
        return codes.contiguous().view(torch.float8_e4m3fn).float() * meta[:, :1]
    if f.bits == 4:
        codes = torch.stack([codes & 0xF, codes >> 4], dim=2).reshape(codes.shape[0], -1)[:, :dim]
    return codes.float() * meta[:, :1] + meta[:, 1:2]


def storage(fmt: str, dim: int) -> dict:
    """Bytes per row of a format (as stored: codes, scale and bias), its 16-byte-padded stride, bits a value,
    and the 32-byte sectors a lookup of it reads."""
    if fmt in FORMATS:
        f = row_format(fmt)
        row, stride, bits = f.row_bytes(dim), f.row_stride(dim), f.bits
    else:
        row, stride, bits = dim * TABLE_DTYPES[fmt].bytes, dim * TABLE_DTYPES[fmt].bytes, 8 * TABLE_DTYPES[fmt].bytes
    return {"row_bytes": row, "row_stride": stride, "bits_per_value": bits,
            "sectors_per_row": sectors_per_row(row, stride)}
