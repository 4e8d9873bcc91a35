"""Row gather: copy rows ``src[src_rows[i]]`` to ``dst[dst_rows[i]]`` (flat buffers, ``dim`` elements a row).

The HBM cache's fill (missed rows from pinned host memory, read zero-copy over the host link, into their
cache slots) and the host-link and HBM gather-rate measurements are this one kernel. One warp copies one
row (its lanes read consecutive elements: one 128-byte request per warp step), warps walk rows grid-stride.
"""

from __future__ import annotations

from functools import lru_cache

from dlrmlab.backend import cuda

WARP = 32
BLOCK = 128


@lru_cache(maxsize=1)
def build():
    """The gather kernel: ``kernel[grid, BLOCK, stream](src, src_rows, dst, dst_rows, n, dim)``."""

    @cuda.jit
    def gather_rows(src, src_rows, dst, dst_rows, n, dim):
        lane = cuda.threadIdx.x % WARP
        warp = (cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x) // WARP
        warps = cuda.gridDim.x * cuda.blockDim.x // WARP
        r = warp
        while r < n:
            s = src_rows[r] * dim
            d = dst_rows[r] * dim
            for c in range(lane, dim, WARP):
                dst[d + c] = src[s + c]
            r += warps

    return gather_rows
