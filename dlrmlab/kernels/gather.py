"""Row gather: copy rows ``src[src_rows[i]]`` to ``dst[dst_rows[i]]`` (flat buffers, ``width`` elements a
row); a negative ``dst_rows[i]`` skips row i (the HBM cache's miss list is padded so, to a size the host
knows without waiting for the GPU).

The HBM cache's fill (missed rows from pinned host memory, read zero-copy over the host link, into their
cache slots) and the host-link and HBM gather-rate measurements are this one kernel. One warp copies one
row, warps walk rows grid-stride. ``vector``: float32 rows of a multiple of four elements, each lane
loading 16 bytes at once (``intrinsics.load16``), so a warp asks for up to 512 bytes of a row in one
instruction (over the host link, more bytes in flight per warp is what sets the rate); else one element a
lane a step.
"""

from __future__ import annotations

from functools import lru_cache

from dlrmlab.backend import cuda
from dlrmlab.intrinsics import load16

WARP = 32
BLOCK = 128


@lru_cache(maxsize=2)
def build(vector: bool = False):
    """The gather kernel: ``kernel[grid, BLOCK, stream](src, src_rows, dst, dst_rows, n, width)``."""
    step = 4 * WARP if vector else WARP

    @cuda.jit
    def gather_rows(src, src_rows, dst, dst_rows, n, width):
        lane = cuda.threadIdx.x % WARP
        warp = (cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x) // WARP
        warps = cuda.gridDim.x * cuda.blockDim.x // WARP
        r = warp
        while r < n:
            d = dst_rows[r] * width
            if d >= 0:
                s = src_rows[r] * width
                if vector:
                    for c in range(4 * lane, width, step):
                        v = load16(src, s + c)
                        dst[d + c] = v[0]
                        dst[d + c + 1] = v[1]
                        dst[d + c + 2] = v[2]
                        dst[d + c + 3] = v[3]
                else:
                    for c in range(lane, width, step):
                        dst[d + c] = src[s + c]
            r += warps

    return gather_rows


def vectorizable(src, dst, width: int) -> bool:
    """Whether the 16-byte path applies: float32 buffers and rows of a multiple of four elements."""
    return src.dtype.itemsize == 4 and dst.dtype.itemsize == 4 and src.dtype == dst.dtype and width % 4 == 0
