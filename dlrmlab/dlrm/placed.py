"""The embedding stage's tables in host memory: ``EmbeddingBagCollection(..., placement="host" | "cached:...")``.

:class:`PlacedTables` owns the pinned, mapped host tables (:func:`dlrmlab.placement.host_tables`, held in an
``ExitStack`` closed by :meth:`close` or when the module is collected) and serves the fast kernel from them:
``host`` reads every row zero-copy; ``cached`` goes through an HBM cache (:class:`dlrmlab.pipeline.CachedStage`)
whose compute stream is torch's current stream, so outputs are ordered with the torch ops around them.
:meth:`prefetch` starts the next batch's fill while the current one computes (the pipeline); a forward of a
batch not prefetched plans it itself.
"""

from __future__ import annotations

import contextlib
import math
import weakref
from typing import Any

import numpy as np
import torch

from dlrmlab import backend
from dlrmlab import validate as checks
from dlrmlab.backend import cuda
from dlrmlab.dlrm.embedding import numba_view
from dlrmlab.dlrm.kjt import KeyedJaggedTensor
from dlrmlab.errors import DlrmlabError
from dlrmlab.fused import fused_forward
from dlrmlab.pipeline import CachedStage, host_packed
from dlrmlab.placement import Placement, host_tables
from dlrmlab.workload import JaggedBatch

#: implementations a host or cached placement runs (the fused kernel reads rows wherever they are)
PLACED_IMPLS = ("fast",)


class PlacedTables:
    """Host (or cached) tables of ``sizes`` x ``dim``, filled from ``weight`` or initialised as DLRM does."""

    def __init__(self, sizes: tuple[int, ...], dim: int, dtype: str, placement: Placement, mode: str,
                 impl: str, execution: str, weight: torch.Tensor | None, seed: int) -> None:
        if impl not in PLACED_IMPLS or execution != "eager":
            raise DlrmlabError(f"placement {placement.kind!r} runs the fused kernel only (impl 'fast', eager); "
                               f"got {impl!r}{'' if execution == 'eager' else ' (' + execution + ')'}")
        self.placement, self.mode, self.sizes, self.dim = placement, mode, sizes, dim
        self._stack = contextlib.ExitStack()
        self.host = self._stack.enter_context(host_tables(sizes, dim, dtype))
        weakref.finalize(self, self._stack.close)  # pinned pages go when the module does, at the latest
        self.weight = torch.from_numpy(self.host.host)  # a CPU tensor over the pinned pages
        if weight is not None:
            self.weight.copy_(weight.detach().to("cpu"))
        else:
            g = torch.Generator().manual_seed(int(seed))
            for t, n in enumerate(sizes):
                b = math.sqrt(1.0 / n)
                torch.from_numpy(self.host.table(t)).uniform_(-b, b, generator=g)
        self.stage: Any = None
        self._host_packed: Any = None
        self._pending: tuple[Any, Any] | None = None

    def close(self) -> None:
        """Drain the streams and unpin the host tables now."""
        if self.stage is not None:
            self.stage.synchronize()
        self._stack.close()

    def _batch(self, sparse: KeyedJaggedTensor) -> JaggedBatch:
        off = checks.host_copy(sparse.offsets).astype(np.int64)
        w = None if sparse.weights is None else checks.host_copy(sparse.weights).astype(np.float32)
        toff = np.arange(0, (sparse.num_keys + 1) * sparse.stride, sparse.stride, dtype=np.int64)
        return JaggedBatch(checks.host_copy(sparse.values).astype(np.int64), off, toff, w)

    def _stage(self, batch: JaggedBatch) -> Any:
        """The cached stage, sized for this batch (remade, cache state lost, when a larger batch comes)."""
        n_ids, n_bags = int(batch.indices.size), int(batch.offsets.size) - 1
        if self.stage is None or n_ids > self.stage.max_ids or n_bags > self.stage.max_bags:
            if self.stage is not None:
                self.stage.synchronize()
            stream = None if backend.SIMULATOR else cuda.external_stream(torch.cuda.current_stream().cuda_stream)
            self.stage = CachedStage(self.host, self.placement, max(n_ids, 1), max(n_bags, 1), mode=self.mode,
                                     compute=stream)
        return self.stage

    def prefetch(self, sparse: KeyedJaggedTensor) -> None:
        """Start fetching ``sparse``'s missed rows into the cache (on a side stream); the next forward of
        this same batch waits for them instead of planning again."""
        if self.placement.kind == "cached":
            batch = self._batch(sparse)
            self._pending = (sparse, self._stage(batch).prefetch(batch))

    def forward(self, sparse: KeyedJaggedTensor, out: torch.Tensor, out_nb: Any) -> None:
        """Fill ``out`` (T*B, dim) with the pooled rows of ``sparse`` (``out_nb``: its Numba view)."""
        if self.placement.kind == "host":
            dev = "cpu" if backend.SIMULATOR else "cuda"
            s = sparse.to(dev)
            jagged = (numba_view(s.values), numba_view(s.offsets), numba_view(s.table_offsets()),
                      None if s.weights is None else numba_view(s.weights))
            stream = 0 if backend.SIMULATOR else cuda.external_stream(torch.cuda.current_stream().cuda_stream)
            if self._host_packed is None:
                self._host_packed = host_packed(self.host)
            fused_forward(self._host_packed, jagged, mode=self.mode, out=out_nb, stream=stream, validate=False)
            return
        if self._pending is not None and self._pending[0] is sparse:
            pre = self._pending[1]
        else:
            batch = self._batch(sparse)
            pre = self._stage(batch).prefetch(batch)
        self._pending = None
        self.stage.forward(pre, out_nb)
