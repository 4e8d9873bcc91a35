"""Custom PTX that Numba does not expose, each with a simulator stand-in, all in this one module.

* ``prefetch_l2_evict_last(a, i)`` — ``prefetch.global.L2::evict_last``: bring ``a[i]``'s line into L2 and
  mark it last to evict (the paper's L2 pinning, L2P).
* ``prefetch_l1(a, i)`` — ``prefetch.global.L1``: the paper's L1 software-prefetch variant.
* ``load16(a, i)`` — one 16-byte read-only vector load (``ld.global.nc.v4``) starting at element ``i``:
  four float32 for a float32 array, four uint32 (eight packed 16-bit values) for a 16-bit array, four uint32
  (sixteen bytes, the first in the low bits) for a byte array (quantized rows). The caller
  guarantees 16-byte alignment (the host validates base pointer and row width); the simulator stand-in
  asserts it so CI catches a misaligned use. ``load16_hinted(hint)`` is the same load with PTX cache
  qualifiers (:data:`LOAD_HINTS`): ``L1::no_allocate`` (rows read once need no L1 line) and ``L2::256B``
  (a miss fetches the whole 256-byte block from DRAM, not only the sectors asked for).
* ``load32(a, i)`` — one 4-byte read-only load (``ld.global.nc.u32``) of a byte array at byte ``i`` (4-byte
  aligned): a quantized row's scale and bias, as a uint32 bit pattern.
* ``f32_from_bits(u)``, ``f32_from_f16_bits(u)`` — reinterpret bits (bf16 is the upper half of an fp32).
* ``byte_perm(x, y, s)`` — PTX ``prmt.b32`` (libdevice ``__nv_byte_perm``): byte ``k`` of the result is byte
  ``(s >> 4k) & 7`` of the eight bytes of ``y:x``; one instruction puts a code byte into a float's mantissa.

On the GPU these are Numba intrinsics emitting inline PTX; in the simulator, plain Python doing the same
arithmetic (prefetches become no-ops: they change timing, never results).
"""

from __future__ import annotations

import numpy as np

from dlrmlab.backend import SIMULATOR, cuda
from dlrmlab.errors import DlrmlabError

#: Cache qualifiers a 16-byte load may carry (PTX spelling, "" for none).
LOAD_HINTS = ("", "L1::no_allocate", "L2::256B", "L1::no_allocate.L2::256B")


def check_load_hint(hint: str) -> str:
    """``hint`` if it is one of :data:`LOAD_HINTS`; else a DlrmlabError naming them."""
    if hint not in LOAD_HINTS:
        raise DlrmlabError(f"load_hint must be one of {', '.join(repr(h) for h in LOAD_HINTS)}; got {hint!r}")
    return hint


if SIMULATOR:

    def _byte_offset_ok(a, i) -> bool:
        return (int(i) * a.dtype.itemsize) % 16 == 0

    @cuda.jit(device=True)
    def prefetch_l2_evict_last(a, i):
        assert 0 <= i < a.shape[0]

    @cuda.jit(device=True)
    def prefetch_l1(a, i):
        assert 0 <= i < a.shape[0]

    @cuda.jit(device=True)
    def load16(a, i):
        assert _byte_offset_ok(a, i), "load16: misaligned 16-byte load"
        if a.dtype.itemsize == 4:
            return (a[i], a[i + 1], a[i + 2], a[i + 3])
        if a.dtype.itemsize == 1:
            return tuple(np.asarray(a[i + 4 * k : i + 4 * k + 4]).view(np.uint32)[0] for k in range(4))
        words = []
        for k in range(4):
            lo = int(np.asarray(a[i + 2 * k]).view(np.uint16))
            hi = int(np.asarray(a[i + 2 * k + 1]).view(np.uint16))
            words.append(np.uint32(lo | (hi << 16)))
        return tuple(words)

    def load16_hinted(hint: str):
        check_load_hint(hint)
        return load16  # cache hints change timing, never results

    @cuda.jit(device=True)
    def load32(a, i):
        assert a.dtype.itemsize == 1 and int(i) % 4 == 0, "load32: a 4-byte-aligned offset into a byte array"
        return np.asarray(a[i : i + 4]).view(np.uint32)[0]

    @cuda.jit(device=True)
    def f32_from_bits(u):
        return np.asarray(np.uint32(u)).view(np.float32)[()]

    @cuda.jit(device=True)
    def f32_from_f16_bits(u):
        return np.float32(np.asarray(np.uint16(u)).view(np.float16)[()])

    @cuda.jit(device=True)
    def byte_perm(x, y, s):
        b = (int(x) & 0xFFFFFFFF) | ((int(y) & 0xFFFFFFFF) << 32)
        r = sum(((b >> (8 * ((int(s) >> (4 * k)) & 7))) & 0xFF) << (8 * k) for k in range(4))
        return np.asarray(np.uint32(r)).view(np.int32)[()]  # libdevice's type: int32

else:
    from llvmlite import ir
    from numba import types
    from numba.cuda import cgutils, libdevice
    from numba.cuda.extending import intrinsic

    byte_perm = libdevice.byte_perm

    def _element_pointer(context, builder, arrty, arr, idx):
        ary = context.make_array(arrty)(context, builder, value=arr)
        return cgutils.get_item_pointer(context, builder, arrty, ary, [idx])

    def _prefetch(instruction: str):
        @intrinsic
        def impl(typingctx, a, i):
            if not isinstance(a, types.Array) or a.ndim != 1 or not isinstance(i, types.Integer):
                return None

            def codegen(context, builder, sig, args):
                ptr = _element_pointer(context, builder, sig.args[0], args[0], args[1])
                fty = ir.FunctionType(ir.VoidType(), [ptr.type])
                asm = ir.InlineAsm(fty, f"{instruction} [$0];", "l", side_effect=True)
                builder.call(asm, [ptr])
                return context.get_dummy_value()

            return types.void(a, i), codegen

        return impl

    prefetch_l2_evict_last = _prefetch("prefetch.global.L2::evict_last")
    prefetch_l1 = _prefetch("prefetch.global.L1")

    _HINTED: dict = {}

    def load16_hinted(hint: str):
        """The 16-byte load with cache qualifiers ``hint`` (one intrinsic per hint)."""
        if check_load_hint(hint) not in _HINTED:
            _HINTED[hint] = _load16("ld.global.nc" + (f".{hint}" if hint else ""))
        return _HINTED[hint]

    def _load16(instruction: str):
        @intrinsic
        def impl(typingctx, a, i):
            if not isinstance(a, types.Array) or a.ndim != 1 or not isinstance(i, types.Integer):
                return None
            width = a.dtype.bitwidth
            if width == 32 and isinstance(a.dtype, types.Float):
                elem, lt, cons, suffix = types.float32, ir.FloatType(), "f", "f32"
            elif width in (8, 16):
                elem, lt, cons, suffix = types.uint32, ir.IntType(32), "r", "u32"
            else:
                return None
            rettype = types.UniTuple(elem, 4)

            def codegen(context, builder, sig, args):
                ptr = _element_pointer(context, builder, sig.args[0], args[0], args[1])
                sty = ir.LiteralStructType([lt] * 4)
                fty = ir.FunctionType(sty, [ptr.type])
                asm = ir.InlineAsm(
                    fty, f"{instruction}.v4.{suffix} {{$0, $1, $2, $3}}, [$4];", f"={cons},={cons},={cons},={cons},l"
                )
                res = builder.call(asm, [ptr])
                vals = [builder.extract_value(res, k) for k in range(4)]
                return context.make_tuple(builder, sig.return_type, vals)

            return rettype(a, i), codegen

        return impl

    load16 = load16_hinted("")

    @intrinsic
    def load32(typingctx, a, i):
        if not isinstance(a, types.Array) or a.ndim != 1 or a.dtype.bitwidth != 8 or not isinstance(i, types.Integer):
            return None

        def codegen(context, builder, sig, args):
            ptr = _element_pointer(context, builder, sig.args[0], args[0], args[1])
            fty = ir.FunctionType(ir.IntType(32), [ptr.type])
            return builder.call(ir.InlineAsm(fty, "ld.global.nc.u32 $0, [$1];", "=r,l"), [ptr])

        return types.uint32(a, i), codegen

    @intrinsic
    def f32_from_bits(typingctx, u):
        if not isinstance(u, types.Integer):
            return None

        def codegen(context, builder, sig, args):
            v = context.cast(builder, args[0], sig.args[0], types.uint32)
            return builder.bitcast(v, ir.FloatType())

        return types.float32(u), codegen

    @intrinsic
    def f32_from_f16_bits(typingctx, u):
        if not isinstance(u, types.Integer):
            return None

        def codegen(context, builder, sig, args):
            v = context.cast(builder, args[0], sig.args[0], types.uint16)
            fty = ir.FunctionType(ir.FloatType(), [ir.IntType(16)])
            return builder.call(ir.InlineAsm(fty, "cvt.f32.f16 $0, $1;", "=f,h"), [v])

        return types.float32(u), codegen
