"""Element loaders: how a kernel turns table storage (fp32, fp16, bf16-as-uint16) into fp32.

Tables are passed to kernels flattened to 1-D (row-major, row stride = dim) so that every loader and
intrinsic addresses them the same way.
"""

from __future__ import annotations

from numba import float32, uint32

from dlrmlab.backend import cuda
from dlrmlab.errors import DlrmlabError
from dlrmlab.intrinsics import LOAD_HINTS, check_load_hint, f32_from_bits, f32_from_f16_bits, load16, load16_hinted

#: Elements in one 16-byte vector load, per table dtype.
VECTOR_ELEMS = {"float32": 4, "float16": 8, "bfloat16": 8}


def scalar_loader(dtype: str):
    """Device function ``load(weight, i) -> float32`` for one element."""
    if dtype == "float32":

        @cuda.jit(device=True, inline=True)
        def load_f32(w, i):
            return w[i]

        return load_f32
    if dtype == "float16":

        @cuda.jit(device=True, inline=True)
        def load_f16(w, i):
            return float32(w[i])

        return load_f16
    if dtype == "bfloat16":

        @cuda.jit(device=True, inline=True)
        def load_bf16(w, i):
            return f32_from_bits(uint32(w[i]) << 16)

        return load_bf16
    raise DlrmlabError(f"unknown table dtype {dtype!r}")


def unpack_lo(dtype: str):
    """Device function: the fp32 value of the low 16-bit half of a packed word."""
    if dtype == "float16":

        @cuda.jit(device=True, inline=True)
        def lo_f16(u):
            return f32_from_f16_bits(u & 0xFFFF)

        return lo_f16

    @cuda.jit(device=True, inline=True)
    def lo_bf16(u):
        return f32_from_bits(u << 16)

    return lo_bf16


def unpack_hi(dtype: str):
    """Device function: the fp32 value of the high 16-bit half of a packed word."""
    if dtype == "float16":

        @cuda.jit(device=True, inline=True)
        def hi_f16(u):
            return f32_from_f16_bits(u >> 16)

        return hi_f16

    @cuda.jit(device=True, inline=True)
    def hi_bf16(u):
        return f32_from_bits(u & 0xFFFF0000)

    return hi_bf16


__all__ = ["LOAD_HINTS", "VECTOR_ELEMS", "check_load_hint", "load16", "load16_hinted", "scalar_loader", "unpack_hi",
           "unpack_lo"]
