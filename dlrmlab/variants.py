"""dlrmlab's variants, registered with the benchmark harness by name.

Each is a configuration of a kernel skeleton plus what happens around the launch:

* per-table paper family (one launch per table, as PyTorch): ``baseline``, ``optmt``, ``rpf``,
  ``rpf_l1``, ``rpf_shared``, ``l2p`` (pin kernel + embedding), ``l2window`` (ranked rows + persisting
  window), ``combined`` (OptMT + RPF + L2P), ``combined_window`` (OptMT + RPF + window);
* fused (one launch per batch): ``fast``, ``fast_graph`` (CUDA-graph replay), ``fast+l2p``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dlrmlab import api, hotness, l2pin, l2window
from dlrmlab.backend import cuda
from dlrmlab.bench.registry import Prepared, register_variant
from dlrmlab.bench.timing import make_event
from dlrmlab.errors import DlrmlabError
from dlrmlab.kernels import paper

HOT_ROWS = 60_000  # the artifact's hot set


def _derived(case, key: tuple, make):
    """Per-case memo of derived device data (packed or ranked tables, remapped ids): sweeps prepare many
    configurations of one variant on one case, and 3 GB of tables each would not fit."""
    store = case.__dict__.setdefault("_derived", {})
    if key not in store:
        store[key] = make()
    return store[key]


def _split(params: dict, keys: tuple[str, ...]) -> dict:
    return {k: params.pop(k) for k in keys if k in params}


def _case_counts(case, t: int) -> np.ndarray:
    """Access counts of table t over all of the case's batches (the workload's frequencies)."""
    ids = np.concatenate([b.tables[t].indices for b in case.host_batches]).astype(np.int64)
    return hotness.counts(ids, case.stage.embedding_sizes[t])


def _paper_prepare(case, kernel_variant: str, params: dict, around=None) -> Prepared:
    """Per-table launches of a paper-family kernel; ``around(t, stream)`` runs before table t's launch."""
    kp = _split(params, ("max_registers", "prefetch", "prefetch_distance", "block", "grid"))
    cfg, grid = api.paper_config(
        kernel_variant, dtype=case.dtype, mode=case.mode, weighted=case.weighted, padded=False, **kp
    )
    if params:
        raise DlrmlabError(f"unknown parameters for {kernel_variant}: {', '.join(sorted(params))}")
    kernel = paper.build(cfg)
    s, dim = case.stream, case.dim
    tables = case.dev_tables
    outs = [cuda.device_array((case.stage.batch_size, dim), np.float32) for _ in tables]

    def launch_table(i: int, t: int) -> None:
        tb = case.dev_batches[i].tables[t]
        kernel[grid, cfg.block, s](tables[t], dim, tb.indices, tb.offsets, tb.psw, -1, outs[t])

    before = None if around is None else (lambda i, t: around(t, s))
    return _per_table(case, launch_table, outs, {**cfg.params(), "grid": grid}, before=before)


def _per_table(case, launch_table, outs: list, params: dict, close=lambda: None, before=None) -> Prepared:
    """Closures for a stage of one launch per table: ``before(i, t)`` (a pin kernel, say) then
    ``launch_table(i, t)`` for each table t of batch i, on the case's stream. Per-kernel timing brackets
    the embedding launches only, as the paper's artifact timed them."""
    s = case.stream

    def run(i: int) -> None:
        for t in range(case.num_tables):
            if before is not None:
                before(i, t)
            launch_table(i, t)

    def per_kernel(i: int):
        pairs = []
        for t in range(case.num_tables):
            if before is not None:
                before(i, t)
            e0, e1 = make_event(), make_event()
            e0.record(s)
            launch_table(i, t)
            e1.record(s)
            pairs.append((e0, e1))
        return pairs

    def result(i: int) -> list[np.ndarray]:
        run(i)
        s.synchronize()
        return [o.copy_to_host() for o in outs]

    return Prepared(run, result, params, "embedding_bag_paper", per_kernel, close)


def _kernel_variant(name: str):
    def prepare(case, **params: Any) -> Prepared:
        return _paper_prepare(case, name, dict(params))

    prepare.__name__ = prepare.__qualname__ = f"prepare_{name}"
    return prepare


def _prepare_l2p(case, kernel_variant: str, params: dict) -> Prepared:
    """Pin each table's hot rows (evict_last prefetch) right before its embedding kernel (the artifact's
    order). ``pin_every=N`` pins only on every N-th batch: the cost amortised when the hot set stays."""
    k_given = params.pop("hot_rows", None)
    k = int(k_given) if k_given is not None else min(HOT_ROWS, min(case.stage.embedding_sizes))
    hot_file = params.pop("hot_file", None)
    pin_every = int(params.pop("pin_every", 1))
    if pin_every < 1:
        raise DlrmlabError(f"pin_every must be >= 1, got {pin_every}")
    hots = []
    for t, rows in enumerate(case.stage.embedding_sizes):
        if hot_file:
            hot = l2pin.hot_rows(rows, path=hot_file)
        else:
            if k > rows:
                raise DlrmlabError(f"hot set of {k} rows is larger than table {t} ({rows} rows)")
            c = _case_counts(case, t)
            order = np.argsort(-c, kind="stable")[:k]
            hot = order[c[order] > 0].astype(np.int64)
        hots.append(cuda.to_device(hot))
    state = {"batch": 0}
    eb = case.stage.element_bytes

    def around(t: int, s) -> None:
        if state["batch"] % pin_every == 0:
            l2pin.pin(case.dev_tables[t], case.dim, hots[t], eb, s)
        if t == case.num_tables - 1:
            state["batch"] += 1

    prep = _paper_prepare(case, kernel_variant, params, around)
    prep.params.update(hot_rows=k if not hot_file else None, hot_file=hot_file, pin_every=pin_every)
    prep.kernel_regex = "embedding_bag_paper|pin_hot_rows"
    return prep


def _prepare_window(case, kernel_variant: str, params: dict) -> Prepared:
    """Rows ranked by frequency (tables permuted once, ids remapped), one persisting window per table,
    the carve-out split across tables by accesses per byte."""
    budget = params.pop("l2_budget", None)
    hit_ratio = float(params.pop("hit_ratio", 1.0))
    lim = l2window.l2_limits()
    budget = int(budget or lim["persisting_l2_max_bytes"])
    row_bytes = case.dim * case.stage.element_bytes

    def ranked():
        tables, remaps, counts = [], [], []
        for t in range(case.num_tables):
            c = _case_counts(case, t)
            order = np.argsort(-c, kind="stable")
            remap = np.empty_like(order)
            remap[order] = np.arange(order.size)
            counts.append(c[order])
            remaps.append(remap)
            tables.append(cuda.to_device(np.ascontiguousarray(case.host_tables[t][order]).reshape(-1)))
        # Remapped ids per batch and table, on the device, built once.
        ids = [
            [cuda.to_device(remaps[t][tb.indices].astype(tb.indices.dtype)) for t, tb in enumerate(b.tables)]
            for b in case.host_batches
        ]
        return tables, counts, ids

    ranked_tables, counts, ranked_ids = _derived(case, ("ranked-tables",), ranked)
    n_rows = l2window.split_budget(counts, [row_bytes] * case.num_tables, budget)
    kp = _split(params, ("max_registers", "prefetch", "prefetch_distance", "block", "grid"))
    if params:
        raise DlrmlabError(f"unknown parameters: {', '.join(sorted(params))}")
    cfg, grid = api.paper_config(kernel_variant, dtype=case.dtype, mode=case.mode, weighted=case.weighted, **kp)
    kernel = paper.build(cfg)
    s, dim = case.stream, case.dim
    outs = [cuda.device_array((case.stage.batch_size, dim), np.float32) for _ in ranked_tables]
    # Everything is validated: only now change L2 state (restored by close()).
    ctx = l2window.persisting_l2(budget)
    l2 = ctx.__enter__()
    closed = {"done": False}

    def close() -> None:
        if not closed["done"]:
            closed["done"] = True
            ctx.__exit__(None, None, None)

    def launch_table(i: int, t: int) -> None:
        w = ranked_tables[t]
        nbytes = min(n_rows[t] * row_bytes, lim["access_policy_max_window_bytes"])
        l2.set_window(s, w.device_ctypes_pointer.value, nbytes, hit_ratio if nbytes else 0.0)
        tb = case.dev_batches[i].tables[t]
        kernel[grid, cfg.block, s](w, dim, ranked_ids[i][t], tb.offsets, tb.psw, -1, outs[t])

    p = {**cfg.params(), "grid": grid, "l2_budget": budget, "hit_ratio": hit_ratio, "window_rows": n_rows[0]}
    return _per_table(case, launch_table, outs, p, close)


def _prepare_fast(case, graph: bool = False, pin: bool = False, window: bool = False, **params: Any) -> Prepared:
    """The fused kernel, optionally replayed from CUDA graphs, with hot rows pinned (evict_last prefetch
    of the hottest rows of all tables, each batch) or behind one persisting L2 window (frequency-ranked
    tables with every table's hot rows packed together at the front)."""
    from dlrmlab.fast import PackedTables, StageGraph, fused_forward
    from dlrmlab.kernels import fused

    hot_k = int(params.pop("hot_rows", 0))
    budget = params.pop("l2_budget", None)
    pin_every = int(params.pop("pin_every", 1))
    if pin_every < 1:
        raise DlrmlabError(f"pin_every must be >= 1, got {pin_every}")
    s, mode, b = case.stream, case.mode, case.stage.batch_size
    # The kernel configuration first: a bad parameter fails here, before any L2 state is changed.
    cfg = fused.choose(
        case.dim, case.dtype, pooling_mean=case.stage.pooling.mean, mode=mode, weighted=case.weighted,
        split_hot=window, **params,
    )
    row_bytes = case.dim * case.stage.element_bytes
    out = cuda.device_array((b * case.num_tables, case.dim), np.float32)
    closers: list = []

    if window:
        lim = l2window.l2_limits()
        budget = int(budget or lim["persisting_l2_max_bytes"])

        def ranked():
            counts = [_case_counts(case, t) for t in range(case.num_tables)]
            tables = PackedTables.ranked_split(case.host_tables, counts, budget, dtype=case.dtype)
            ids = [
                cuda.to_device(np.concatenate([tables.remap_ids(t, tb.indices) for t, tb in enumerate(hb.tables)]))
                for hb in case.host_batches
            ]
            return tables, ids

        tables, ranked_ids = _derived(case, ("fast-ranked", budget), ranked)
        jagged = [
            (ids, db.jagged.offsets, db.jagged.table_offsets, db.jagged.psw if case.weighted else None)
            for ids, db in zip(ranked_ids, case.dev_batches, strict=True)
        ]
        ctx = l2window.persisting_l2(budget)
        l2 = ctx.__enter__()
        closers.append(lambda: ctx.__exit__(None, None, None))
        nbytes = min(tables.hot_bytes, lim["access_policy_max_window_bytes"])
        hit = min(1.0, budget / nbytes) if nbytes else 0.0
        l2.set_window(s, tables.packed.device_ctypes_pointer.value, nbytes, hit)
    else:
        tables = _derived(case, ("fast-packed",), lambda: PackedTables.from_arrays(case.host_tables, dtype=case.dtype))
        jagged = [
            (j.indices, j.offsets, j.table_offsets, j.psw if case.weighted else None)
            for j in (db.jagged for db in case.dev_batches)
        ]

    pin_fn = None
    if pin:
        # The hottest rows of all tables (global frequency), as many as fit in half of L2; pinned over the
        # packed buffer, where table t's row r is packed row offset(t) + r.
        from dlrmlab.occupancy import device_limits

        k_total = hot_k or (device_limits().get("l2_bytes", 50 << 20) // 2) // row_bytes
        flat = np.concatenate([_case_counts(case, t) for t in range(case.num_tables)])
        top = np.argsort(-flat, kind="stable")[:k_total]
        hot_dev = cuda.to_device(np.sort(top[flat[top] > 0]).astype(np.int64))
        pin_fn = lambda st: l2pin.pin(tables.packed, case.dim, hot_dev, case.stage.element_bytes, st)  # noqa: E731

    def enqueue(i: int, stream) -> None:
        # Batch i re-pins when i % pin_every == 0: with pin_every > 1 the pin's cost is amortised over
        # batches that find the hot set still resident (graphs are captured per batch, so this holds there).
        if pin_fn is not None and i % pin_every == 0:
            pin_fn(stream)
        fused_forward(tables, jagged[i], mode=mode, out=out, stream=stream, config=cfg)

    graphs: list = []
    try:
        if graph:
            for i in range(case.n_batches):
                graphs.append(StageGraph.capture(lambda st, i=i: enqueue(i, st), inputs=[out], stream=s))
    except Exception:
        for c in closers:
            c()
        raise

    def run(i: int) -> None:
        if graphs:
            graphs[i].replay()
        else:
            enqueue(i, s)

    def result(i: int) -> list[np.ndarray]:
        run(i)
        s.synchronize()
        host = out.copy_to_host()
        return [host[t * b : (t + 1) * b] for t in range(case.num_tables)]

    def close() -> None:
        for g in graphs:
            g.close()
        graphs.clear()
        while closers:
            closers.pop()()

    p = {**cfg.params(), "graph": graph, "pin": pin, "window": window}
    if pin:
        p.update(pin_every=pin_every, hot_rows=int(hot_dev.shape[0]))
    if window:
        p.update(l2_budget=budget, window_bytes=tables.hot_bytes)
    return Prepared(run, result, p, "embedding_bag_fused|pin_hot_rows", None, close)


for _name, _desc in [
    ("baseline", "PyTorch 2.1's kernel in Numba: block (32, 8), grid 1024, one launch per table"),
    ("optmt", "baseline with a register cap (OptMT; default 42, the paper's -maxrregcount)"),
    ("rpf", "baseline with register prefetching (distance 2 by default)"),
    ("rpf_l1", "baseline with prefetch.global.L1 ahead of use"),
    ("rpf_shared", "baseline with rows staged in shared memory"),
    ("optmt_rpf", "OptMT + RPF"),
]:
    register_variant(_name, _kernel_variant(_name), _desc)


def prepare_l2p(case, **params: Any) -> Prepared:
    return _prepare_l2p(case, "baseline", dict(params))


def prepare_combined(case, **params: Any) -> Prepared:
    return _prepare_l2p(case, "optmt_rpf", dict(params))


def prepare_l2window(case, **params: Any) -> Prepared:
    return _prepare_window(case, "baseline", dict(params))


def prepare_combined_window(case, **params: Any) -> Prepared:
    return _prepare_window(case, "optmt_rpf", dict(params))


def _fast(name: str, **fixed: Any):
    def prepare(case, **params: Any) -> Prepared:
        return _prepare_fast(case, **fixed, **params)

    prepare.__name__ = prepare.__qualname__ = f"prepare_{name.replace('+', '_')}"
    return prepare


register_variant("l2p", prepare_l2p, "pin kernel (evict_last prefetch of 60K hot rows) before each table's kernel")
register_variant("combined", prepare_combined, "OptMT + RPF + L2P (the paper's combination)")
register_variant("l2window", prepare_l2window, "frequency-ranked rows + persisting L2 window per table", gpu_only=True)
register_variant("combined_window", prepare_combined_window, "OptMT + RPF + persisting window", gpu_only=True)
for _name, _fixed, _gpu, _desc in [
    ("fast", {}, False, "fused kernel: all tables in one launch, 16-byte loads, rows in flight"),
    ("fast_graph", {"graph": True}, True, "fast, replayed from a CUDA graph"),
    ("fast+l2p", {"pin": True}, False, "fast after pinning the hottest rows of all tables in L2"),
    ("fast_graph+l2p", {"pin": True, "graph": True}, True, "fast+l2p, replayed from a CUDA graph"),
    ("fast+window", {"window": True}, True, "fast on frequency-ranked tables, hot rows behind one L2 window"),
    ("fast_graph+window", {"window": True, "graph": True}, True, "fast+window, replayed from a CUDA graph"),
]:
    register_variant(_name, _fast(_name, **_fixed), _desc, gpu_only=_gpu)
