"""Serving batches from host tables: ``host`` (every row read zero-copy) and ``cached`` (an HBM cache with
a prefetch pipeline), each one launch of the fused kernel per batch.

The pipeline (as FBGEMM's prefetch): while batch i computes on the compute stream, batch i+1 is uploaded
and planned on the GPU (:meth:`dlrmlab.hbmcache.HbmCache.plan`: ids looked up in the cache, victims
chosen, locations written) on the plan stream, and its missed rows are copied into the cache on the fill
stream, so batch i+1's plan also overlaps batch i's fill. The CPU only enqueues work. The synchronisation,
all explicit, with two of every per-batch buffer (k = batch parity):

1. before writing batch i+1 into the pinned upload buffers k, the CPU waits for ``uploaded[k]`` (batch
   i-1's upload out of them is done: it was enqueued a whole batch earlier, so this rarely waits);
2. the plan stream waits for ``computed[k]``, the event after batch i-1's kernel (which itself waited for
   batch i-1's fill): the device buffers k, the staging area k and the ways batch i+1 may overwrite are no
   longer read; batch i's ways are locked by the plan (``lock_previous``), so batch i's fill and kernel run
   on undisturbed;
3. on the plan stream: the upload (then ``uploaded[k]``), the plan (then ``planned[k]``);
4. the fill stream waits for ``planned[k]``, copies the missed rows, records ``filled[k]``;
5. the compute stream waits for ``filled[k]``, launches batch i+1's kernel, records ``computed[k]``.

Serial mode (``pipelined=False``) uploads, plans, fills and computes each batch on the compute stream
and waits for it. In the simulator everything runs in order as it is enqueued (torch on the CPU).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from dlrmlab import backend
from dlrmlab.backend import cuda, numba_view
from dlrmlab.config import Combine
from dlrmlab.errors import DlrmlabError
from dlrmlab.fused import PackedTables, configure_here, fused_forward
from dlrmlab.hbmcache import CacheStats, HbmCache, Plan, torch_module
from dlrmlab.placement import HostTables, Placement
from dlrmlab.workload import JaggedBatch


def host_packed(host: HostTables) -> PackedTables:
    """The ``host`` placement: the fused kernel's packed tables are the mapped host buffer itself."""
    return PackedTables(host.flat, cuda.to_device(host.row_base), host.rows, host.dim, host.dtype)


def _sync_event() -> Any:
    """An event for ordering only (no timing); the simulator's events take no options and order nothing
    (its launches and copies are synchronous)."""
    return cuda.event() if backend.SIMULATOR else cuda.event(timing=False)


@dataclass
class Prefetched:
    """A planned, possibly still filling batch: where its ids' rows are, and its counters (on the device)."""

    k: int
    n_ids: int
    n_bags: int
    plan: Plan
    weighted: bool
    filled: Any

    @property
    def stats(self) -> CacheStats:
        """The batch's counters (waits for its fill)."""
        self.filled.synchronize()
        return self.plan.stats()


class CachedStage:
    """The ``cached`` placement's serving path over pinned host tables (see the module docstring).

    ``max_ids``/``max_bags``: the largest batch it will serve (sizes every buffer once, up front);
    ``compute``: the Numba stream kernels run on (default a new one; torch's current stream to order
    outputs with torch ops). The compute and plan streams have a higher priority than the fill stream: the
    fill's many short blocks (waiting on the host link) then never hold back a kernel or a plan.
    ``time_side``: timing events around each batch's plan and fill (:meth:`side_ms`).
    """

    def __init__(self, host: HostTables, placement: Placement | str, max_ids: int, max_bags: int,
                 mode: str = "sum", config: Any = None, compute: Any = None, time_side: bool = False) -> None:
        torch = torch_module()
        self.placement = Placement.parse(placement)
        self.cache = HbmCache(host, self.placement, max_ids)
        self.host, self.mode, self.config = host, mode, config
        self.max_ids, self.max_bags = int(max_ids), int(max_bags)
        self.pipelined = self.placement.pipelined
        if backend.SIMULATOR:
            self.compute = cuda.stream() if compute is None else compute
            self.side, self._side_torch = self.compute, None
        else:  # torch's streams (a priority each) seen by Numba; the plan stream runs torch's ops and Numba's
            self._torch_streams = [torch.cuda.Stream(priority=-1) for _ in range(2)]
            if compute is None:
                compute_torch = self._torch_streams[0]
                self.compute = cuda.external_stream(compute_torch.cuda_stream)
            else:
                self.compute, compute_torch = compute, torch.cuda.ExternalStream(int(compute))
            self._side_torch = self._torch_streams[1] if self.pipelined else compute_torch
            self.side = cuda.external_stream(self._side_torch.cuda_stream)
        self.fill_stream = cuda.stream() if self.pipelined and not backend.SIMULATOR else self.side
        T = len(host.rows)
        self.packed = PackedTables(self.cache.rows, cuda.to_device(np.zeros(T, np.int64)),
                                   (self.cache.buffer_rows,) * T, host.dim, host.dtype)
        dev = self.cache.device
        self._h = [self._buffers(torch, "cpu", pin=dev == "cuda") for _ in range(2)]
        self._d = [self._buffers(torch, dev) for _ in range(2)]
        self.planned = [_sync_event() for _ in range(2)]
        self.filled = [_sync_event() for _ in range(2)]
        self.computed = [_sync_event() for _ in range(2)]
        self.uploaded = [_sync_event() for _ in range(2)]
        self._issued = [False, False]
        self.enqueue_seconds = 0.0  # CPU time spent enqueueing uploads, plans and fills
        self.time_side = time_side
        self._side_events: list[tuple[Any, ...]] = []  # per batch: around the plan, around the fill

    def _buffers(self, torch: Any, device: str, pin: bool = False) -> dict:
        n, b, T = self.max_ids, self.max_bags, len(self.host.rows)
        i64 = torch.int64
        d = {"ids": torch.empty(n, dtype=i64, device=device, pin_memory=pin),
             "offsets": torch.empty(b + 1, dtype=i64, device=device, pin_memory=pin),
             "table_offsets": torch.empty(T + 1, dtype=i64, device=device, pin_memory=pin),
             "psw": torch.empty(n, dtype=torch.float32, device=device, pin_memory=pin)}
        if device != "cpu" or backend.SIMULATOR:  # the plan's outputs: on the device only
            d |= {"locs": torch.empty(n, dtype=torch.int32, device=device),
                  "src": torch.empty(n, dtype=i64, device=device), "dst": torch.empty(n, dtype=i64, device=device)}
        return d

    def _side_context(self) -> Any:
        """torch ops on the plan stream (the simulator's torch runs on the CPU, in order)."""
        return contextlib.nullcontext() if self._side_torch is None else torch_module().cuda.stream(self._side_torch)

    def prefetch(self, batch: JaggedBatch) -> Prefetched:
        """Upload and plan ``batch`` on the plan stream, fill on the fill stream (returns without waiting for
        the GPU)."""
        n_ids, n_bags, T = int(batch.indices.shape[0]), int(batch.offsets.shape[0]) - 1, len(self.host.rows)
        if n_ids > self.max_ids or n_bags > self.max_bags:
            raise DlrmlabError(f"a batch of {n_ids:,} ids and {n_bags:,} bags is larger than this stage was "
                               f"built for ({self.max_ids:,} ids, {self.max_bags:,} bags)")
        if batch.num_tables != T:
            raise DlrmlabError(f"batch has {batch.num_tables} tables, the host tables {T}")
        t0 = time.perf_counter()
        k = (self.cache.tick + 1) % 2
        h, d = self._h[k], self._d[k]
        if self._issued[k]:
            self.uploaded[k].synchronize()  # (1) batch i-1's upload out of the pinned buffers k is done
        weighted = batch.per_sample_weights is not None
        parts = [("ids", batch.indices, n_ids), ("offsets", batch.offsets, n_bags + 1),
                 ("table_offsets", batch.table_offsets, T + 1)]
        if weighted:
            parts.append(("psw", batch.per_sample_weights, n_ids))
        for name, values, n in parts:
            h[name][:n].numpy()[:] = values
        if self._issued[k]:
            self.computed[k].wait(self.side)  # (2) batch i-1's kernel no longer reads buffers k and its ways
        marks = [backend.event() for _ in range(4)] if self.time_side else None
        with self._side_context():  # (3) upload, plan
            for name, _, n in parts:
                d[name][:n].copy_(h[name][:n], non_blocking=True)
            self.uploaded[k].record(self.side)
            if marks:
                marks[0].record(self.side)
            seg = d["offsets"][d["table_offsets"][: T + 1]]
            plan = self.cache.plan(d["ids"][:n_ids], seg, lock_previous=self.pipelined, out=d)
            if marks:
                marks[1].record(self.side)
        self.planned[k].record(self.side)
        self.planned[k].wait(self.fill_stream)  # (4) fill
        if marks:
            marks[2].record(self.fill_stream)
        self.cache.fill(plan, stream=self.fill_stream)
        self.filled[k].record(self.fill_stream)
        if marks:
            marks[3].record(self.fill_stream)
            self._side_events.append(tuple(marks))
        self.enqueue_seconds += time.perf_counter() - t0
        return Prefetched(k, n_ids, n_bags, plan, weighted, self.filled[k])

    def forward(self, pre: Prefetched, out: Any = None) -> Any:
        """Batch ``pre``'s embedding bags on the compute stream, once its fill is done (returns at once)."""
        d = self._d[pre.k]
        self.filled[pre.k].wait(self.compute)  # (5) the rows are in place
        jagged = tuple(numba_view(t) for t in (pre.plan.locs, d["offsets"][: pre.n_bags + 1], d["table_offsets"]))
        jagged += (numba_view(d["psw"][: pre.n_ids]) if pre.weighted else None,)
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

    def serve(self, batches: list[JaggedBatch], outs: list[Any] | None = None) -> Iterator[tuple[Any, Prefetched]]:
        """Serve ``batches`` in order, batch i+1 prefetched while batch i computes (when pipelined).
        Yields each batch's output (a device array, final once the compute stream reaches it) and its
        :class:`Prefetched` (``.stats`` waits for its counters)."""
        if not batches:
            return
        pre = self.prefetch(batches[0])
        for i in range(len(batches)):
            out = self.forward(pre, outs[i] if outs is not None else None)
            done = pre
            if i + 1 < len(batches):
                pre = self.prefetch(batches[i + 1])
            yield out, done

    def side_ms(self, first: int = 0) -> tuple[float, float]:
        """GPU milliseconds of the plans and of the fills of batches ``first`` on, summed (``time_side``
        only; waits for the streams)."""
        self.synchronize()
        marks = self._side_events[first:]
        return (sum(m[0].elapsed_time(m[1]) for m in marks), sum(m[2].elapsed_time(m[3]) for m in marks))

    def synchronize(self) -> None:
        self.compute.synchronize()
        self.side.synchronize()
        self.fill_stream.synchronize()


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
