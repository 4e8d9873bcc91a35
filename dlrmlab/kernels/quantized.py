"""The fast kernel's row policies for quantized rows (:mod:`dlrmlab.quant`): load packed, dequantize in registers.

A lane's slice of a row stays packed while it is in flight: one 16-byte load holds 16 int8 or fp8 codes, or
32 int4 codes, in four uint32 words, plus one or two 4-byte words of scale and bias. Only when the row is
added are the codes unpacked (a byte permute each; fp8 by moving its bits into an fp32 and rescaling) and
turned into ``scale * q`` (the bias once per row), accumulated in fp32. Holding words instead of floats
keeps ``rows_in_flight`` rows in few registers: an int8 row slice of 16 values is 6 words, not 16 floats.

Both policies have the float loaders' signatures (``load_row_slice(packed, row, held, slot)``, ``add_row(acc,
held, slot, f, present)``), so :func:`dlrmlab.kernels.fused.build` plugs them into the one skeleton.
"""

from __future__ import annotations

from numba import float32, int32, int64, uint32

from dlrmlab.backend import cuda
from dlrmlab.intrinsics import byte_perm, f32_from_bits, f32_from_f16_bits, load16_hinted, load32
from dlrmlab.quant import row_format

#: 2**120: an E4M3 value's bits shifted into an fp32 (exponent bias 127, not 7) are this much too small.
_E4M3_RESCALE = float32(2.0**120)
#: 2**23's fp32 bits: a code byte in the low mantissa byte of these bits is the float 2**23 + code.
_TWO_POW_23_BITS = int32(0x4B000000)
#: byte_perm selectors: byte k of x to byte 0 over 2**23's bits (| k); byte k of x to the top, zeros below
_TO_MANTISSA, _TO_TOP = 0x7440, 0x0444
_LOW_NIBBLES = uint32(0x0F0F0F0F)
#: after the arithmetic shift of a top-byte fp8 code by 4: its sign (bit 31) and its 7 bits at 26..20
_FP8_KEEP = 0x87FFFFFF


def centred_code(mid: int):
    """``code(word, k)``: byte ``k`` of ``word`` as the float ``q - mid``. The byte is written into the mantissa
    of 2**23, and one exact subtraction of ``2**23 + mid`` leaves ``q - mid``."""
    OFFSET = float32(2.0**23 + mid)

    @cuda.jit(device=True, inline=True)
    def code(word, k):
        return f32_from_bits(byte_perm(int32(word), _TWO_POW_23_BITS, int32(_TO_MANTISSA | k))) - OFFSET

    return code


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
    DATA = META = fmt.data_bytes(cfg.dim)  # the scale (and bias) follow the codes
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


def bias_slot(cfg) -> bool:
    """Whether rows carry a bias, summed once per row into one extra accumulator slot (not once per value)."""
    return row_format(cfg.dtype).has_bias


def combiner(cfg):
    """``add_row(acc, held, slot, f, present) -> counted``: unpack the held codes, dequantize (times the row's
    factor ``f`` when rows have factors) and add; a tail's padding slot (``present`` False) adds nothing.

    Integer codes become floats without a conversion instruction (a quarter-rate one on GPUs): ``byte_perm``
    writes a code byte into the mantissa of 2**23 (``0x4B0000qq`` is ``2**23 + q``), and one exact subtraction
    leaves ``q``, so a value costs a permute, a subtraction and a fused multiply-add. int4 first spreads its
    nibbles into bytes (two masks per word). The row's bias is added once, into ``acc[ACC]``; the writer adds
    that slot to every column. An fp8 code moves to the top byte, an arithmetic shift puts its exponent and
    mantissa in an fp32's low exponent bits (sign kept by the mask), and ``2**120`` rescales it exactly.

    Integer codes are centred (``q - MID``, MID the middle code, 128 or 8) and the bias moved by ``MID * scale``
    to match: ``scale * q + bias == scale * (q - MID) + (bias + MID * scale)``. Uncentred, the codes' sums and
    the biases' sum grow apart (about +-375 each for 150 int8 rows of N(0, 1) values) and cancel in the last
    addition; in the simulator that made int8 bags 5x less accurate than adding each value whole, and the
    H100 test at width 128 failed its 1e-4 tolerance. Centred, both sums stay near the bag's values."""
    fmt = row_format(cfg.dtype)
    N = cfg.vectors * words_per_load(cfg.vector)
    BYTES = 4 if cfg.vector else 1  # code bytes per held word
    HALF_META, FP8, INT4, BIAS = fmt.meta_dtype == "float16", fmt.name == "fp8", fmt.bits == 4, fmt.has_bias
    ACC = N * BYTES * fmt.values_per_byte()
    FACTORS = cfg.combine.factors or cfg.checked
    mid = (1 << fmt.bits) // 2 if BIAS else 0
    MID, code = float32(mid), centred_code(mid)

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
            if BIAS:
                bias += MID * scale
            for i in range(N):
                word = held[slot, i]
                if INT4:  # nibbles 2k and 2k+1 of the word into byte k of two words
                    lo, hi = word & _LOW_NIBBLES, (word >> 4) & _LOW_NIBBLES
                    for k in range(BYTES):
                        acc[(i * BYTES + k) * 2] += code(lo, k) * scale
                        acc[(i * BYTES + k) * 2 + 1] += code(hi, k) * scale
                elif FP8:
                    for k in range(BYTES):
                        top = int64(byte_perm(int32(word), int32(0), int32(_TO_TOP | (k << 12))))
                        x = f32_from_bits((top >> 4) & _FP8_KEEP) * _E4M3_RESCALE
                        acc[i * BYTES + k] += x * scale
                else:
                    for k in range(BYTES):
                        acc[i * BYTES + k] += code(word, k) * scale
            if BIAS:
                acc[ACC] += bias
        return 1 if present and f != 0 else 0

    return add_row
