"""The fast kernel over tables in host memory: ``fast@host`` (every row read zero-copy over the host link)
and ``fast@cached`` (an HBM cache of a tenth of the tables, LRU, with batch i+1 prefetched while batch i
runs). The tables are copied into pinned, mapped host memory at prepare; ``close`` unpins them."""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np

from dlrmlab.backend import cuda
from dlrmlab.config import Combine
from dlrmlab.fused import configure_here, fused_forward
from dlrmlab.pipeline import CachedStage, host_packed
from dlrmlab.placement import Placement, host_tables
from dlrmlab.variants.base import Prepared

#: the ``fast@cached`` variant's cache: a tenth of the tables' bytes, per-table LRU caches, pipelined
BENCH_CACHE = Placement("cached", budget=0.1, policy="lru", shared=False)
KERNEL_REGEX = "embedding_bag_fast|gather_rows"


def _outputs(case: Any, out: Any, b: int, s: Any) -> Any:
    def result_of(run):
        def result(i: int) -> list[np.ndarray]:
            run(i)
            s.synchronize()
            host = out.copy_to_host()
            return [host[t * b : (t + 1) * b] for t in range(case.num_tables)]

        return result

    return result_of


def prepare(case: Any, knobs: dict[str, dict], placement: Placement | str = "host") -> Prepared:
    """``host`` or ``cached`` tables for the case's stage, the fast kernel over them."""
    p = Placement.parse(placement)
    combine = Combine(case.mode, case.weighted, False)
    cfg, source = configure_here(case.dim, case.dtype, case.stage.pooling.mean, combine=combine,
                                 **knobs.get("fast", {}))
    s, b = case.stream, case.stage.batch_size
    with contextlib.ExitStack() as stack:
        ht = stack.enter_context(host_tables(case.stage.embedding_sizes, case.dim, case.dtype, fill=case.host_tables))
        out = cuda.device_array((b * case.num_tables, case.dim), np.float32)
        params = {**cfg.params(), "config_source": source, **p.params(), "placement_spec": str(p)}
        if p.kind == "host":
            tables = host_packed(ht)
            jagged = [(j.indices, j.offsets, j.table_offsets, j.psw if case.weighted else None)
                      for j in (db.jagged for db in case.dev_batches)]

            def run(i: int) -> None:
                fused_forward(tables, jagged[i], mode=case.mode, out=out, stream=s, config=cfg, validate=False)
        else:
            batches = [hb.jagged() for hb in case.host_batches]
            stage = CachedStage(ht, p, max(int(j.indices.size) for j in batches),
                                max(int(j.offsets.size) - 1 for j in batches), mode=case.mode, config=cfg, compute=s)
            stack.callback(stage.synchronize)  # before the host tables are unpinned
            pending: dict = {}

            def run(i: int) -> None:  # the harness serves batches in order: prefetch the next one
                pre = pending.pop(i, None) or stage.prefetch(batches[i])
                stage.forward(pre, out)
                pending.clear()
                j = (i + 1) % len(batches)
                pending[j] = stage.prefetch(batches[j])

        return Prepared(run, _outputs(case, out, b, s)(run), params, None, stack.pop_all().close)
