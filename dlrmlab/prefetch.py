"""Software prefetching (the paper's RPF and the two other forms it tried), as bag-loop policies.

A bag loop is the inner loop of PyTorch's embedding-bag kernel: one thread walks one bag's ids and sums
one feature column. Each policy builds that loop as a Numba device function

    bag_loop(weight, dim, indices, psw, begin, end, feat, padding_idx) -> (sum, count)

and the kernel skeleton (:mod:`dlrmlab.kernels.paper`) calls whichever it is given.

* :class:`NoPrefetch` — the baseline: load, use, repeat (one load in flight per thread).
* :class:`RegisterPrefetch` — RPF: the values of the next ``distance`` rows are loaded into registers
  before any of them is accumulated, so ``distance`` loads are in flight per thread.
* :class:`L1Prefetch` — ``prefetch.global.L1`` for the row ``distance`` ahead, then a normal load.
* :class:`SharedStaging` — as RPF, but the values wait in a per-thread slice of shared memory.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

from numba import float32, int64

from dlrmlab.backend import cuda
from dlrmlab.config import Combine
from dlrmlab.errors import DlrmlabError
from dlrmlab.intrinsics import prefetch_l1

MAX_DISTANCE = 16


def _check_distance(d: int) -> int:
    if isinstance(d, bool) or not isinstance(d, numbers.Real) or int(d) != d or not 1 <= int(d) <= MAX_DISTANCE:
        raise DlrmlabError(f"prefetch distance must be an integer in 1..{MAX_DISTANCE}, got {d!r}")
    return int(d)


def _row_factor(combine: Combine):
    """Device function: the multiplier of row ``emb`` (its weight, 0 for padding) and its count."""
    weighted, padded = combine.weighted, combine.padded
    if weighted and padded:

        @cuda.jit(device=True, inline=True)
        def factor(idx, emb, psw, pad):
            keep = idx != pad
            return (psw[emb] if keep else float32(0.0)), (1 if keep else 0)

    elif weighted:

        @cuda.jit(device=True, inline=True)
        def factor(idx, emb, psw, pad):
            return psw[emb], 1

    elif padded:

        @cuda.jit(device=True, inline=True)
        def factor(idx, emb, psw, pad):
            keep = idx != pad
            return (float32(1.0) if keep else float32(0.0)), (1 if keep else 0)

    else:

        @cuda.jit(device=True, inline=True)
        def factor(idx, emb, psw, pad):
            return float32(1.0), 1

    return factor


@dataclass(frozen=True)
class _Ahead:
    """A policy that works ``distance`` rows ahead of use."""

    distance: int = 2
    name: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "distance", _check_distance(self.distance))

    def params(self) -> dict:
        return {"prefetch": self.name, "prefetch_distance": self.distance}


@dataclass(frozen=True)
class NoPrefetch:
    name: str = "none"

    def params(self) -> dict:
        return {"prefetch": self.name}

    def build(self, load, combine: Combine, block: tuple[int, int]):
        factor = _row_factor(combine)

        @cuda.jit(device=True)
        def bag_loop(weight, dim, indices, psw, begin, end, feat, pad):
            acc = float32(0.0)
            cnt = 0
            for emb in range(begin, end):
                idx = int64(indices[emb])
                f, c = factor(idx, emb, psw, pad)
                if c != 0:
                    acc += load(weight, idx * dim + feat) * f
                    cnt += c
            return acc, cnt

        return bag_loop


@dataclass(frozen=True)
class RegisterPrefetch(_Ahead):
    name: str = "register"

    def build(self, load, combine: Combine, block: tuple[int, int]):
        D = int(self.distance)
        factor = _row_factor(combine)

        @cuda.jit(device=True)
        def bag_loop(weight, dim, indices, psw, begin, end, feat, pad):
            acc = float32(0.0)
            cnt = 0
            vals = cuda.local.array(D, float32)
            emb = begin
            while emb + D <= end:
                # Issue D independent loads (a padding row is a valid row: load it, weigh it 0).
                for j in range(D):
                    vals[j] = load(weight, int64(indices[emb + j]) * dim + feat)
                for j in range(D):
                    f, c = factor(int64(indices[emb + j]), emb + j, psw, pad)
                    acc += vals[j] * f
                    cnt += c
                emb += D
            while emb < end:
                idx = int64(indices[emb])
                f, c = factor(idx, emb, psw, pad)
                acc += load(weight, idx * dim + feat) * f
                cnt += c
                emb += 1
            return acc, cnt

        return bag_loop


@dataclass(frozen=True)
class L1Prefetch(_Ahead):
    name: str = "l1"

    def build(self, load, combine: Combine, block: tuple[int, int]):
        D = int(self.distance)
        factor = _row_factor(combine)

        @cuda.jit(device=True)
        def bag_loop(weight, dim, indices, psw, begin, end, feat, pad):
            acc = float32(0.0)
            cnt = 0
            for emb in range(begin, min(begin + D, end)):
                prefetch_l1(weight, int64(indices[emb]) * dim + feat)
            for emb in range(begin, end):
                if emb + D < end:
                    prefetch_l1(weight, int64(indices[emb + D]) * dim + feat)
                idx = int64(indices[emb])
                f, c = factor(idx, emb, psw, pad)
                acc += load(weight, idx * dim + feat) * f
                cnt += c
            return acc, cnt

        return bag_loop


# SharedStaging's loop mirrors RegisterPrefetch's on purpose: only where the values wait differs, and a
# Numba device function can neither return a local array nor take the allocation as a parameter.
@dataclass(frozen=True)
class SharedStaging(_Ahead):
    name: str = "shared"

    def build(self, load, combine: Combine, block: tuple[int, int]):
        D = int(self.distance)
        BX, BY = int(block[0]), int(block[1])
        factor = _row_factor(combine)

        @cuda.jit(device=True)
        def bag_loop(weight, dim, indices, psw, begin, end, feat, pad):
            # Each thread owns buf[ty, :, tx]: no other thread touches it, so no barrier is needed.
            buf = cuda.shared.array((BY, D, BX), float32)
            tx = cuda.threadIdx.x
            ty = cuda.threadIdx.y
            acc = float32(0.0)
            cnt = 0
            emb = begin
            while emb + D <= end:
                for j in range(D):
                    buf[ty, j, tx] = load(weight, int64(indices[emb + j]) * dim + feat)
                for j in range(D):
                    f, c = factor(int64(indices[emb + j]), emb + j, psw, pad)
                    acc += buf[ty, j, tx] * f
                    cnt += c
                emb += D
            while emb < end:
                idx = int64(indices[emb])
                f, c = factor(idx, emb, psw, pad)
                acc += load(weight, idx * dim + feat) * f
                cnt += c
                emb += 1
            return acc, cnt

        return bag_loop


PrefetchPolicy = NoPrefetch | RegisterPrefetch | L1Prefetch | SharedStaging


def make_prefetch(kind: str = "none", distance: int = 2) -> PrefetchPolicy:
    kinds = {"none": NoPrefetch, "register": RegisterPrefetch, "l1": L1Prefetch, "shared": SharedStaging}
    if kind not in kinds:
        raise DlrmlabError(f"unknown prefetch kind {kind!r}; valid: {', '.join(kinds)}")
    return NoPrefetch() if kind == "none" else kinds[kind](distance=distance)
