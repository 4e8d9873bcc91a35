"""Host and cached placements (simulator, tiny): outputs against the NumPy reference, the cache's counters
against a pure-Python model of the same policy, the pipeline's ordering, and refusals."""

from __future__ import annotations

import numpy as np
import pytest

from dlrmlab import hbmcache, placement, reference
from dlrmlab.backend import cuda
from dlrmlab.errors import DlrmlabError
from dlrmlab.fused import fused_forward
from dlrmlab.hbmcache import HbmCache, set_hash
from dlrmlab.pipeline import cached_stage, host_packed
from dlrmlab.placement import Placement, host_tables, pinned_host
from dlrmlab.workload import JaggedBatch, TableBatch

DIM = 4


class ModelCache:
    """The cache's policy written plainly: per set a list of ways, each ``None`` or a dict."""

    def __init__(self, row_base, geom: hbmcache.Geometry, lfu: bool) -> None:
        self.base, self.g, self.lfu = row_base, geom, lfu
        self.sets = [[None] * geom.ways for _ in range(geom.sets)]
        self.where: dict[int, dict] = {}
        self.seq = 0

    def batch(self, tables: list[np.ndarray], tick: int, lock_from: int) -> dict:
        c = dict.fromkeys(hbmcache.COUNTERS, 0)
        staged: set[int] = set()
        for t, ids in enumerate(tables):
            for i in ids:
                g = self.base[t] + int(i)
                self.seq += 1
                c["lookups"] += 1
                if g in self.where:
                    e = self.where[g]
                    if e["tick"] != tick:
                        c["unique_rows"] += 1
                        c["hits"] += 1
                        e["tick"] = tick
                    c["lookup_hits"] += e["ins"] != tick
                    e["stamp"], e["freq"] = self.seq, e["freq"] + 1
                    continue
                if g in staged:
                    continue
                c["unique_rows"] += 1
                c["misses"] += 1
                ways = self.sets[self.g.set_start[t] + set_hash(g, self.g.set_count[t])]
                free = [w for w, e in enumerate(ways) if e is None]
                if free:
                    v = free[0]
                else:
                    open_ = [w for w, e in enumerate(ways) if e["tick"] < lock_from]
                    v = min(open_, key=lambda w: ((ways[w]["freq"] if self.lfu else 0), ways[w]["stamp"]),
                            default=None)
                    if v is not None:
                        c["evictions"] += 1
                        del self.where[ways[v]["row"]]
                if v is None:
                    c["staged"] += 1
                    staged.add(g)
                    continue
                c["inserts"] += 1
                ways[v] = {"row": g, "stamp": self.seq, "tick": tick, "ins": tick, "freq": 1}
                self.where[g] = ways[v]
        return c


def _batch(rng, rows, bags=3, pooling=4, skew=False) -> JaggedBatch:
    tables = []
    for r in rows:
        lengths = rng.integers(0, pooling + 1, bags)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        ids = (rng.zipf(1.3, offsets[-1]) - 1) % r if skew else rng.integers(0, r, offsets[-1])
        tables.append(TableBatch(ids.astype(np.int64), offsets))
    return JaggedBatch.from_tables(tables)


def _expected(weights, batch: JaggedBatch, mode="sum") -> np.ndarray:
    return np.concatenate([reference.embedding_bag(batch.table(t).indices, w, batch.table(t).offsets, mode=mode,
                                                   include_last_offset=True) for t, w in enumerate(weights)])


@pytest.mark.parametrize("spec", ["cached:40%:lru:shared:4-way", "cached:30%:lfu:per-table:2-way",
                                  "cached:30%:lru:serial:2-way", "cached:10%:lfu:1-way"])
def test_cache_counters_match_the_python_model(spec):
    rng = np.random.default_rng(1)
    rows = (40, 24)
    p = Placement.parse(spec)
    with host_tables(rows, DIM) as ht:
        cache = HbmCache(ht, p, max_ids=64, threads=3)  # the sets split among three planning threads
        model = ModelCache(cache._row_base, cache.geometry, p.policy == "lfu")
        evicted = 0
        for _ in range(6):
            b = _batch(rng, rows, skew=True)
            n = b.indices.size
            locs, src, dst = np.zeros(n, np.int32), np.zeros(n, np.int64), np.zeros(n, np.int64)
            n_miss, stats = cache.plan(b.indices, hbmcache.segments(b.offsets, b.table_offsets), locs, src, dst,
                                       lock_previous=p.pipelined)
            want = model.batch([b.table(t).indices for t in range(2)], cache.tick,
                               cache.tick - 1 if p.pipelined else cache.tick)
            assert stats.as_dict() | want == stats.as_dict()  # every counter equal
            assert n_miss == stats.misses
            assert sorted(model.where) == list(cache.resident())
            evicted += stats.evictions
            # every location holds the id's row once the misses are copied
            gid = np.concatenate([cache._row_base[t] + b.table(t).indices for t in range(2)])
            assert len(set(zip(gid, locs, strict=True))) == len(set(gid)) == len(set(locs))  # one place per row
            assert sorted(src[:n_miss]) == sorted(set(src[:n_miss]))  # each missed row fetched once
            where = dict(zip(gid, locs, strict=True))
            assert all(where[r] == d for r, d in zip(src[:n_miss], dst[:n_miss], strict=True))  # filled where read
            assert ((locs >= 0) & (locs < cache.buffer_rows)).all()
    assert evicted > 0  # the budget is small enough that the policy decided something


@pytest.mark.parametrize("spec", ["host", "cached:25%:lru:pipelined", "cached:25%:lfu:serial:per-table",
                                  "cached:5%:lru:2-way"])
def test_placements_match_the_reference(spec):
    rng = np.random.default_rng(2)
    rows = (30, 20)
    weights = [rng.standard_normal((r, DIM)).astype(np.float32) for r in rows]
    batches = [_batch(rng, rows, bags=2, pooling=5, skew=True) for _ in range(4)]
    p = Placement.parse(spec)
    with host_tables(rows, DIM, fill=weights) as ht:
        if p.kind == "host":
            for b in batches:
                jagged = (*(cuda.to_device(a) for a in (b.indices, b.offsets, b.table_offsets)), None)
                out = fused_forward(host_packed(ht), jagged, mode="mean")
                np.testing.assert_allclose(out.copy_to_host(), _expected(weights, b, "mean"), rtol=1e-5, atol=1e-6)
            return
        with cached_stage(ht, p, max_ids=64, max_bags=8, mode="sum") as stage:
            served = list(stage.serve(batches))
            stage.synchronize()
            for (out, stats), b in zip(served, batches, strict=True):
                np.testing.assert_allclose(out.copy_to_host(), _expected(weights, b), rtol=1e-5, atol=1e-6)
                assert stats.lookups == b.indices.size
            assert sum((s for _, s in served), hbmcache.CacheStats()).misses > 0


def test_pipeline_orders_fill_after_the_batch_before_last(monkeypatch):
    """Planning batch i+1 waits for batch i-1's kernel (the parity's event), never for batch i's."""
    rows = (16,)
    rng = np.random.default_rng(3)
    waited = []
    with host_tables(rows, DIM) as ht, cached_stage(ht, "cached:50%:2-way", max_ids=32, max_bags=4) as stage:
        for k, ev in enumerate(stage.computed):
            monkeypatch.setattr(ev, "synchronize", lambda k=k: waited.append(k), raising=False)
        list(stage.serve([_batch(rng, rows) for _ in range(4)]))
    assert waited == [1, 0]  # batch 2 waited for batch 0 (ticks 1, 3: parity 1), batch 3 for batch 1 (parity 0)


def test_pipelined_plan_never_evicts_the_previous_batch():
    rows = (64,)
    with host_tables(rows, DIM) as ht:
        cache = HbmCache(ht, "cached:4-way:0.0625", max_ids=16)  # one set of 4 ways
        seg = np.array([0, 4])
        buf = [np.zeros(16, np.int32), np.zeros(16, np.int64), np.zeros(16, np.int64)]
        cache.plan(np.arange(4), seg, *buf, lock_previous=True)
        _, stats = cache.plan(np.arange(4, 8), seg, *buf, lock_previous=True)
        assert stats.staged == 4 and stats.evictions == 0  # batch 1's ways are all in flight
        _, stats = cache.plan(np.arange(8, 12), seg, *buf, lock_previous=False)
        assert stats.evictions == 4 and stats.staged == 0


def test_placement_specs():
    p = Placement.parse("cached:2GiB:lfu:per-table:16-way:serial")
    assert (p.budget, p.policy, p.shared, p.ways, p.pipelined) == (2 * 2**30, "lfu", False, 16, False)
    assert Placement.parse(str(p)) == p
    assert Placement.parse("host").kind == "host"
    for bad in ("disk", "host:10%", "cached:lfx", "cached:-5%", "cached:0-way", ""):
        with pytest.raises(DlrmlabError):
            Placement.parse(bad)


def test_table_larger_than_host_memory_is_refused_before_allocation(monkeypatch):
    monkeypatch.setattr(placement.checks, "available_host_bytes", lambda: 1000)
    monkeypatch.setattr(placement.np, "zeros", lambda *a, **k: pytest.fail("allocated"))
    with pytest.raises(DlrmlabError, match=r"need 1\.2 KiB of host memory, more than the 1000 B free"):
        with host_tables((10,), 32):
            pass


def test_cache_budget_larger_than_free_gpu_memory_is_refused(monkeypatch):
    with host_tables((100,), DIM) as ht:
        monkeypatch.setattr(placement.checks, "available_device_bytes", lambda: 512)
        with pytest.raises(DlrmlabError, match=r"needs .* of GPU memory, more than the 512 B free"):
            HbmCache(ht, "cached:50%", max_ids=8)


def test_interrupt_frees_pinned_memory():
    assert placement.live_pinned_bytes() == 0
    with pytest.raises(KeyboardInterrupt):
        with pinned_host(4096) as buf:
            assert placement.live_pinned_bytes() == 4096
            buf.array(np.float32, (8,))[:] = 1
            raise KeyboardInterrupt
    assert placement.live_pinned_bytes() == 0
    assert buf.host_ptr == 0 and buf._array is None


@pytest.mark.gpu
def test_interrupt_unmaps_pinned_pages_on_the_gpu():
    from dlrmlab import cudart

    with pytest.raises(KeyboardInterrupt):
        with pinned_host(1 << 20) as buf:
            ptr = buf.host_ptr
            assert cudart.host_device_pointer(ptr) == buf.device_ptr
            raise KeyboardInterrupt
    with pytest.raises(cudart.CudaError):
        cudart.host_device_pointer(ptr)  # no mapping left behind
    assert placement.live_pinned_bytes() == 0


def test_interrupt_mid_pipeline_drains_and_unpins():
    rng = np.random.default_rng(4)
    with pytest.raises(KeyboardInterrupt):
        with host_tables((20,), DIM) as ht, cached_stage(ht, "cached:50%:2-way", max_ids=32, max_bags=4) as stage:
            for i, _ in enumerate(stage.serve([_batch(rng, (20,)) for _ in range(3)])):
                if i == 1:
                    raise KeyboardInterrupt
    assert placement.live_pinned_bytes() == 0
