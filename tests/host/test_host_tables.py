"""Host and cached placements (simulator, tiny): outputs against the NumPy reference, the cache's counters
against a pure-Python model of the same policy, the pipeline's ordering, and refusals."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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
    """The cache's policy written plainly, one lookup at a time: per set a list of ways, each ``None`` or a
    dict. A batch first touches its resident rows (they are locked for the batch), then takes its missed
    rows in order of first lookup: a free way, else the open way first in victim order, else staged."""

    def __init__(self, row_base, geom: hbmcache.Geometry, lfu: bool) -> None:
        self.base, self.g, self.lfu = row_base, geom, lfu
        self.sets = [[None] * geom.ways for _ in range(geom.sets)]
        self.where: dict[int, dict] = {}
        self.seq = 0

    def batch(self, tables: list[np.ndarray], tick: int, lock_from: int) -> dict:
        c = dict.fromkeys(hbmcache.COUNTERS, 0)
        rows = [(t, self.base[t] + int(i)) for t, ids in enumerate(tables) for i in ids]
        count: dict[int, int] = {}
        last: dict[int, int] = {}
        table: dict[int, int] = {}
        for p, (t, g) in enumerate(rows):
            count[g] = count.get(g, 0) + 1
            last[g] = self.seq + p + 1
            table.setdefault(g, t)
        self.seq += len(rows)
        c["lookups"], c["unique_rows"] = len(rows), len(count)
        for g in count:  # in order of first lookup (dicts keep insertion order)
            if g in self.where:  # a hit: locked for the rest of the batch
                e = self.where[g]
                e["tick"], e["stamp"], e["freq"] = tick, last[g], e["freq"] + count[g]
                c["hits"] += 1
                c["lookup_hits"] += count[g]
        hits = {g for g in count if g in self.where}
        for g in count:
            if g in hits:
                continue
            c["misses"] += 1
            t = table[g]
            ways = self.sets[self.g.set_start[t] + set_hash(g, self.g.set_count[t])]
            free = [w for w, e in enumerate(ways) if e is None]
            if free:
                v = free[0]
            else:
                open_ = [w for w, e in enumerate(ways) if e["tick"] < lock_from]
                v = min(open_, key=lambda w: ((ways[w]["freq"] if self.lfu else 0), ways[w]["stamp"]), default=None)
                if v is not None:
                    c["evictions"] += 1
                    del self.where[ways[v]["row"]]
            if v is None:
                c["staged"] += 1
                continue
            c["inserts"] += 1
            ways[v] = {"row": g, "stamp": last[g], "tick": tick, "freq": count[g]}
            self.where[g] = ways[v]
        return c

    def tags(self) -> list[int]:
        """Each slot's row (-1 when free), slot = set x ways + way, as the cache's ``tags``."""
        return [-1 if e is None else e["row"] for ways in self.sets for e in ways]


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


def _check_plan(cache, plan, b, n_tables):
    """Every id's location holds its row once the misses are copied: one place per row, each missed row
    fetched once, into the place it is read from, every place inside the buffer."""
    locs, src, dst = (np.asarray(a.cpu()) for a in (plan.locs, plan.src, plan.dst))
    n_miss = int((dst >= 0).sum())
    assert (dst[:n_miss] >= 0).all() and (dst[n_miss:] == -1).all()  # the misses first, then padding
    base = np.asarray(cache._row_base.cpu())
    gid = np.concatenate([base[t] + b.table(t).indices for t in range(n_tables)])
    assert len(set(zip(gid, locs, strict=True))) == len(set(gid)) == len(set(locs))
    assert sorted(src[:n_miss]) == sorted(set(src[:n_miss]))
    where = dict(zip(gid, locs, strict=True))
    assert all(where[r] == d for r, d in zip(src[:n_miss], dst[:n_miss], strict=True))
    assert ((locs >= 0) & (locs < cache.buffer_rows)).all()
    return n_miss


@pytest.mark.parametrize("spec", ["cached:40%:lru:shared:4-way", "cached:30%:lfu:per-table:2-way",
                                  "cached:30%:lru:serial:2-way", "cached:10%:lfu:1-way"])
def test_cache_decisions_match_the_python_model(spec):
    """Same counters, same victims (every slot's row), same resident rows, batch after batch."""
    rng = np.random.default_rng(1)
    rows = (40, 24)
    p = Placement.parse(spec)
    with host_tables(rows, DIM) as ht:
        cache = HbmCache(ht, p, max_ids=64)
        model = ModelCache([0, rows[0]], cache.geometry, p.policy == "lfu")
        evicted = 0
        for _ in range(6):
            b = _batch(rng, rows, skew=True)
            plan, stats = cache.plan_arrays(b.indices, hbmcache.segments(b.offsets, b.table_offsets),
                                            lock_previous=p.pipelined)
            want = model.batch([b.table(t).indices for t in range(2)], cache.tick,
                               cache.tick - 1 if p.pipelined else cache.tick)
            assert stats.as_dict() | want == stats.as_dict()  # every counter equal
            assert cache.tags[: cache.geometry.slots].tolist() == model.tags()  # the same victims, way for way
            assert sorted(model.where) == list(cache.resident())
            assert _check_plan(cache, plan, b, 2) == stats.misses
            evicted += stats.evictions
    assert evicted > 0  # the budget is small enough that the policy decided something


@settings(max_examples=25, deadline=None)
@given(data=st.data(), spec=st.sampled_from(["cached:30%:lru:2-way", "cached:25%:lfu:per-table:4-way",
                                             "cached:20%:lfu:serial:2-way", "cached:15%:lru:shared:1-way"]))
def test_cache_matches_the_model_on_generated_id_streams(data, spec):
    rows = (24, 16)
    p = Placement.parse(spec)
    ids = st.lists(st.integers(0, 15), min_size=0, max_size=12)
    with host_tables(rows, DIM) as ht:
        cache = HbmCache(ht, p, max_ids=24)
        model = ModelCache([0, rows[0]], cache.geometry, p.policy == "lfu")
        for _ in range(data.draw(st.integers(1, 5))):
            tables = [np.array(data.draw(ids), np.int64) for _ in rows]
            b = JaggedBatch.from_tables([TableBatch(t, np.array([0, t.size])) for t in tables])
            plan, stats = cache.plan_arrays(b.indices, hbmcache.segments(b.offsets, b.table_offsets), p.pipelined)
            want = model.batch(tables, cache.tick, cache.tick - 1 if p.pipelined else cache.tick)
            assert stats.as_dict() | want == stats.as_dict()
            assert cache.tags[: cache.geometry.slots].tolist() == model.tags()
            assert _check_plan(cache, plan, b, 2) == stats.misses


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
            for (out, pre), b in zip(served, batches, strict=True):
                np.testing.assert_allclose(out.copy_to_host(), _expected(weights, b), rtol=1e-5, atol=1e-6)
                assert pre.stats.lookups == b.indices.size
            assert sum((pre.stats for _, pre in served), hbmcache.CacheStats()) == stage.cache.stats()
            assert stage.cache.stats().misses > 0


class _Logged:
    """An event that logs what is done with it: (name, parity, op, stream)."""

    def __init__(self, log, name, k, streams):
        self.log, self.name, self.k, self.streams = log, name, k, streams

    def record(self, stream=0):
        self.log.append((self.name, self.k, "record", self.streams.get(id(stream), stream)))

    def wait(self, stream=0):
        self.log.append((self.name, self.k, "wait", self.streams.get(id(stream), stream)))

    def synchronize(self):
        self.log.append((self.name, self.k, "cpu_wait", None))


def test_pipeline_synchronisation_is_explicit_and_ordered():
    """Batch i+1's upload and plan wait (on the plan stream) for batch i-1's kernel, never batch i's; its
    fill (on the fill stream) for its plan; its kernel (on the compute stream) for its fill; the CPU only
    for batch i-1's upload."""
    rows = (16,)
    rng = np.random.default_rng(3)
    log: list = []
    with host_tables(rows, DIM) as ht, cached_stage(ht, "cached:50%:2-way", max_ids=32, max_bags=4) as stage:
        if stage.side is stage.compute:  # the simulator has one stream: give each role its own
            stage.side, stage.fill_stream = cuda.stream(), cuda.stream()
        streams = {id(stage.side): "plan", id(stage.fill_stream): "fill", id(stage.compute): "compute"}
        for name in ("uploaded", "planned", "filled", "computed"):
            setattr(stage, name, [_Logged(log, name, k, streams) for k in range(2)])
        list(stage.serve([_batch(rng, rows) for _ in range(4)]))

    def prefetch(k, first):
        waits = [] if first else [("uploaded", k, "cpu_wait", None), ("computed", k, "wait", "plan")]
        return [*waits, ("uploaded", k, "record", "plan"), ("planned", k, "record", "plan"),
                ("planned", k, "wait", "fill"), ("filled", k, "record", "fill")]

    def forward(k):
        return [("filled", k, "wait", "compute"), ("computed", k, "record", "compute")]

    want = [*prefetch(1, True), *forward(1), *prefetch(0, True), *forward(0), *prefetch(1, False), *forward(1),
            *prefetch(0, False), *forward(0)]
    assert log == want


def test_pipelined_plan_never_evicts_the_previous_batch():
    rows = (64,)
    with host_tables(rows, DIM) as ht:
        cache = HbmCache(ht, "cached:4-way:0.0625", max_ids=16)  # one set of 4 ways
        seg = np.array([0, 4])
        cache.plan_arrays(np.arange(4), seg, lock_previous=True)
        _, stats = cache.plan_arrays(np.arange(4, 8), seg, lock_previous=True)
        assert stats.staged == 4 and stats.evictions == 0  # batch 1's ways are all in flight
        _, stats = cache.plan_arrays(np.arange(8, 12), seg, lock_previous=False)
        assert stats.evictions == 4 and stats.staged == 0


def test_a_batch_never_evicts_a_row_it_reads():
    """Misses that outnumber a set's open ways are staged, not given a way this batch hits."""
    with host_tables((64,), DIM) as ht:
        cache = HbmCache(ht, "cached:2-way:0.03125:serial", max_ids=16)  # one set of 2 ways
        seg = np.array([0, 4])
        cache.plan_arrays(np.array([1, 2]), np.array([0, 2]), lock_previous=False)
        plan, stats = cache.plan_arrays(np.array([5, 1, 6, 2]), seg, lock_previous=False)
        assert (stats.hits, stats.misses, stats.staged, stats.evictions) == (2, 2, 2, 0)
        assert list(cache.resident()) == [1, 2]
        assert (plan.locs.cpu().numpy()[[0, 2]] >= cache.geometry.slots).all()  # 5 and 6 read from staging


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


@pytest.mark.gpu
@pytest.mark.parametrize("spec", ["cached:30%:lru:2-way", "cached:25%:lfu:per-table:4-way:serial"])
def test_gpu_plan_equals_the_cpu_plan_and_the_model(spec):
    """The same torch code on CUDA and CPU tensors: same locations, misses, victims and counters as each
    other and as the model, batch after batch."""
    rng = np.random.default_rng(5)
    rows = (200, 120)
    p = Placement.parse(spec)
    with host_tables(rows, DIM) as ht:
        gpu = HbmCache(ht, p, max_ids=400)
        cpu = HbmCache(ht, p, max_ids=400, on_device=False)
        model = ModelCache([0, rows[0]], gpu.geometry, p.policy == "lfu")
        for _ in range(6):
            b = _batch(rng, rows, bags=20, pooling=8, skew=True)
            seg = hbmcache.segments(b.offsets, b.table_offsets)
            got, got_stats = gpu.plan_arrays(b.indices, seg, p.pipelined)
            want, want_stats = cpu.plan_arrays(b.indices, seg, p.pipelined)
            assert got_stats == want_stats
            assert got_stats.as_dict() | model.batch([b.table(t).indices for t in range(2)], gpu.tick,
                                                     gpu.tick - 1 if p.pipelined else gpu.tick) == got_stats.as_dict()
            for a, w in ((got.locs, want.locs), (got.src, want.src), (got.dst, want.dst), (gpu.tags, cpu.tags)):
                assert a.cpu().tolist() == w.tolist()


@pytest.mark.gpu
def test_gpu_pipeline_enqueues_without_waiting_for_the_gpu():
    """Uploading and planning a batch asks torch for no synchronisation (torch's sync debug mode raises on
    one); outputs and counters stay right."""
    import torch

    rng = np.random.default_rng(6)
    rows = (5000, 3000)
    weights = [rng.standard_normal((r, DIM * 4)).astype(np.float32) for r in rows]
    batches = [_batch(rng, rows, bags=64, pooling=20, skew=True) for _ in range(6)]
    with host_tables(rows, DIM * 4, fill=weights) as ht, cached_stage(ht, "cached:5%:lru:8-way", max_ids=4096,
                                                                       max_bags=256) as stage:
        outs = []
        torch.cuda.set_sync_debug_mode("error")
        try:
            for out, _ in stage.serve(batches):
                outs.append(out)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        stage.synchronize()
        for out, b in zip(outs, batches, strict=True):
            np.testing.assert_allclose(out.copy_to_host(), _expected(weights, b), rtol=1e-5, atol=1e-5)
        cpu = HbmCache(ht, "cached:5%:lru:8-way", max_ids=4096, on_device=False)
        for b in batches:
            cpu.plan_arrays(b.indices, hbmcache.segments(b.offsets, b.table_offsets), True)
        assert stage.cache.stats() == cpu.stats() and cpu.stats().evictions > 0


@pytest.mark.parametrize("dtype,width", [(np.float32, 8), (np.float32, 6), (np.float16, 8)])
def test_gather_copies_rows_and_skips_negative_targets(dtype, width):
    """The fill's kernel: the 16-byte path (float32, rows of a multiple of four) and the element path give
    the same copies; a target of -1 (the miss list's padding) copies nothing."""
    from dlrmlab import launch
    from dlrmlab.kernels import gather

    rng = np.random.default_rng(7)
    src = rng.standard_normal(10 * width).astype(dtype)
    dst = np.full(5 * width, -9, dtype)
    src_rows, dst_rows = np.array([7, 2, 9, 0]), np.array([3, -1, 0, 4])
    assert gather.vectorizable(src, dst, width) == (dtype == np.float32 and width % 4 == 0)
    d = cuda.to_device(dst)
    launch.gather_rows(cuda.to_device(src), cuda.to_device(src_rows), d, cuda.to_device(dst_rows), 4, width)
    want = dst.reshape(5, width).copy()
    want[[3, 0, 4]] = src.reshape(10, width)[[7, 9, 0]]
    np.testing.assert_array_equal(d.copy_to_host().reshape(5, width), want)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.booleans(), min_size=1, max_size=40))
def test_run_starts_is_the_running_maximum_of_run_starts(flags):
    """The plan's replacement for ``torch.cummax``: each position's run start, runs marked by their first
    position."""
    import torch

    starts = torch.tensor([True, *flags[1:]])
    pos = torch.arange(len(flags))
    expected = torch.cummax(pos.where(starts, 0), 0).values
    assert torch.equal(hbmcache._run_starts(torch, starts, pos), expected)
