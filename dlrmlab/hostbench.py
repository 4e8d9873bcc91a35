"""Tables larger than the GPU: the host link's rates, and the host and cached placements' serving loop
against their bound (``dlrmlab host-tables``).

1. :func:`link_rates` measures what the bound is made of, at each row size: bulk host-to-device copies,
   zero-copy gathers of random rows from pinned host memory (the cache's fill), and the same gathers from
   HBM. :func:`fused_hbm_rate` measures the fused kernel itself over tables in HBM (what a hit costs at
   best), :func:`fused_host_rate` the fused kernel reading random rows zero-copy (the ``host`` placement).
2. :func:`run_cached` serves batches through an HBM cache (:mod:`dlrmlab.pipeline`) and reports the time
   per batch, the effective bandwidth (looked-up bytes over time), the counters, the side stream's GPU time
   in plans and fills, and the share of the bound reached (:func:`bound_ms`: misses at the fill rate,
   lookups at the HBM rate; ``host``: each batch's distinct rows at the zero-copy rate). Beside it, the
   predicted hit rates (:func:`predicted_hit_rates`): the L2 model's LRU core run at the cache's size, and
   the hottest rows' share of lookups less their first fetches (what an LFU cache approaches).

Trace ids (under 500K) are spread over larger tables by a bijection, ``(id x 1,000,003 + 7,919 t) mod
rows``: the same reuse, scattered through each table, different per table. (On tables of fewer rows than
the trace's 500K the map folds ids together: the tiny preset only exercises the code.)
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dlrmlab import backend, hotness, l2model, launch, reference
from dlrmlab.backend import cuda
from dlrmlab.bench.env import environment
from dlrmlab.bench.results import append_results
from dlrmlab.config import table_dtype
from dlrmlab.datasets import canonical_name
from dlrmlab.errors import DlrmlabError
from dlrmlab.fused import PackedTables, configure_here, fused_forward
from dlrmlab.hbmcache import CacheStats, HbmCache, geometry, segments, torch_module
from dlrmlab.pipeline import CachedStage, host_packed
from dlrmlab.placement import HostTables, Placement, host_tables
from dlrmlab.workload import EmbeddingStage, JaggedBatch, Workload
from dlrmlab.workload import preset as make_preset

LINK_ROW_BYTES = (128, 256, 512, 1024)
SPREAD_MULTIPLIER, SPREAD_OFFSET = 1_000_003, 7_919
TEMPLATE_ROWS = 65_521  # host tables repeat a random block of this many rows (a prime: no aliasing with strides)
CHECK_BAGS = 32  # bags per table checked against the NumPy reference, per run
TRACE_ROWS = 500_000  # the artifact traces' ids are under this


def fill_tables(ht: HostTables, seed: int = 0, threads: int = 8) -> float:
    """Fill the host tables fast (row r = a random template's row r mod TEMPLATE_ROWS); seconds taken."""
    t0 = time.perf_counter()
    rng = np.random.default_rng([seed, 0x7AB1E])
    k = min(TEMPLATE_ROWS, ht.total_rows)
    template = rng.standard_normal((k, ht.dim), dtype=np.float32).astype(table_dtype(ht.dtype).storage)
    h = ht.host

    def block(s: int) -> None:
        n = min(k, ht.total_rows - s)
        h[s : s + n] = template[:n]

    with ThreadPoolExecutor(max(1, threads)) as pool:
        list(pool.map(block, range(0, ht.total_rows, k)))
    return time.perf_counter() - t0


def spread(ids: np.ndarray, rows: int, t: int) -> np.ndarray:
    """Trace ids onto a table of ``rows`` (see the module docstring); a bijection when gcd(multiplier, rows)
    is 1, else still a fixed map."""
    return (ids.astype(np.int64) * SPREAD_MULTIPLIER + SPREAD_OFFSET * t) % rows


def make_batches(stage: EmbeddingStage, dataset: str, n: int, seed: int = 0) -> tuple[list[JaggedBatch], str]:
    """``n`` batches of ``dataset`` for ``stage`` (trace ids spread over the tables); and the id map used."""
    is_trace = canonical_name(dataset).startswith("trace:")
    # a trace's ids are drawn as they are (no id dropped, whatever the tables' rows), then spread
    drawn = stage.with_(embedding_sizes=tuple(max(r, TRACE_ROWS) for r in stage.embedding_sizes))
    wl = Workload(drawn if is_trace else stage, dataset, seed=seed)
    out = []
    for b in wl.batches(n):
        if is_trace:
            for t, tb in enumerate(b.tables):
                tb.indices = spread(tb.indices, stage.embedding_sizes[t], t).astype(tb.indices.dtype)
        out.append(b.jagged())
    id_map = f"(id*{SPREAD_MULTIPLIER}+{SPREAD_OFFSET}*t) mod rows" if is_trace else "none"
    return out, id_map


# --- the host link -----------------------------------------------------------------------------------------


def _time_ms(fn: Callable[[], None], repeats: int) -> float:
    """Median ms of ``fn`` (launches on stream 0) between CUDA events (host clock in the simulator)."""
    times = []
    for _ in range(repeats):
        start, end = backend.event(), backend.event()
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return float(np.median(times))


def link_rates(ht: HostTables, row_bytes: Sequence[int] = LINK_ROW_BYTES, nbytes: int = 256 << 20,
               repeats: int = 5, seed: int = 0) -> pd.DataFrame:
    """GB/s of bulk copies (pinned host -> device) and of random-row gathers from host memory (zero-copy)
    and from HBM, per row size. Gathers write row i to row i of a device buffer (``nbytes`` long)."""
    rng = np.random.default_rng(seed)
    elems = ht.total_rows * ht.dim * table_dtype(ht.dtype).bytes // 4
    nbytes = min(int(nbytes), elems * 4)
    host_words = ht.buffer.device(np.float32, (elems,))
    dst = cuda.device_array(nbytes // 4, np.float32)
    hbm_src = cuda.device_array(nbytes, np.float32)  # hbm gathers: random rows of a buffer >> L2 (4x nbytes)
    rows: list[dict] = []
    ms = _time_ms(lambda: dst.copy_to_device(ht.host.reshape(-1).view(np.float32)[: nbytes // 4]), repeats)
    rows.append({"measure": "bulk_h2d", "row_bytes": None, "bytes": nbytes, "ms": ms, "gbps": nbytes / ms / 1e6})
    for rb in row_bytes:
        dim = int(rb) // 4
        n = nbytes // int(rb)
        to = cuda.to_device(np.arange(n, dtype=np.int64))
        for name, src, src_rows in (("host_gather", host_words, elems // dim), ("hbm_gather", hbm_src, 4 * n)):
            idx = cuda.to_device(rng.integers(0, src_rows, n, dtype=np.int64))
            ms = _time_ms(lambda src=src, idx=idx, to=to, n=n, dim=dim: launch.gather_rows(src, idx, dst, to, n, dim),
                          repeats)
            rows.append({"measure": name, "row_bytes": int(rb), "bytes": n * int(rb), "ms": ms,
                         "gbps": n * int(rb) / ms / 1e6})
    return pd.DataFrame(rows)


def fused_hbm_rate(stage: EmbeddingStage, batch: JaggedBatch, rows: int = 1 << 20, repeats: int = 5) -> dict:
    """GB/s of the fused kernel itself over tables in HBM (``rows`` per table, far larger than L2), on
    ``batch``'s ids folded into them: what a lookup that hits the cache costs at best."""
    r = min(int(rows), min(stage.embedding_sizes))
    dim, t = stage.embedding_dim, stage.num_tables
    dt = table_dtype(stage.dtype)
    packed = cuda.device_array(t * r * dim, dt.storage)  # the values do not matter to the time
    tables = PackedTables(packed, cuda.to_device(np.arange(t, dtype=np.int64) * r * dim), (r,) * t, dim, dt.name)
    jagged = (cuda.to_device(batch.indices % r), cuda.to_device(batch.offsets), cuda.to_device(batch.table_offsets),
              None)
    out = cuda.device_array((int(batch.offsets.size) - 1, dim), np.float32)
    cfg, _ = configure_here(dim, dt.name, batch.indices.size / max(1, batch.offsets.size - 1))
    ms = _time_ms(lambda: fused_forward(tables, jagged, out=out, config=cfg, validate=False), repeats)
    nbytes = int(batch.indices.size) * dim * dt.bytes
    return {"measure": "hbm_fused", "row_bytes": dim * dt.bytes, "bytes": nbytes, "ms": ms, "gbps": nbytes / ms / 1e6}


def fused_host_rate(ht: HostTables, batch: JaggedBatch, repeats: int = 5) -> dict:
    """GB/s of the fused kernel reading every row zero-copy from the host tables, on ``batch``'s ids
    (uniform random ones: no row read twice, so no help from L2): the zero-copy rate at the tables' row
    size that the ``host`` placement runs at."""
    jagged = (cuda.to_device(batch.indices), cuda.to_device(batch.offsets), cuda.to_device(batch.table_offsets),
              None)
    out = cuda.device_array((int(batch.offsets.size) - 1, ht.dim), np.float32)
    packed = host_packed(ht)
    cfg, _ = configure_here(ht.dim, ht.dtype, batch.indices.size / max(1, batch.offsets.size - 1))
    ms = _time_ms(lambda: fused_forward(packed, jagged, out=out, config=cfg, validate=False), repeats)
    nbytes = int(batch.indices.size) * ht.row_bytes
    return {"measure": "host_fused", "row_bytes": ht.row_bytes, "bytes": nbytes, "ms": ms, "gbps": nbytes / ms / 1e6}


def _rate(rates: pd.DataFrame, measure: str, row_bytes: int) -> float:
    """The measured GB/s of ``measure`` at the row size closest to ``row_bytes``."""
    r = rates[rates["measure"] == measure]
    i = (r["row_bytes"] - row_bytes).abs().idxmin()
    return float(r.loc[i, "gbps"])


# --- predictions -------------------------------------------------------------------------------------------


#: the predicted hit rates beside each cached run
PREDICTIONS = ("predicted_hit_rate_lru", "predicted_hit_rate_lfu", "skew_curve_hit_rate")


def predicted_hit_rates(batches: list[JaggedBatch], warmup: int, rows: int, row_bytes: int, cache_rows: int,
                        ways: int) -> dict:
    """Table 0 through a cache of its share of the budget, over the batches after ``warmup``:

    * ``lru``: the L2 model's LRU core (:func:`dlrmlab.l2model.simulate`, one row a line, sets by row modulo);
    * ``skew_curve``: the hottest ``cache_rows`` rows' share of the lookups (a cache holding exactly them);
    * ``lfu``: the same less one compulsory miss per hot row not looked up before (an LFU cache settles on
      the most frequent rows, but must fetch each once)."""
    ids = [[b.table(0).indices] for b in batches]
    ways = max(1, min(ways, cache_rows))
    sets = max(1, cache_rows // ways)
    cfg = l2model.L2Config(size=sets * ways * row_bytes, line=row_bytes, sector=row_bytes, ways=ways,
                           persisting_max=0)
    trace = l2model.Trace(ids[warmup:], (rows,))
    warm = l2model.Trace(ids[:warmup], (rows,)) if warmup else None
    lru = l2model.simulate(trace, row_bytes, cfg, warmup=warm)
    timed = np.concatenate([i[0] for i in ids[warmup:]])
    counts = hotness.counts(timed, rows)
    k = min(sets * ways, counts.size)
    hot = np.argpartition(counts, counts.size - k)[counts.size - k :]
    hot = hot[counts[hot] > 0]
    seen = np.zeros(rows, bool)
    for i in ids[:warmup]:
        seen[i[0]] = True
    share = float(counts[hot].sum()) / max(1, timed.size)
    first_fetches = int((~seen[hot]).sum())
    return {"predicted_hit_rate_lru": lru.hit_rate, "skew_curve_hit_rate": share,
            "predicted_hit_rate_lfu": share - first_fetches / max(1, timed.size)}


# --- serving runs ------------------------------------------------------------------------------------------


def _check(ht: HostTables, batch: JaggedBatch, out: np.ndarray, mode: str) -> float:
    """Largest error of the first bags of each table against the NumPy reference over the host tables."""
    err = 0.0
    n_bags = batch.table_offsets[1] - batch.table_offsets[0]
    for t in range(batch.num_tables):
        tb = batch.table(t)
        k = min(CHECK_BAGS, tb.offsets.size - 1)
        want = reference.embedding_bag(tb.indices[: tb.offsets[k]], ht.table(t), tb.offsets[: k + 1], mode=mode,
                                       include_last_offset=True)
        got = out[t * n_bags : t * n_bags + k]
        err = max(err, float(np.max(np.abs(got - want), initial=0.0)))
    return err


def run_cached(ht: HostTables, batches: list[JaggedBatch], placement: Placement, warmup: int,
               mode: str = "sum") -> dict:
    """Serve ``batches`` through an HBM cache; time the batches after ``warmup`` (wall clock: the CPU's
    enqueueing, the GPU's plans, fills and kernels), and sum their counters. Beside the time: the side
    stream's GPU time in plans and in fills, and the CPU's time enqueueing them."""
    max_ids = max(int(b.indices.size) for b in batches)
    max_bags = max(int(b.offsets.size) - 1 for b in batches)
    stage = CachedStage(ht, placement, max_ids, max_bags, mode=mode, time_side=True)
    try:
        out = cuda.device_array((max_bags, ht.dim), np.float32)
        before, enqueued, t0 = CacheStats(), 0.0, time.perf_counter()
        pre = stage.prefetch(batches[0])
        for i in range(len(batches)):
            stage.forward(pre, out[: pre.n_bags])
            if i == warmup - 1:
                stage.synchronize()
                before, enqueued, t0 = stage.cache.stats(), stage.enqueue_seconds, time.perf_counter()
            if i + 1 < len(batches):
                pre = stage.prefetch(batches[i + 1])
        stage.synchronize()
        seconds = time.perf_counter() - t0
        plan_ms, fill_ms = stage.side_ms(first=warmup)
        err = _check(ht, batches[-1], out.copy_to_host()[: batches[-1].offsets.size - 1], mode)
        return {"seconds": seconds, "host_seconds": stage.enqueue_seconds - enqueued, "plan_gpu_ms": plan_ms,
                "fill_gpu_ms": fill_ms, "max_abs_err": err, "cache_rows": stage.cache.geometry.slots,
                "ways": stage.cache.geometry.ways, **(stage.cache.stats() - before).as_dict()}
    finally:
        stage.synchronize()


def unique_rows(batches: list[JaggedBatch], rows: Sequence[int]) -> int:
    """Distinct rows of each batch (tables apart), summed over ``batches``: what crosses the host link at
    least once when every row is read zero-copy (counted by torch, on the GPU where there is one)."""
    torch = torch_module()
    dev = "cpu" if backend.SIMULATOR else "cuda"
    base = np.concatenate([[0], np.cumsum(rows)[:-1]]).astype(np.int64)
    total = 0
    for b in batches:
        seg = segments(b.offsets, b.table_offsets)
        g = np.asarray(b.indices, np.int64) + np.repeat(base, np.diff(seg))
        total += int(torch.unique(torch.as_tensor(g, device=dev)).numel())
    return total


def run_host(ht: HostTables, batches: list[JaggedBatch], warmup: int, mode: str = "sum") -> dict:
    """Serve ``batches`` reading every row from host memory (zero-copy); time those after ``warmup``."""
    packed = host_packed(ht)
    dev = [tuple(cuda.to_device(a) for a in (b.indices, b.offsets, b.table_offsets)) + (None,) for b in batches]
    out = cuda.device_array((int(batches[0].offsets.size) - 1, ht.dim), np.float32)
    t0 = time.perf_counter()
    for i, j in enumerate(dev):
        if i == warmup:
            cuda.synchronize()
            t0 = time.perf_counter()
        fused_forward(packed, j, mode=mode, out=out, validate=False)
    cuda.synchronize()
    seconds = time.perf_counter() - t0
    lookups = sum(int(b.indices.size) for b in batches[warmup:])
    err = _check(ht, batches[-1], out.copy_to_host(), mode)
    return {"seconds": seconds, "max_abs_err": err, "lookups": lookups, "hit_rate": 0.0,
            "unique_rows": unique_rows(batches[warmup:], ht.rows)}


def bound_rates(rates: pd.DataFrame, row_bytes: int) -> dict:
    """The measured GB/s a bound is made of, at ``row_bytes``: ``hbm`` (the fused kernel over HBM, else
    the HBM gather), ``fill`` (the gather kernel from host memory: how the cache fetches its misses) and
    ``zero_copy`` (the best measured rate of reading rows zero-copy: that gather or the fused kernel)."""
    has = set(rates["measure"])
    fill = _rate(rates, "host_gather", row_bytes)
    return {"hbm": _rate(rates, "hbm_fused" if "hbm_fused" in has else "hbm_gather", row_bytes), "fill": fill,
            "zero_copy": max(fill, _rate(rates, "host_fused", row_bytes)) if "host_fused" in has else fill}


def bound_ms(row: dict, row_bytes: int, rates: dict) -> float:
    """The fastest a batch can be, from the run's counters and the measured ``rates`` (:func:`bound_rates`).

    ``host``: each batch's distinct rows cross the link once (repeats may come from L2) at the zero-copy
    rate, and every lookup is read at least at the HBM rate: the larger of the two. ``cached``: the missed
    rows fetched at the fill rate, and every lookup read from HBM: their sum, or (pipelined: batch i+1's
    fill overlaps batch i's kernel) the larger."""
    n, rb = row["timed_batches"], row_bytes
    read = row["lookups"] * rb / rates["hbm"]
    if row["placement"] == "host":
        return max(row["unique_rows"] * rb / rates["zero_copy"], read) / 1e6 / n
    fill = row["misses"] * rb / rates["fill"]
    return (max(fill, read) if row["pipelined"] else fill + read) / 1e6 / n


def result_row(stage: EmbeddingStage, dataset: str, id_map: str, placement: Placement, res: dict, warmup: int,
               timed: int, rates: pd.DataFrame, predicted: dict | None, env: dict) -> dict:
    """One tidy result row of a serving run."""
    rb = stage.embedding_dim * stage.element_bytes
    r = bound_rates(rates, rb)
    row = {**env, "dataset": dataset, "id_map": id_map, **placement.params(),
           "placement_spec": str(placement), **stage.describe(), "table_bytes": stage.table_bytes(),
           "cache_bytes": (res.get("cache_rows") or 0) * rb, "warmup_batches": warmup, "timed_batches": timed, **res}
    row["ms_per_batch"] = res["seconds"] * 1e3 / timed
    row["samples_per_s"] = stage.batch_size * timed / res["seconds"]
    row["effective_gbps"] = res["lookups"] * rb / res["seconds"] / 1e9
    for key in ("plan_gpu_ms", "fill_gpu_ms"):
        row[key.replace("_ms", "_ms_per_batch")] = None if res.get(key) is None else res[key] / timed
    row["host_ms_per_batch"] = None if res.get("host_seconds") is None else res["host_seconds"] * 1e3 / timed
    row["hbm_gbps"], row["host_gather_gbps"], row["zero_copy_gbps"] = r["hbm"], r["fill"], r["zero_copy"]
    row["bound_ms"] = bound_ms(row, rb, r)
    row["share_of_bound"] = row["bound_ms"] / row["ms_per_batch"]
    row.update(predicted or dict.fromkeys(PREDICTIONS))
    return row


def _free_pending() -> None:
    """Free device memory the last run left (Numba's queued releases, torch's cached blocks), so the next
    cache's memory check sees it free."""
    if not backend.SIMULATOR:
        gc.collect()
        cuda.current_context().deallocations.clear()
        torch_module().cuda.empty_cache()


def placements(budgets: Sequence[float], ways: int) -> list[Placement]:
    """Per-table LRU caches, pipelined, at every budget; at the middle budget also LFU, serial (no
    pipeline) and one shared cache; and the ``host`` placement (no cache)."""
    base = [Placement("cached", budget=float(b), ways=ways, shared=False) for b in budgets]
    mid = base[len(base) // 2]
    return [*base, mid.with_(policy="lfu"), mid.with_(pipelined=False), mid.with_(shared=True), Placement("host")]


def measure_link(ht: HostTables, stage: EmbeddingStage, seed: int = 0) -> pd.DataFrame:
    """Every rate a bound is made of (:func:`link_rates`, :func:`fused_hbm_rate`, :func:`fused_host_rate`),
    small and once each in the simulator (one Python thread per CUDA thread there)."""
    small = backend.SIMULATOR
    repeats = 1 if small else 5
    rates = link_rates(ht, nbytes=16 << 10 if small else 256 << 20, repeats=repeats, seed=seed)
    probe, _ = make_batches(stage, "random", 1, seed)
    extra = [fused_hbm_rate(stage, probe[0], repeats=repeats), fused_host_rate(ht, probe[0], repeats=repeats)]
    return pd.concat([rates, pd.DataFrame(extra)], ignore_index=True)


def run(stage: EmbeddingStage, datasets: Sequence[str], budgets: Sequence[float], out_dir: Any, warmup: int = 4,
        timed: int = 10, ways: int = 32, threads: int = 16, seed: int = 0,
        progress: Callable[[str], None] = print, command: str = "") -> pd.DataFrame:
    """The whole measurement: pin and fill the tables (``threads`` CPU threads), the link's rates
    (``host_link.csv``), then every placement on every dataset (``host_tables.csv``), rows appended as each
    run finishes. The tables are unpinned on every exit, Ctrl-C included."""
    env = {**environment(), "command": command}
    rb = stage.embedding_dim * stage.element_bytes
    t0 = time.perf_counter()
    with host_tables(stage.embedding_sizes, stage.embedding_dim, stage.dtype) as ht:
        pin_s = time.perf_counter() - t0
        fill_s = fill_tables(ht, seed, threads)
        progress(f"pinned {ht.nbytes / 1e9:.1f} GB of host tables in {pin_s:.1f} s, filled in {fill_s:.1f} s")
        rates = measure_link(ht, stage, seed)
        append_results(rates.assign(**env, table_bytes=ht.nbytes, pin_seconds=pin_s, fill_seconds=fill_s),
                       "host_link", out_dir)
        for r in rates.itertuples():
            progress(f"  {r.measure:12s} {'' if pd.isna(r.row_bytes) else int(r.row_bytes):>5} B rows: "
                     f"{r.gbps:8.1f} GB/s")
        rows = []
        for ds in datasets:
            t1 = time.perf_counter()
            batches, id_map = make_batches(stage, ds, warmup + timed, seed)
            progress(f"{canonical_name(ds)}: {warmup + timed} batches made in {time.perf_counter() - t1:.1f} s")
            predicted: dict = {}
            for p in placements(budgets, ways):
                _free_pending()
                pred = None
                if p.kind == "host":
                    res = run_host(ht, batches, warmup)
                else:
                    res = run_cached(ht, batches, p, warmup)
                    if p.budget not in predicted:  # table 0's share of the budget (a shared cache's too)
                        g = geometry(ht.rows, rb, p.with_(shared=False))
                        predicted[p.budget] = predicted_hit_rates(batches, warmup, ht.rows[0], rb,
                                                                  g.set_count[0] * g.ways, g.ways)
                    pred = predicted[p.budget]
                row = result_row(stage, canonical_name(ds), id_map, p, _complete(res), warmup, timed,
                                 rates, pred, env)
                append_results(pd.DataFrame([row]), "host_tables", out_dir)
                rows.append(row)
                progress(_progress_line(row, pred))
            del batches
        return pd.DataFrame(rows)


def _progress_line(row: dict, pred: dict | None) -> str:
    side = "" if row["plan_gpu_ms_per_batch"] is None else (
        f" (GPU plan {row['plan_gpu_ms_per_batch']:.1f} ms, fill {row['fill_gpu_ms_per_batch']:.1f} ms)")
    return (f"{row['dataset']:>14s} {row['placement_spec']:44s} {row['ms_per_batch']:8.2f} ms{side} "
            f"{row['effective_gbps']:7.1f} GB/s  hit {row['hit_rate']:.3f} (LRU model "
            f"{_fmt(pred, 'predicted_hit_rate_lru')}, LFU model {_fmt(pred, 'predicted_hit_rate_lfu')})  "
            f"{row['share_of_bound']:.0%} of bound")


def _complete(res: dict) -> dict:
    """Every run's row has every counter and timing (None where a placement has no cache)."""
    keys = [*CacheStats().as_dict(), "cache_rows", "ways", "host_seconds", "plan_gpu_ms", "fill_gpu_ms"]
    return {**dict.fromkeys(keys), **res}


def _fmt(pred: dict | None, key: str) -> str:
    return "-" if not pred or pred.get(key) is None else f"{pred[key]:.3f}"


# --- the memory hierarchy on the CPU (the teaching notebook) ------------------------------------------------

#: Spec-sheet rates of an H100 SXM (HBM3 peak; PCIe Gen5 x16, one direction) for when nothing was measured
NOMINAL_GBPS = {"hbm": 3350.0, "host": 64.0}


def skew_curve(ids: np.ndarray, row_bytes: int) -> pd.DataFrame:
    """The hottest rows' share of ``ids``'s lookups against the bytes they take: what a cache of that size,
    holding exactly the hottest rows, would serve. One curve, read at every level's capacity."""
    curve = hotness.coverage_curve(np.asarray(ids))
    k = np.unique(np.geomspace(1, max(1, curve.size), 200).astype(np.int64))
    return pd.DataFrame({"rows": k, "bytes": k * row_bytes, "share": curve[k - 1]})


def hit_rate_sweep(stage: EmbeddingStage, batches: list[JaggedBatch], budgets: Sequence[float],
                   policies: Sequence[str] = ("lru", "lfu"), ways: int = 32, warmup: int = 2) -> pd.DataFrame:
    """The HBM cache's decisions alone (no rows, on the CPU) at each budget and policy: measured counters
    of the batches after ``warmup``, beside the LRU and LFU models' and the skew curve's predictions (the
    same torch code as the serving path, on the GPU where there is one)."""
    shape = HostTables(None, stage.embedding_sizes, stage.embedding_dim, stage.dtype)
    rb = shape.row_bytes
    max_ids = max(int(b.indices.size) for b in batches)
    rows = []
    for budget in budgets:
        pred = None
        for policy in policies:
            p = Placement("cached", budget=float(budget), policy=policy, ways=ways, shared=False)
            cache = HbmCache(shape, p, max_ids, on_device=False, model_device="cpu" if backend.SIMULATOR else "cuda")
            total = CacheStats()
            for i, b in enumerate(batches):
                _, stats = cache.plan_arrays(b.indices, segments(b.offsets, b.table_offsets), True)
                total = total + stats if i >= warmup else total
            g = cache.geometry
            pred = pred or predicted_hit_rates(batches, warmup, stage.embedding_sizes[0], rb, g.set_count[0] * g.ways,
                                               g.ways)
            rows.append({"budget": float(budget), "cache_bytes": cache.cache_bytes, "policy": policy,
                         **total.as_dict(), **pred})
    return pd.DataFrame(rows)


def bound_gbps(hit_rate: Any, hbm_gbps: float, host_gbps: float) -> Any:
    """Effective GB/s of lookups when a share ``hit_rate`` is read from HBM and the rest first fetched over
    the host link (then read from HBM too): bytes over (bytes / HBM + misses' bytes / host link)."""
    h = np.asarray(hit_rate, np.float64)
    return 1.0 / (1.0 / hbm_gbps + (1.0 - h) / host_gbps)


def measured_rates(results_dir: Any = "results/h100") -> tuple[dict, str]:
    """``({"hbm": GB/s, "host": GB/s}, note)`` from a committed ``host_link.csv`` (512-byte rows), else the
    spec sheet's (:data:`NOMINAL_GBPS`)."""
    path = Path(results_dir) / "host_link.csv"
    if path.is_file():
        df = pd.read_csv(path)
        rates = {"hbm": _rate(df, "hbm_fused" if (df["measure"] == "hbm_fused").any() else "hbm_gather", 512),
                 "host": _rate(df, "host_gather", 512)}
        return rates, f"measured on {df['gpu_name'].iloc[-1]} ({path})"
    return dict(NOMINAL_GBPS), "nothing measured here: an H100 SXM's spec-sheet rates (HBM3 peak, PCIe Gen5 x16)"


#: the H100's L2, and the host-table shape measured on it, for the notebook's scale
H100_L2_BYTES = 50 * 2**20


def teaching_setup(preset: str | None = None) -> tuple[EmbeddingStage, int, dict, str]:
    """``(stage, batches, levels, note)`` for the memory-hierarchy notebook. ``levels``: each level's
    capacity in bytes (L2; HBM caches of 1%, 10% and 30% of the tables; the host tables). ``paper``: 8 tables
    of 15M x 128 fp32 (61 GB) and the H100's L2 (planning millions of ids a batch on the CPU: minutes);
    ``tiny`` (default without a GPU): 4 tables of 200,000 rows, batch 512 x 50, and an L2 scaled with the
    tables, so every level holds the same share of the data as at full size."""
    if preset is None:
        preset = backend.default_preset()
    full = make_preset("paper", tables=8, rows=15_000_000)
    if preset == "paper":
        stage, n, note = full, 6, "paper: 8 tables of 15,000,000 x 128 fp32 rows (61 GB), batch 2048 x 150"
    elif preset == "tiny":
        stage = make_preset("paper", tables=4, rows=200_000, batch_size=512, pooling=50)
        n, note = 8, ("tiny: 4 tables of 200,000 x 128 fp32 rows (410 MB), batch 512 x 50; the L2 scaled with the "
                      "tables (PRESET='paper' runs the full size)")
    else:
        raise DlrmlabError(f"unknown preset {preset!r} for the memory-hierarchy notebook; valid: tiny, paper")
    tb = stage.table_bytes()
    l2 = H100_L2_BYTES * tb // full.table_bytes() // (128 * 16) * (128 * 16)  # whole lines x ways
    levels = {"L2": max(128 * 16, l2), "HBM cache 1%": tb // 100, "HBM cache 10%": tb // 10,
              "HBM cache 30%": 3 * tb // 10, "host (all tables)": tb}
    return stage, n, levels, note


def hierarchy_table(stage: EmbeddingStage, batches: list[JaggedBatch], levels: dict, warmup: int = 2) -> pd.DataFrame:
    """One dataset's skew curve read at every level: the hottest rows' share of the lookups that fit each
    level's capacity, and the LRU model's hit rate of a cache that size (table 0, its share of the level)."""
    rb = stage.embedding_dim * stage.element_bytes
    timed = np.concatenate([b.table(0).indices for b in batches[warmup:]])
    curve = hotness.coverage_curve(timed)
    rows = []
    for level, cap in levels.items():
        share_rows = int(cap // rb // stage.num_tables)  # table 0's share of the level
        skew = float(curve[min(max(share_rows, 1), curve.size) - 1]) if curve.size else 0.0
        lru = 1.0  # a level that holds every row is the rows' home: nothing misses
        if share_rows < stage.embedding_sizes[0]:
            ways = 16 if level == "L2" else 32
            lru = predicted_hit_rates(batches, warmup, stage.embedding_sizes[0], rb, share_rows, ways)[
                "predicted_hit_rate_lru"]
        rows.append({"level": level, "capacity_bytes": int(cap), "skew_curve_share": skew, "lru_hit_rate": lru})
    return pd.DataFrame(rows)
