"""An HBM cache of host-table rows: set-associative, LRU or LFU, one shared budget or one per table.

Design (as FBGEMM's ``MANAGED_CACHING`` prefetch), the management on the GPU:

* **The plan** (:meth:`HbmCache.plan`) is torch tensor ops on the stream the caller makes current, every
  array of a size the host knows (the batch's ids), so nothing waits for the GPU: the batch's rows sorted
  into unique rows (each with its count and first and last lookup); each probed in a row -> slot map;
  hits touched (last lookup, batch, frequency); the misses of each set, in order of their first lookup,
  given the set's free ways first, then its open ways in victim order, and staged when none is left;
  tags, map, ages, frequencies and the counters updated; and every id given a *location*, its row of the
  device buffer (FBGEMM's ``lxu_cache_locations``). The same code runs on CPU tensors: the simulator, and
  a model of the cache's decisions at any scale (``on_device=False``). A masked lane (an entry past the
  batch's unique rows, a hit where only misses write) writes a spare entry of its own: millions of writes to
  one address serialise on the GPU (atomic adds most: 1.7 ms each for a batch of 2.46M ids on an H100).
* **Victim order**: LRU, the way looked up longest ago (by the sequence number of its last lookup); LFU,
  the way with the fewest lookups since it was filled, ties by LRU. A way is *locked* (never a victim)
  when this batch looks it up or fills it, or (pipelined) when the previous batch, which may still be
  computing, did. So a batch's misses never evict a row the same batch reads.
* **The device buffer** holds the cache's slots followed by two staging areas (one per batch in flight):
  a missed row whose set has no way left is staged there for this batch only.
* **The fill** copies the missed rows from the pinned host tables (read zero-copy over the host link)
  into their slots with the gather kernel (:mod:`dlrmlab.kernels.gather`), on the same stream.

Sets are picked by a multiplicative hash of the row (:func:`set_hash`, so ranked or strided ids spread).
A pure-Python model of the same policy checks this one in the tests.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from dlrmlab import backend, launch
from dlrmlab import validate as checks
from dlrmlab.backend import cuda, numba_view
from dlrmlab.config import table_dtype
from dlrmlab.errors import DlrmlabError
from dlrmlab.placement import HostTables, Placement, check_device_fits

#: the counters of one batch, in the order of :meth:`HbmCache.plan`'s counter tensor
COUNTERS = ("lookups", "unique_rows", "hits", "misses", "inserts", "evictions", "staged", "lookup_hits")
_NEVER = -(2**62)  # a batch tick no batch has
_BIG = 2**62  # sorts after every real key
#: bytes of GPU memory the plan's temporaries take per id of the largest batch (about 30 int64 entries) and
#: per slot (the victim order: keys, orders, frequencies)
PLAN_BYTES_PER_ID, PLAN_BYTES_PER_SLOT = 240, 40


def set_hash(row: Any, n_sets: Any) -> Any:
    """The set of global row ``row`` among ``n_sets`` (Knuth's multiplicative hash); Python ints, NumPy
    arrays and torch tensors alike (rows under 2**32: no int64 overflow)."""
    return ((row * 2654435761) % 4294967296) % n_sets


def torch_module() -> Any:
    """torch, imported on first use: a heavy optional dependency that only the cached placement needs."""
    try:
        import torch  # heavy optional dependency (the cached placement's cache management)
    except ImportError:
        raise DlrmlabError("the cached placement needs PyTorch (pip install 'dlrmlab[torch]')") from None
    return torch


@dataclass(frozen=True)
class CacheStats:
    """Counters (of one batch or summed). Per unique row: ``hits`` + ``misses`` = ``unique_rows``;
    ``inserts`` + ``staged`` = ``misses``. Per lookup: ``lookup_hits`` of ``lookups`` were resident before
    the batch."""

    lookups: int = 0
    unique_rows: int = 0
    hits: int = 0
    misses: int = 0
    inserts: int = 0
    evictions: int = 0
    staged: int = 0
    lookup_hits: int = 0

    @classmethod
    def of(cls, counters: Any) -> CacheStats:
        """From a counter tensor or sequence in :data:`COUNTERS` order (a device tensor waits for its stream)."""
        values = counters.tolist() if hasattr(counters, "tolist") else list(counters)
        return cls(*(int(v) for v in values))

    @property
    def hit_rate(self) -> float:
        """Lookups that needed no fetch from host memory: every lookup but each missed row's first (as a
        cache simulator counts hits, repeats of a row just fetched included)."""
        return 1 - self.misses / self.lookups if self.lookups else 0.0

    @property
    def resident_rate(self) -> float:
        """Lookups of rows that were resident before the batch."""
        return self.lookup_hits / self.lookups if self.lookups else 0.0

    @property
    def row_hit_rate(self) -> float:
        return self.hits / self.unique_rows if self.unique_rows else 0.0

    def __add__(self, other: CacheStats) -> CacheStats:
        return CacheStats(*(a + b for a, b in zip(asdict(self).values(), asdict(other).values(), strict=True)))

    def __sub__(self, other: CacheStats) -> CacheStats:
        return CacheStats(*(a - b for a, b in zip(asdict(self).values(), asdict(other).values(), strict=True)))

    def as_dict(self) -> dict:
        return {**asdict(self), "hit_rate": self.hit_rate, "resident_rate": self.resident_rate,
                "row_hit_rate": self.row_hit_rate}


@dataclass(frozen=True)
class Geometry:
    """Sets and ways of a cache; table t's rows go to sets ``set_start[t] .. + set_count[t]``."""

    ways: int
    set_start: tuple[int, ...]
    set_count: tuple[int, ...]

    @property
    def sets(self) -> int:
        return max(s + c for s, c in zip(self.set_start, self.set_count, strict=True))

    @property
    def slots(self) -> int:
        return self.sets * self.ways


def geometry(rows: tuple[int, ...], row_bytes: int, placement: Placement) -> Geometry:
    """The cache a placement's budget buys for tables of ``rows``: as many ``ways``-way sets as fit (at
    least one per table; fewer ways when the budget holds fewer rows), shared or split by table bytes."""
    budget_rows = placement.cache_bytes(sum(rows) * row_bytes) // row_bytes
    ways = max(1, min(placement.ways, budget_rows))
    if placement.shared:
        n = max(1, budget_rows // ways)
        return Geometry(ways, (0,) * len(rows), (n,) * len(rows))
    total = sum(rows)
    counts = [max(1, budget_rows * r // total // ways) for r in rows]
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return Geometry(ways, tuple(int(s) for s in starts), tuple(counts))


@dataclass
class Plan:
    """One batch's plan (tensors on the cache's device, written on the current stream): ``locs[i]`` the
    buffer row of id i; ``src``/``dst`` the missed rows (global row -> buffer row), misses first, then
    ``dst = -1`` to the batch's length; ``counters`` in :data:`COUNTERS` order."""

    locs: Any
    src: Any
    dst: Any
    counters: Any

    def stats(self) -> CacheStats:
        return CacheStats.of(self.counters)


class HbmCache:
    """The cache's state (torch tensors) and rows (device) for a set of :class:`~dlrmlab.placement.HostTables`.

    ``max_ids``: the most ids one batch may hold (sizes the staging areas). ``on_device=False``: no rows,
    only the cache's decisions and counters (a model at any scale; ``host`` then needs only its shape), its
    state on ``model_device`` (default the CPU). Refused before anything is allocated when the cache does
    not fit in the free GPU memory.
    """

    def __init__(self, host: HostTables, placement: Placement | str, max_ids: int, stream: Any = 0,
                 on_device: bool = True, model_device: str = "cpu") -> None:
        torch = torch_module()
        self.placement = Placement.parse(placement)
        if self.placement.kind != "cached":
            raise DlrmlabError(f"an HBM cache needs a 'cached' placement, got {self.placement.kind!r}")
        self.host = host
        self.geometry = g = geometry(host.rows, host.row_bytes, self.placement)
        self.stage_rows = spare = int(max_ids)  # a spare state entry per lane of a batch (below)
        if host.total_rows >= 2**32 or self.buffer_rows >= 2**31:
            raise DlrmlabError(f"an HBM cache serves fewer than 2**32 rows and 2**31 buffer rows; got "
                               f"{host.total_rows:,} rows and {self.buffer_rows:,} buffer rows")
        if on_device:
            state = (32 * (g.slots + spare) + PLAN_BYTES_PER_SLOT * g.slots + 8 * (g.sets + spare)
                     + 4 * (host.total_rows + spare))
            check_device_fits(self.buffer_rows * host.row_bytes + state + PLAN_BYTES_PER_ID * self.stage_rows,
                              f"an HBM cache of {g.slots:,} rows ({checks.fmt_bytes(self.cache_bytes)}) "
                              f"with its state and staging for {self.stage_rows:,} rows a batch")
        self.device = ("cuda" if not backend.SIMULATOR else "cpu") if on_device else model_device
        dev, i64 = self.device, torch.int64
        # a spare entry per lane of a batch at the end of each: masked lanes write there (never read)
        self.tags = torch.full((g.slots + spare,), -1, dtype=i64, device=dev)  # the global row a slot holds
        self.stamp = torch.zeros(g.slots + spare, dtype=i64, device=dev)  # its last lookup's sequence number
        self.last = torch.full((g.slots + spare,), _NEVER, dtype=i64, device=dev)  # the last batch that used it
        self.freq = torch.zeros(g.slots + spare, dtype=i64, device=dev)  # its lookups since it was filled
        self.filled = torch.zeros(g.sets + spare, dtype=i64, device=dev)  # ways in use (in way order, never fewer)
        self.slot_of = torch.full((host.total_rows + spare,), -1, dtype=torch.int32, device=dev)  # row -> slot
        self.totals = torch.zeros(len(COUNTERS), dtype=i64, device=dev)  # every batch's counters, summed
        self._row_base = torch.as_tensor(np.concatenate([[0], np.cumsum(host.rows)[:-1]]), dtype=i64, device=dev)
        self._set_start = torch.as_tensor(g.set_start, dtype=i64, device=dev)
        self._set_count = torch.as_tensor(g.set_count, dtype=i64, device=dev)
        self.tick = 0
        self._seq = 0
        # the rows themselves; none for a model of the cache's decisions alone (any size, on the CPU)
        storage = table_dtype(host.dtype).storage
        self.rows = cuda.device_array(self.buffer_rows * host.dim, storage, stream=stream) if on_device else None
        if dev == "cuda":
            torch.cuda.synchronize()  # the state is written before any other stream reads it

    @property
    def cache_bytes(self) -> int:
        return self.geometry.slots * self.host.row_bytes

    @property
    def buffer_rows(self) -> int:
        return self.geometry.slots + 2 * self.stage_rows

    def plan(self, ids: Any, seg: Any, lock_previous: bool, out: dict | None = None) -> Plan:
        """Run one batch (``ids[seg[t]:seg[t+1]]`` of table t, ``seg[0] == 0``; tensors on the cache's
        device) through the cache, on torch's current stream, without waiting for it. ``lock_previous``:
        the previous batch may still be reading (pipelined), so its ways stay. ``out``: tensors ``locs``
        (int32), ``src``, ``dst`` (int64) of at least the batch's length to write into."""
        torch = torch_module()
        n = int(ids.shape[0])
        if n > self.stage_rows:
            raise DlrmlabError(f"a batch of {n:,} ids is more than this cache was sized for ({self.stage_rows:,})")
        with _one_cpu_thread(torch, self.device):
            return self._plan(torch, ids, seg, n, lock_previous, out)

    def _plan(self, torch: Any, ids: Any, seg: Any, n: int, lock_previous: bool, out: dict | None) -> Plan:
        self.tick += 1
        out = out or {"locs": torch.empty(n, dtype=torch.int32, device=self.device),
                      "src": torch.empty(n, dtype=torch.int64, device=self.device),
                      "dst": torch.empty(n, dtype=torch.int64, device=self.device)}
        locs, src, dst = out["locs"][:n], out["src"][:n], out["dst"][:n]
        counters = torch.zeros(len(COUNTERS), dtype=torch.int64, device=self.device)
        if n:
            seg = seg.to(torch.int64)
            u = self._unique_rows(torch, ids[:n].to(torch.int64), seg - seg[0])
            self._touch_hits(u)
            m = self._place_misses(torch, u, self.tick - 1 if lock_previous else self.tick)
            self._write(torch, u, m, locs, src, dst, counters)
            self.totals += counters
        self._seq += n
        return Plan(locs, src, dst, counters)

    def _unique_rows(self, torch: Any, ids: Any, seg: Any) -> dict:
        """The batch's rows, sorted into runs of one row each (fixed-size arrays: entries past the number of
        unique rows are masked by ``valid``), with each row's count, first and last lookup, set and slot."""
        n, dev = ids.shape[0], self.device
        pos = torch.arange(n, device=dev)
        table = torch.searchsorted(seg[1:].contiguous(), pos, right=True).clamp_(max=seg.shape[0] - 2)
        g = ids + self._row_base[table]
        gs, perm = torch.sort(g, stable=True)
        first = torch.ones(n, dtype=torch.bool, device=dev)
        first[1:] = gs[1:] != gs[:-1]
        last = torch.ones(n, dtype=torch.bool, device=dev)
        last[:-1] = first[1:]
        run = torch.cumsum(first, 0) - 1  # each sorted lookup's unique row
        valid = pos <= run[-1]
        # a run's ends are written once each (no atomics, however hot a row): the stable sort keeps each
        # run's lookups in batch order, so its first and last entries are its first and last lookups
        at_first, at_last = run.where(first, n + pos), run.where(last, n + pos)
        row = _per_run(torch, at_first, gs, 0)
        count = _per_run(torch, at_last, pos, -1) - _per_run(torch, at_first, pos, 0) + 1  # 0 past the unique rows
        first_pos, last_pos = _per_run(torch, at_first, perm, n), _per_run(torch, at_last, perm, -1)
        t = table[first_pos.clamp(max=n - 1)]
        sets = self._set_start[t] + set_hash(row, self._set_count[t])
        slot = self.slot_of[torch.where(valid, row, self.host.total_rows + pos)].to(torch.int64)
        return {"n": n, "pos": pos, "perm": perm, "run": run, "valid": valid, "row": row, "count": count,
                "first_pos": first_pos, "stamp": self._seq + last_pos + 1, "set": sets, "slot": slot,
                "hit": valid & (slot >= 0), "miss": valid & (slot < 0)}

    def _touch_hits(self, u: dict) -> None:
        """Hit rows' slots: last lookup, this batch, lookups added (masked lanes write spare slots)."""
        s = u["slot"].where(u["hit"], self.geometry.slots + u["pos"])
        self.stamp.scatter_(0, s, u["stamp"])
        self.last.index_fill_(0, s, self.tick)
        self.freq.scatter_add_(0, s, u["count"])

    def _victim_order(self, torch: Any, lock_from: int) -> tuple[Any, Any]:
        """Per set, its ways in victim order (open ways first) and how many are open: in use, and used by no
        batch from ``lock_from`` on (this batch's hits are already marked)."""
        g = self.geometry
        open_ = (self.tags[: g.slots] >= 0) & (self.last[: g.slots] < lock_from)
        key = self.stamp[: g.slots].where(open_, _BIG).view(g.sets, g.ways)
        _, order = torch.sort(key, dim=1, stable=True)
        if self.placement.policy == "lfu":  # fewest lookups first; the stable sort keeps LRU order in ties
            f = self.freq[: g.slots].where(open_, _BIG).view(g.sets, g.ways).gather(1, order)
            order = order.gather(1, torch.sort(f, dim=1, stable=True).indices)
        return order, open_.view(g.sets, g.ways).sum(1)

    def _place_misses(self, torch: Any, u: dict, lock_from: int) -> dict:
        """Each missed row's way (free, then victim in order) or its staging row, misses sorted by (set,
        first lookup) to the front; tags, map, ages, frequencies and fill counts updated."""
        g, n, pos = self.geometry, u["n"], u["pos"]
        order, n_open = self._victim_order(torch, lock_from)
        mo = torch.sort(torch.where(u["miss"], u["set"] * n + u["first_pos"], _BIG)).indices
        is_m = u["miss"][mo]
        ms = u["set"][mo].where(is_m, 0)
        new_set = torch.ones(n, dtype=torch.bool, device=self.device)
        new_set[1:] = ms[1:] != ms[:-1]
        rank = pos - _run_starts(torch, new_set, pos)  # place among its set's misses
        filled = self.filled[ms]
        free = g.ways - filled
        take_free = is_m & (rank < free)
        j = rank - free
        evict = is_m & ~take_free & (j < n_open[ms])
        staged = is_m & ~take_free & ~evict
        way = torch.where(take_free, filled + rank, order[ms, j.clamp(0, g.ways - 1)])
        ins = take_free | evict
        slot = torch.where(ins, ms * g.ways + way, g.slots + pos)  # masked lanes: spare slots
        row = u["row"][mo]
        spare_row = self.host.total_rows + pos
        self.slot_of.index_fill_(0, self.tags[slot].where(evict, spare_row), -1)
        self.slot_of.scatter_(0, row.where(ins, spare_row), slot.to(torch.int32))
        # fill_ of a view: `t[i] = -1` would copy a CPU scalar to the GPU and wait (a sync)
        self.slot_of[self.host.total_rows :].fill_(-1)
        self.tags.scatter_(0, slot, row)
        self.tags[g.slots:].fill_(-1)
        self.stamp.scatter_(0, slot, u["stamp"][mo])
        self.last.index_fill_(0, slot, self.tick)
        self.freq.scatter_(0, slot, u["count"][mo])
        self.filled.scatter_add_(0, ms.where(take_free, g.sets + pos), take_free.to(torch.int64))
        stage_base = g.slots + (self.tick % 2) * self.stage_rows
        target = torch.where(ins, slot, stage_base + torch.cumsum(staged, 0) - 1)
        return {"order": mo, "is_miss": is_m, "row": row, "target": target, "ins": ins, "evict": evict,
                "staged": staged}

    def _write(self, torch: Any, u: dict, m: dict, locs: Any, src: Any, dst: Any, counters: Any) -> None:
        """Every id's location, the miss list and the batch's counters."""
        n = u["n"]
        loc_u = torch.empty(2 * n, dtype=torch.int64, device=self.device)
        loc_u[:n] = u["slot"]
        loc_u.scatter_(0, m["order"].where(m["is_miss"], n + u["pos"]), m["target"])
        locs.scatter_(0, u["perm"], loc_u[u["run"]].to(torch.int32))
        src.copy_(m["row"].where(m["is_miss"], 0))
        dst.copy_(m["target"].where(m["is_miss"], -1))
        hit = u["hit"]
        counters[:1].fill_(n)
        counters[1:] = torch.stack([u["valid"].sum(), hit.sum(), m["is_miss"].sum(), m["ins"].sum(),
                                    m["evict"].sum(), m["staged"].sum(), (u["count"] * hit).sum()])

    def fill(self, plan: Plan, stream: Any = 0) -> None:
        """Copy the plan's missed rows from the host tables (zero-copy) into the device buffer, on ``stream``
        (the same stream the plan ran on, or one that waits for it)."""
        n = int(plan.src.shape[0])
        launch.gather_rows(self.host.flat, numba_view(plan.src), self.rows, numba_view(plan.dst), n, self.host.dim,
                           stream)

    def stats(self) -> CacheStats:
        """Every batch's counters so far, summed (waits for the GPU)."""
        if self.device == "cuda":
            torch_module().cuda.synchronize()
        return CacheStats.of(self.totals)

    def resident(self) -> np.ndarray:
        """Global rows held in the cache now (tests, inspection; waits for the GPU)."""
        tags = self.tags[: self.geometry.slots].cpu().numpy()
        return np.sort(tags[tags >= 0])

    def plan_arrays(self, ids: np.ndarray, seg: np.ndarray, lock_previous: bool) -> tuple[Plan, CacheStats]:
        """:meth:`plan` from NumPy arrays, waiting for the result (tests, CPU models)."""
        torch = torch_module()
        plan = self.plan(torch.as_tensor(np.ascontiguousarray(ids, np.int64), device=self.device),
                         torch.as_tensor(np.asarray(seg, np.int64) - int(seg[0]), device=self.device), lock_previous)
        return plan, plan.stats()


def _run_starts(torch: Any, starts: Any, pos: Any) -> Any:
    """For each position, where its run (``starts`` marks each run's first position) began. Not
    ``torch.cummax``: on CUDA its 1-D scan runs in one thread block; a cumulative sum (a device-wide scan)
    and a scatter give the same result across the GPU (2.46M ids on an H100: 0.17 ms against 7.1 ms)."""
    run = torch.cumsum(starts, 0) - 1
    return _per_run(torch, run.where(starts, pos.shape[0] + pos), pos, 0)[run]


def _per_run(torch: Any, at: Any, values: Any, fill: int) -> Any:
    """Per run, the value of the one lane that ``at`` gives the run's index (every other lane points past the
    runs, at a spare entry of its own: no two writes to one address); ``fill`` where no lane wrote."""
    n = values.shape[0]
    return torch.full((2 * n,), fill, dtype=values.dtype, device=values.device).scatter_(0, at, values)[:n]


@contextlib.contextmanager
def _one_cpu_thread(torch: Any, device: str) -> Iterator[None]:
    """On the CPU, torch's ops of a plan in one thread: a plan is many small ops, whose intra-op threads
    cost more in handing work over than they save (ten times slower on two busy cores)."""
    if device != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def segments(offsets: np.ndarray, table_offsets: np.ndarray) -> np.ndarray:
    """Per-table id ranges of a jagged batch: table t's ids are ``ids[seg[t]:seg[t+1]]``."""
    return np.asarray(offsets, np.int64)[np.asarray(table_offsets, np.int64)]
