"""The fast kernel's row policies for quantized rows (:mod:`dlrmlab.quant`): load packed, dequantize in registers.

A lane's slice of a row stays packed while it is in flight: one 16-byte load holds 16 int8 or fp8 codes, or
32 int4 codes, in four uint32 words, plus one or two 4-byte words of scale and bias. Only when the row is
added are the codes unpacked (shift and mask; fp8 by moving its bits into an fp32 and rescaling) and turned
into ``scale * q + bias``, accumulated in fp32. Holding words instead of floats keeps ``rows_in_flight``
rows in few registers: an int8 row slice of 16 values is 6 words, not 16 floats.

Both policies have the float loaders' signatures (``load_row_slice(packed, row, held, slot)``, ``add_row(acc,
held, slot, f, present)``), so :func:`dlrmlab.kernels.fused.build` plugs them into the one skeleton.
"""

from __future__ import annotations

from numba import float32, uint32

from dlrmlab.backend import cuda
from dlrmlab.intrinsics import f32_from_bits, f32_from_f16_bits, load16_hinted, load32
from dlrmlab.quant import row_format

#: 2**120: an E4M3 value's bits shifted into an fp32 (exponent bias 127, not 7) are this much too small.
_E4M3_RESCALE = float32(2.0**120)


def words_per_load(vector: bool) -> int:
    """uint32 words a lane holds per load: a 16-byte vector, or one byte."""
    return 4 if vector else 1


def held_words(cfg) -> int:
    """Words a lane holds per row in flight: its codes, then the scale (and bias) words."""
    return cfg.vectors * words_per_load(cfg.vector) + 2


def slice_loader(cfg):
    """``load_row_slice(packed, row, held, slot)``: this lane's codes of the row (byte ``row`` of ``packed``),
    and the row's scale and bias words, into ``held[slot, :]``."""
    fmt = row_format(cfg.dtype)
    LANES, SLICES, VECTOR = cfg.lanes, cfg.vectors, cfg.vector
    STEP, WORDS = (16 if cfg.vector else 1), words_per_load(cfg.vector)
    DATA, META = fmt.data_bytes(cfg.dim), fmt.data_bytes(cfg.dim)
    EXACT = LANES * SLICES * STEP == DATA
    SECOND = fmt.has_bias and fmt.meta_dtype == "float32"  # int8: the bias is a second fp32 word
    S = SLICES * WORDS
    load16 = load16_hinted(cfg.load_hint)

    @cuda.jit(device=True, inline=True)
    def load_row_slice(packed, row, held, slot):
        lane = cuda.threadIdx.x % LANES
        for v in range(SLICES):
            b = (v * LANES + lane) * STEP
            if EXACT or b < DATA:
                if VECTOR:
                    x = load16(packed, row + b)
                    for k in range(4):
                        held[slot, v * 4 + k] = x[k]
                else:
                    held[slot, v] = uint32(packed[row + b])
            else:  # lanes past the row's codes: zeros (their columns are never written)
                for k in range(WORDS):
                    held[slot, v * WORDS + k] = uint32(0)
        held[slot, S] = load32(packed, row + META)
        if SECOND:
            held[slot, S + 1] = load32(packed, row + META + 4)

    return load_row_slice


def combiner(cfg):
    """``add_row(acc, held, slot, f, present) -> counted``: unpack the held codes, dequantize (times the row's
    factor ``f`` when rows have factors) and add; a tail's padding slot (``present`` False) adds nothing."""
    fmt = row_format(cfg.dtype)
    BITS, MASK = fmt.bits, (1 << fmt.bits) - 1
    PER_WORD = (32 if cfg.vector else 8) // fmt.bits
    N = cfg.vectors * words_per_load(cfg.vector)
    HALF_META, FP8 = fmt.meta_dtype == "float16", fmt.name == "fp8"
    FACTORS = cfg.combine.factors or cfg.checked

    @cuda.jit(device=True, inline=True)
    def add_row(acc, held, slot, f, present):
        if present:
            w = held[slot, N]
            if HALF_META:
                scale, bias = f32_from_f16_bits(w & 0xFFFF), f32_from_f16_bits(w >> 16)
            elif FP8:
                scale, bias = f32_from_bits(w), float32(0.0)
            else:
                scale, bias = f32_from_bits(w), f32_from_bits(held[slot, N + 1])
            if FACTORS:
                scale, bias = scale * f, bias * f
            for i in range(N):
                word = held[slot, i]
                for j in range(PER_WORD):
                    q = (word >> (BITS * j)) & MASK
                    if FP8:  # sign to bit 31, exponent and mantissa to bits 20..26: an fp32 2**120 too small
                        x = f32_from_bits(((q & 0x7F) << 20) | ((q & 0x80) << 24)) * _E4M3_RESCALE
                    else:
                        x = float32(q)
                    acc[i * PER_WORD + j] += x * scale + bias
        return 1 if present and f != 0 else 0

    return add_row
