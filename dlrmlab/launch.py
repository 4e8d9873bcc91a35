"""Launch heuristics, kept apart from kernel bodies: grid sizes and the simulator's shrunken grids."""

from __future__ import annotations

from dlrmlab import backend
from dlrmlab.kernels import gather
from dlrmlab.kernels.paper import build

#: The simulator runs one Python thread per CUDA thread: a grid-stride kernel gives identical results
#: with a couple of blocks, in a fraction of the time.
SIMULATOR_MAX_BLOCKS = 2


def grid(requested: int) -> int:
    """The grid to launch for a requested size (capped in the simulator)."""
    requested = max(1, int(requested))
    return min(requested, SIMULATOR_MAX_BLOCKS) if backend.SIMULATOR else requested


def cover(work_items: int, per_block: int, cap: int | None = None) -> int:
    """Blocks needed to give every work item a slot, optionally capped (grid-stride beyond the cap)."""
    n = max(1, -(-int(work_items) // int(per_block)))
    return grid(min(n, cap) if cap else n)


def paper(cfg, weight_flat, dim: int, indices, offsets, psw, padding_idx: int, out, stream=0) -> None:
    """Launch a paper-family kernel (:mod:`dlrmlab.kernels.paper`) on ``stream``; arguments are validated
    device arrays (a 1-D table, CSR ids and offsets, weights or a 1-element dummy)."""
    build(cfg)[grid(cfg.grid), cfg.block, stream](weight_flat, dim, indices, offsets, psw, padding_idx, out)


def gather_rows(src, src_rows, dst, dst_rows, n: int, width: int, stream=0) -> None:
    """Copy rows ``src[src_rows[i]]`` to ``dst[dst_rows[i]]`` for ``i < n`` (``width`` elements a row; a
    negative ``dst_rows[i]`` skips one) with :mod:`dlrmlab.kernels.gather`: the 16-byte path where it
    applies, one warp a row, at most 65,535 blocks (grid-stride beyond)."""
    if n <= 0:
        return
    vector = gather.vectorizable(src, dst, width)
    blocks = cover(n * gather.WARP, gather.BLOCK, cap=None if backend.SIMULATOR else 65535)
    gather.build(vector)[blocks, gather.BLOCK, stream](src, src_rows, dst, dst_rows, n, width)
