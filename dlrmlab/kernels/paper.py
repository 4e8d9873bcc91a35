"""The paper's kernel family: PyTorch 2.1's embedding-bag forward kernel, one skeleton, policies plugged in.

PyTorch's ``EmbeddingBag_updateOutputKernel_sum_mean``: a grid-stride loop over (bag, feature chunk); a
block of (32, 8) threads covers 8 chunks of 32 columns; each thread sums one column of one bag in fp32
with int64 index arithmetic. The variants differ only in configuration:

* occupancy (OptMT): ``max_registers``, block shape, grid size (:mod:`dlrmlab.occupancy`);
* the bag loop, i.e. prefetching (RPF): :mod:`dlrmlab.prefetch`;
* table dtype: :mod:`dlrmlab.kernels.elements`;
* combiner: ``mode`` (sum, mean), ``per_sample_weights``, ``padding_idx``.

L2 pinning and the access-policy window act around the launch (:mod:`dlrmlab.l2pin`,
:mod:`dlrmlab.l2window`), not inside it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from numba import float32

from dlrmlab import backend
from dlrmlab.backend import cuda
from dlrmlab.config import Combine, positive_int, register_cap, table_dtype
from dlrmlab.errors import DlrmlabError
from dlrmlab.kernels.elements import scalar_loader
from dlrmlab.prefetch import NoPrefetch, PrefetchPolicy, make_prefetch

#: The knobs of the paper family (:meth:`PaperConfig.from_knobs`).
KNOBS = frozenset({"max_registers", "prefetch", "prefetch_distance", "block", "grid"})

#: PyTorch 2.1's launch: block (32, 8), grid 1024.
TORCH_BLOCK = (32, 8)
TORCH_GRID = 1024


@dataclass(frozen=True)
class PaperConfig:
    """Compile-time configuration of one paper-family kernel."""

    dtype: str = "float32"
    combine: Combine = field(default_factory=Combine)
    prefetch: PrefetchPolicy = field(default_factory=NoPrefetch)
    max_registers: int | None = None
    block: tuple[int, int] = TORCH_BLOCK
    grid: int = TORCH_GRID

    def __post_init__(self) -> None:
        table_dtype(self.dtype)
        bx, by = self.block
        if bx <= 0 or by <= 0 or bx * by > 1024 or bx % 32:
            raise DlrmlabError(f"block {self.block}: x must be a positive multiple of 32 and x*y at most 1024")
        positive_int("grid", self.grid)

    @classmethod
    def from_knobs(cls, dtype: str = "float32", combine: Combine | None = None, **knobs: Any) -> PaperConfig:
        """A configuration from the paper family's knobs (``max_registers``, ``prefetch``,
        ``prefetch_distance``, ``block``, ``grid``), validated."""
        return cls(
            dtype=dtype, combine=combine or Combine(),
            prefetch=make_prefetch(knobs.get("prefetch", "none"), knobs.get("prefetch_distance", 2)),
            max_registers=register_cap(knobs.get("max_registers")),
            block=tuple(knobs.get("block", TORCH_BLOCK)), grid=int(knobs.get("grid", TORCH_GRID)),
        )

    def params(self) -> dict:
        return {
            "dtype": self.dtype, **self.combine.params(), "max_registers": self.max_registers,
            "block": f"{self.block[0]}x{self.block[1]}", "grid": self.grid, **self.prefetch.params(),
        }


@lru_cache(maxsize=256)
def build(cfg: PaperConfig):
    """Compile (lazily, at first launch) the kernel for ``cfg``. Cached: one kernel per configuration."""
    load = scalar_loader(cfg.dtype)
    bag_loop = cfg.prefetch.build(load, cfg.combine, cfg.block)
    MEAN = cfg.combine.mean

    @backend.jit(max_registers=cfg.max_registers)
    def embedding_bag_paper(weight, dim, indices, offsets, psw, padding_idx, out):
        num_bags = offsets.shape[0] - 1
        bx = cuda.blockDim.x
        chunks_per_bag = (dim + bx - 1) // bx
        num_chunks = num_bags * chunks_per_bag
        chunk = cuda.blockIdx.x * cuda.blockDim.y + cuda.threadIdx.y
        stride = cuda.gridDim.x * cuda.blockDim.y
        while chunk < num_chunks:
            feat = (chunk % chunks_per_bag) * bx + cuda.threadIdx.x
            if feat < dim:
                bag = chunk // chunks_per_bag
                acc, cnt = bag_loop(weight, dim, indices, psw, offsets[bag], offsets[bag + 1], feat, padding_idx)
                if MEAN and cnt > 0:
                    acc = acc / float32(cnt)
                out[bag, feat] = acc
            chunk += stride

    return embedding_bag_paper
