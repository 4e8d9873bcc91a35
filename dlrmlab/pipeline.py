"""Serving batches from host tables: ``host`` (every row read zero-copy) and ``cached`` (an HBM cache with
a prefetch pipeline), each one launch of the fused kernel per batch.

The pipeline (as FBGEMM's prefetch): while batch i computes on the compute stream, batch i+1 is planned
on the CPU (ids looked up in the cache, victims chosen, locations written) and its missed rows are copied
into the cache on a side stream. The synchronisation, all explicit, with two of every per-batch buffer
(k = batch parity):

1. before planning batch i+1 the CPU waits for ``computed[k]``, the event after batch i-1's kernel: the
   ways and staging area batch i+1 may overwrite, and the buffers k it reuses, are no longer read;
   batch i's ways are locked by the plan (``lock_previous``), so batch i runs on undisturbed;
2. the side stream copies locations and missed rows' lists, fills the cache, records ``filled[k]``;
3. the compute stream waits for ``filled[k]``, launches batch i+1's kernel, records ``computed[k]``.

Serial mode (``pipelined=False``) plans, fills and computes each batch on one stream and waits for it.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from dlrmlab import backend
from dlrmlab.backend import cuda
from dlrmlab.config import Combine
from dlrmlab.errors import DlrmlabError
from dlrmlab.fused import PackedTables, configure_here, fused_forward
from dlrmlab.hbmcache import CacheStats, HbmCache, segments
from dlrmlab.placement import HostTables, Placement
from dlrmlab.workload import JaggedBatch


def host_packed(host: HostTables) -> PackedTables:
    """The ``host`` placement: the fused kernel's packed tables are the mapped host buffer itself."""
    return PackedTables(host.flat, cuda.to_device(host.row_base), host.rows, host.dim, host.dtype)


def default_threads() -> int:
    """CPU threads planning a cache by default: the cores, at most 16."""
    return max(1, min(16, os.cpu_count() or 1))


def _sync_event() -> Any:
    """An event for ordering only (no timing); the simulator's events take no options and order nothing
    (its launches and copies are synchronous)."""
    return cuda.event() if backend.SIMULATOR else cuda.event(timing=False)


@dataclass
class Prefetched:
    """A planned, possibly still filling batch: where its ids' rows are, and its counters."""

    k: int
    n_ids: int
    n_bags: int
    stats: CacheStats
    weighted: bool


class CachedStage:
    """The ``cached`` placement's serving path over pinned host tables (see the module docstring).

    ``max_ids``/``max_bags``: the largest batch it will serve (sizes every buffer once, up front);
    ``threads``: CPU threads planning the cache (default :func:`default_threads`); ``compute``: the stream
    kernels run on (default a new one; torch's current stream to order outputs with torch ops).
    """

    def __init__(self, host: HostTables, placement: Placement | str, max_ids: int, max_bags: int,
                 mode: str = "sum", config: Any = None, threads: int | None = None, compute: Any = None) -> None:
        self.placement = Placement.parse(placement)
        self.cache = HbmCache(host, self.placement, max_ids, threads=threads or default_threads())
        self.host, self.mode, self.config = host, mode, config
        self.max_ids, self.max_bags = int(max_ids), int(max_bags)
        self.pipelined = self.placement.pipelined
        self.compute = cuda.stream() if compute is None else compute
        self.side = cuda.stream() if self.pipelined else self.compute
        T = len(host.rows)
        self.packed = PackedTables(self.cache.rows, cuda.to_device(np.zeros(T, np.int64)),
                                   (self.cache.buffer_rows,) * T, host.dim, host.dtype)
        self._h = [self._buffers(cuda.pinned_array) for _ in range(2)]
        self._d = [self._buffers(cuda.device_array) for _ in range(2)]
        self.filled = [_sync_event() for _ in range(2)]
        self.computed = [_sync_event() for _ in range(2)]
        self._issued = [False, False]
        self.plan_seconds = 0.0  # CPU time spent planning batches (the cache's management)

    def _buffers(self, make: Any) -> dict:
        n, b = self.max_ids, self.max_bags
        return {"locs": make(n, np.int32), "src": make(n, np.int64), "dst": make(n, np.int64),
                "offsets": make(b + 1, np.int64), "table_offsets": make(len(self.host.rows) + 1, np.int64),
                "psw": make(n, np.float32)}

    def prefetch(self, batch: JaggedBatch) -> Prefetched:
        """Plan ``batch`` on the CPU and start its fill on the side stream (returns without waiting)."""
        n_ids, n_bags = int(batch.indices.shape[0]), int(batch.offsets.shape[0]) - 1
        if n_ids > self.max_ids or n_bags > self.max_bags:
            raise DlrmlabError(f"a batch of {n_ids:,} ids and {n_bags:,} bags is larger than this stage was "
                               f"built for ({self.max_ids:,} ids, {self.max_bags:,} bags)")
        if batch.num_tables != len(self.host.rows):
            raise DlrmlabError(f"batch has {batch.num_tables} tables, the host tables {len(self.host.rows)}")
        k = (self.cache.tick + 1) % 2
        if self._issued[k]:
            self.computed[k].synchronize()  # (1) batch i-1 no longer reads ways, staging or buffers k
        h, d = self._h[k], self._d[k]
        t0 = time.perf_counter()
        n_miss, stats = self.cache.plan(batch.indices, segments(batch.offsets, batch.table_offsets),
                                        h["locs"], h["src"], h["dst"], lock_previous=self.pipelined)
        self.plan_seconds += time.perf_counter() - t0
        h["offsets"][: n_bags + 1] = batch.offsets
        h["table_offsets"][:] = batch.table_offsets
        weighted = batch.per_sample_weights is not None
        if weighted:
            h["psw"][:n_ids] = batch.per_sample_weights
        s = self.side  # (2) copies and fill on the side stream
        for name, n in (("locs", n_ids), ("src", n_miss), ("dst", n_miss), ("offsets", n_bags + 1),
                        ("table_offsets", len(self.host.rows) + 1), ("psw", n_ids if weighted else 0)):
            if n:
                d[name][:n].copy_to_device(h[name][:n], stream=s)
        self.cache.fill(d["src"], d["dst"], n_miss, stream=s)
        self.filled[k].record(s)
        return Prefetched(k, n_ids, n_bags, stats, weighted)

    def forward(self, pre: Prefetched, out: Any = None) -> Any:
        """Batch ``pre``'s embedding bags on the compute stream, once its fill is done (returns at once)."""
        d = self._d[pre.k]
        self.filled[pre.k].wait(self.compute)  # (3) the rows are in place
        jagged = (d["locs"][: pre.n_ids], d["offsets"][: pre.n_bags + 1], d["table_offsets"],
                  d["psw"][: pre.n_ids] if pre.weighted else None)
        if self.config is None:  # one configuration for the stage, from its first batch's pooling
            combine = Combine(self.mode, pre.weighted, False)
            self.config, _ = configure_here(self.host.dim, self.host.dtype, pre.n_ids / max(pre.n_bags, 1),
                                            combine=combine)
        out = fused_forward(self.packed, jagged, mode=self.mode, out=out, stream=self.compute,
                            config=self.config, validate=False)
        self.computed[pre.k].record(self.compute)
        self._issued[pre.k] = True
        if not self.pipelined:
            self.compute.synchronize()
        return out

    def serve(self, batches: list[JaggedBatch], outs: list[Any] | None = None) -> Iterator[tuple[Any, CacheStats]]:
        """Serve ``batches`` in order, batch i+1 prefetched while batch i computes (when pipelined).
        Yields each batch's output (a device array, final once the compute stream reaches it) and counters."""
        if not batches:
            return
        pre = self.prefetch(batches[0])
        for i in range(len(batches)):
            out = self.forward(pre, outs[i] if outs is not None else None)
            stats = pre.stats
            if i + 1 < len(batches):
                pre = self.prefetch(batches[i + 1])
            yield out, stats

    def synchronize(self) -> None:
        self.compute.synchronize()
        self.side.synchronize()


@contextlib.contextmanager
def cached_stage(host: HostTables, placement: Placement | str, max_ids: int, max_bags: int,
                 **kwargs: Any) -> Iterator[CachedStage]:
    """A :class:`CachedStage` for the block; on exit (an exception or Ctrl-C included) both streams are
    drained, so no copy or kernel still touches the host tables when they are unpinned."""
    stage = CachedStage(host, placement, max_ids, max_bags, **kwargs)
    try:
        yield stage
    finally:
        stage.synchronize()

