"""Per-table variants of the paper's kernel family: one launch per table, as PyTorch does, with L2 pinning
or a persisting window around the launches when asked."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np

from dlrmlab import backend, hotness, l2window, launch
from dlrmlab.backend import cuda
from dlrmlab.config import Combine
from dlrmlab.errors import DlrmlabError
from dlrmlab.kernels.paper import PaperConfig
from dlrmlab.prepared import Prepared, event_pairs
from dlrmlab.variants.around import persisting_window, pinned

#: The paper kernel's name (:func:`dlrmlab.kernels.paper.build`), for Nsight Compute.
KERNEL_REGEX = "embedding_bag_paper"
#: The artifact's hot set: its 60,000 most frequent rows per table.
HOT_ROWS = 60_000


def case_combine(case: Any) -> Combine:
    return Combine(case.mode, case.weighted, False)


def per_table(case: Any, launch_table: Callable[[int, int], None], outs: list, params: dict,
              before: Callable[[int, int], None] | None = None) -> dict:
    """Closures for a stage of one launch per table: ``before(i, t)`` (a pin kernel, say) then
    ``launch_table(i, t)``. Per-kernel timing brackets the embedding launches only, as the artifact did."""
    s = case.stream

    def run(i: int) -> None:
        for t in range(case.num_tables):
            if before is not None:
                before(i, t)
            launch_table(i, t)

    def per_kernel(i: int):
        def launches():
            for t in range(case.num_tables):
                if before is not None:
                    before(i, t)  # outside the table's event pair
                yield partial(launch_table, i, t)

        return event_pairs(s, launches())

    def result(i: int) -> list[np.ndarray]:
        run(i)
        s.synchronize()
        return [o.copy_to_host() for o in outs]

    return {"run": run, "result": result, "per_kernel": per_kernel, "params": params}


def hot_sets(case: Any, pin: dict) -> tuple[list[np.ndarray], dict]:
    """Each table's hot rows: a user's hot-row file, or the top ``hot_rows`` of the case's own ids."""
    hot_file = pin.get("hot_file")
    if hot_file:
        hots = [hotness.read_hot_rows(hot_file, rows) for rows in case.stage.embedding_sizes]
        return hots, {"hot_file": str(hot_file)}
    k = int(pin.get("hot_rows", min(HOT_ROWS, min(case.stage.embedding_sizes))))
    hots = [hotness.hot_set(case.table_ids(t), k, rows) for t, rows in enumerate(case.stage.embedding_sizes)]
    return hots, {"hot_rows": k}


def prepare(case: Any, knobs: dict[str, dict]) -> Prepared:
    """The paper kernel per table; ``knobs['pin']`` pins hot rows before each table's launch (L2P),
    ``knobs['window']`` runs on frequency-ranked tables behind one persisting window per table."""
    cfg = PaperConfig.from_knobs(case.dtype, case_combine(case), **knobs.get("paper", {}))
    pin, window = knobs.get("pin"), knobs.get("window")
    s, dim = case.stream, case.dim
    outs = [cuda.device_array((case.stage.batch_size, dim), np.float32) for _ in range(case.num_tables)]
    params = dict(cfg.params())
    with contextlib.ExitStack() as stack:  # popped into Prepared.close once everything is set up
        tables = case.dev_tables
        ids = [[tb.indices for tb in b.tables] for b in case.dev_batches]
        before = None
        if pin is not None:
            hots, p = hot_sets(case, pin)
            pin_fn = stack.enter_context(pinned(tables, dim, hots, case.stage.element_bytes,
                                                       pin.get("pin_every", 1)))
            before = lambda i, t: pin_fn(i, t, s)  # noqa: E731
            params.update(p, pin_every=pin.get("pin_every", 1))
        set_window = None
        if window is not None:
            tables, ids, counts = ranked_tables(case)
            budget = window.get("l2_budget")
            l2 = stack.enter_context(persisting_window(budget))
            hit = float(window.get("hit_ratio", 1.0))
            row_bytes = dim * case.stage.element_bytes
            rows_in = l2window.split_budget(counts, [row_bytes] * case.num_tables, l2.limit_bytes)
            nbytes = [min(n * row_bytes, l2.max_window) for n in rows_in]
            set_window = lambda t: l2.set_window(  # noqa: E731
                s, tables[t].device_ctypes_pointer.value, nbytes[t], hit if nbytes[t] else 0.0)
            params.update(l2_budget=l2.limit_bytes, hit_ratio=hit, window_rows=rows_in[0])

        def launch_table(i: int, t: int) -> None:
            if set_window is not None:
                set_window(t)
            tb = case.dev_batches[i].tables[t]
            launch.paper(cfg, tables[t], dim, ids[i][t], tb.offsets, tb.psw, -1, outs[t], s)

        closures = per_table(case, launch_table, outs, params, before)
        return Prepared(**closures, close=stack.pop_all().close)


def ranked_tables(case: Any) -> tuple[list[Any], list[list[Any]], list[np.ndarray]]:
    """Frequency-ranked device tables, remapped device ids per batch and table, ranked counts per table
    (built once per case and kept with it: sweeps prepare many configurations on one case)."""

    def make():
        if backend.SIMULATOR:
            raise DlrmlabError("L2 windows need a CUDA GPU (simulator mode has no L2)")
        ranks = case.rankings()
        tables = [cuda.to_device(np.ascontiguousarray(case.host_tables[t][r.order]).reshape(-1))
                  for t, r in enumerate(ranks)]
        ids = [[cuda.to_device(ranks[t].remap[tb.indices].astype(tb.indices.dtype)) for t, tb in enumerate(b.tables)]
               for b in case.host_batches]
        return tables, ids, [r.ranked_counts for r in ranks]

    return case.derived("paper-ranked", make)
