"""The fast path's variants: one launch for all tables, optionally replayed from CUDA graphs, with the
hottest rows of all tables pinned first, or behind one persisting L2 window over frequency-ranked tables."""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np

from dlrmlab import backend, device, quant, rules
from dlrmlab.backend import cuda
from dlrmlab.config import Combine
from dlrmlab.errors import DlrmlabError
from dlrmlab.fused import PackedTables, configure_here, fused_forward
from dlrmlab.graph import captured
from dlrmlab.prepared import Prepared
from dlrmlab.variants.around import persisting_window, pinned

#: The fast kernel's name (:func:`dlrmlab.kernels.fused.build`), for Nsight Compute.
KERNEL_REGEX = "embedding_bag_fast"


def _packed(case: Any) -> tuple[PackedTables, list[tuple]]:
    tables = case.derived("fast-packed", lambda: PackedTables.from_arrays(case.host_tables, dtype=case.dtype))
    jagged = [(j.indices, j.offsets, j.table_offsets, j.psw if case.weighted else None)
              for j in (db.jagged for db in case.dev_batches)]
    return tables, jagged


def _ranked(case: Any, budget: int) -> tuple[PackedTables, list[tuple]]:
    def make():
        tables = PackedTables.ranked_split(case.host_tables, case.rankings(), budget, dtype=case.dtype)
        ids = [cuda.to_device(np.concatenate([tables.remap_ids(t, tb.indices) for t, tb in enumerate(hb.tables)]))
               for hb in case.host_batches]
        return tables, ids

    tables, ids = case.derived(f"fast-ranked-{budget}", make)
    jagged = [(i, db.jagged.offsets, db.jagged.table_offsets, db.jagged.psw if case.weighted else None)
              for i, db in zip(ids, case.dev_batches, strict=True)]
    return tables, jagged


def _global_hot(case: Any, tables: PackedTables, hot_rows: int | None) -> np.ndarray:
    """The hottest rows of all tables together (as many as fit in half of L2 by default), as packed rows:
    table t's row r is packed row (first row of t) + r."""
    row_bytes = case.stage.row_bytes
    k = int(hot_rows or (device.limits()["l2_bytes"] // 2) // row_bytes)
    first = np.concatenate([[0], np.cumsum(case.stage.embedding_sizes)[:-1]])
    ranks = case.rankings()
    rows = np.concatenate([r.order + f for r, f in zip(ranks, first, strict=True)])
    counts = np.concatenate([r.ranked_counts for r in ranks])
    top = np.argsort(-counts, kind="stable")[:k]
    return np.sort(rows[top[counts[top] > 0]])


LAYOUTS = ("auto", "plain", "split-hot")
#: The ``layout`` knob: "auto" (:func:`dlrmlab.rules.choose_layout`), "plain" or "split-hot".
LAYOUT_KNOBS = frozenset({"layout"})


def choose_layout(case: Any, knobs: dict[str, dict]) -> rules.LayoutChoice:
    """The row layout: the variant's own (``+window``: split-hot; ``+l2p``: plain), or, for a variant that
    takes the ``layout`` knob, the one asked for or the rule's choice from the case's hotness."""
    asked = knobs["layout"].get("layout", "auto") if "layout" in knobs else None
    if asked not in (None, *LAYOUTS):
        raise DlrmlabError(f"layout must be one of {', '.join(LAYOUTS)}, got {asked!r}")
    if asked is None or asked != "auto":
        layout = asked or ("split-hot" if "window" in knobs and "layout" not in knobs else "plain")
        return rules.LayoutChoice(layout, float("nan"), 0, "fixed by the variant" if asked is None else "asked for")
    persisting = device.limits()["persisting_l2_max_bytes"]
    budget = knobs.get("window", {}).get("l2_budget") or persisting
    row_bytes = case.stage.row_bytes
    return rules.choose_layout([], row_bytes, budget, counts=[r.ranked_counts for r in case.rankings()],
                               pooling_mean=case.stage.pooling.mean)


def prepare(case: Any, knobs: dict[str, dict], graph: bool = False) -> Prepared:
    """The fast kernel; ``knobs['pin']`` pins the global hot set before each batch; the split-hot layout
    (``+window``, or chosen by the ``layout`` knob) puts every table's hot rows behind one window; ``graph``
    replays each batch from a CUDA graph."""
    choice = choose_layout(case, knobs)
    pin = knobs.get("pin")
    window = knobs.get("window", {}) if choice.split_hot else None
    combine = Combine(case.mode, case.weighted, False)
    # The configuration first: a bad knob fails here, before anything is allocated or changed.
    cfg, source = configure_here(case.dim, case.dtype, case.stage.pooling.mean, combine=combine,
                                 split_hot=window is not None, **knobs.get("fast", {}))
    s, b = case.stream, case.stage.batch_size
    params = {**cfg.params(), "config_source": source, "graph": graph, **choice.params()}
    set_window = None
    with contextlib.ExitStack() as stack:
        if window is not None and backend.SIMULATOR:  # no L2 to steer there: the split-hot rows alone
            tables, jagged = _ranked(case, window.get("l2_budget") or device.limits()["persisting_l2_max_bytes"])
        elif window is not None:
            l2 = stack.enter_context(persisting_window(window.get("l2_budget")))
            tables, jagged = _ranked(case, l2.limit_bytes)
            nbytes = min(tables.hot_bytes, l2.max_window)
            hit = min(1.0, l2.limit_bytes / nbytes) if nbytes else 0.0
            set_window = lambda: l2.set_window(s, tables.packed.device_ctypes_pointer.value, nbytes, hit)  # noqa: E731
            set_window()  # graphs capture the stream's window; plain runs set it again (others share the stream)
            params.update(l2_budget=l2.limit_bytes, window_bytes=tables.hot_bytes)
        else:
            tables, jagged = _packed(case)
        pin_fn = None
        if pin is not None and tables.dtype in quant.FORMATS:
            raise DlrmlabError(f"pinning hot rows (+l2p) reads float tables; for {tables.dtype} rows use +window")
        if pin is not None:
            hot = _global_hot(case, tables, pin.get("hot_rows"))
            every = pin.get("pin_every", 1)
            pin_fn = stack.enter_context(pinned([tables.packed], case.dim, [hot], case.stage.element_bytes,
                                                       every))
            params.update(hot_rows=int(hot.size), pin_every=every)
        out = cuda.device_array((b * case.num_tables, case.dim), np.float32)

        def enqueue(i: int, stream: Any) -> None:
            if pin_fn is not None:
                pin_fn(i, 0, stream)
            fused_forward(tables, jagged[i], mode=case.mode, out=out, stream=stream, config=cfg)

        replays = None
        if graph:
            batches = [lambda st, i=i: enqueue(i, st) for i in range(case.n_batches)]
            replays = stack.enter_context(captured(batches, s, [out]))

        def run(i: int) -> None:
            if replays is not None:
                replays[i].replay()
            else:
                if set_window is not None:
                    set_window()
                enqueue(i, s)

        def result(i: int) -> list[np.ndarray]:
            run(i)
            s.synchronize()
            host = out.copy_to_host()
            return [host[t * b : (t + 1) * b] for t in range(case.num_tables)]

        return Prepared(run, result, params, None, stack.pop_all().close)
