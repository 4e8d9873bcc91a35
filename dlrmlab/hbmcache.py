"""An HBM cache of host-table rows: set-associative, LRU or LFU, one shared budget or one per table.

Design (as FBGEMM's ``MANAGED_CACHING`` prefetch):

* **Management on the host** (``numba.njit`` on the CPU, :func:`_plan`; the sets split among threads):
  for each batch the ids are looked up in the cache's tags once per row (a row-to-slot map makes a lookup
  one load), duplicates are served by the first lookup's slot, each missed row gets a victim way of its
  set, and every id becomes a *location*: its row in the device buffer (FBGEMM's
  ``lxu_cache_locations``). Counters per batch: hits, misses, inserts, evictions (and rows staged, below),
  per unique row and per lookup.
* **The device buffer** holds the cache's slots followed by two staging areas (one per batch in flight):
  a missed row whose set has no free way (every way in use by a batch in flight) is staged there for this
  batch only. So every id has a location, and the embedding kernel reads every row from HBM with the
  plain addresser over this buffer: where a row is read from was decided here.
* **The fill** copies the missed rows from the pinned host tables (read zero-copy over the host link)
  into their slots with the gather kernel (:mod:`dlrmlab.kernels.gather`), on whatever stream the
  pipeline (:mod:`dlrmlab.pipeline`) gives it.
* **Locking**: a way used by a batch that may still be computing is never a victim: ``lock_from`` is this
  batch's tick (serial mode) or the previous batch's (pipelined: batch i+1's fill runs while batch i reads).

LRU evicts the way used longest ago (per lookup); LFU the way with the fewest lookups since it was filled,
ties by LRU. Sets are picked by a multiplicative hash of the row (so ranked or strided ids spread).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numba import njit

from dlrmlab import backend, launch
from dlrmlab import validate as checks
from dlrmlab.backend import cuda
from dlrmlab.config import table_dtype
from dlrmlab.errors import DlrmlabError
from dlrmlab.kernels import gather
from dlrmlab.placement import HostTables, Placement, check_device_fits

#: counters of :func:`_plan`, in its ``out`` order
COUNTERS = ("lookups", "unique_rows", "hits", "misses", "inserts", "evictions", "staged", "lookup_hits")
_NEVER = np.iinfo(np.int64).min // 2  # a batch tick no batch has


@njit(cache=True, inline="always")
def set_hash(row, n_sets):
    """The set of global row ``row`` among ``n_sets`` (Knuth's multiplicative hash)."""
    return ((row * 2654435761) % 4294967296) % n_sets


# columns of a slot's state (one cache line per slot: a hit touches one line)
STAMP, BATCH, INSERTED, FREQ = 0, 1, 2, 3


@njit(cache=True, nogil=True)
def _sets_of(ids, seg, row_base, set_start, set_count, parts, lo, hi, sets, part_of):  # pragma: no cover - compiled
    """The set of each id in ``lo..hi`` and the part that owns it (a pass before the parts run)."""
    for t in range(seg.shape[0] - 1):
        for e in range(max(seg[t], lo), min(seg[t + 1], hi)):
            st = set_start[t] + set_hash(row_base[t] + ids[e], set_count[t])
            sets[e] = st
            part_of[e] = st % parts


@njit(cache=True, nogil=True)
def _plan(ids, seg, row_base, sets, part_of, ways, lfu, tick, lock_from, seq0, part, parts, tags, meta, filled,
          slot_of, locs, miss_src, miss_dst, staged, out):  # pragma: no cover - compiled
    """One batch through the sets ``set % parts == part`` of the cache (state updated in place); returns
    ``(missed rows, rows staged)``. Parts touch disjoint sets, so they run in parallel threads and decide
    exactly what one pass over every set would (each lookup's sequence number is its place in the batch).

    ``ids[seg[t]:seg[t+1]]`` are table t's ids; ``row_base[t]`` its first global row; ``sets``/``part_of``
    each id's set and part (:func:`_sets_of`). ``tags[slot]``: the
    global row a slot holds; ``meta[slot]``: its last lookup's sequence number, last batch, the batch that
    filled it, its lookups since; ``filled[set]``: ways in use (a set fills in way order and never empties).
    Fills ``locs`` (a device-buffer row per id of this part; ``-1 - (k * parts + part)`` for this part's
    k-th staged row, placed later by :func:`_place_staged`), this part's ``miss_src``/``miss_dst`` (global
    row -> buffer row) and ``out`` (:data:`COUNTERS`).
    """
    n_miss = 0
    n_staged = 0
    big = np.iinfo(np.int64).max
    first = seg[0]
    for t in range(seg.shape[0] - 1):
        for e in range(seg[t], seg[t + 1]):
            if part_of[e] != part:
                continue
            g = row_base[t] + ids[e]
            st = sets[e]
            seq = seq0 + (e - first) + 1
            out[0] += 1
            s = slot_of[g]
            if s >= 0:
                m = meta[s]
                if m[BATCH] != tick:  # the row's first lookup in this batch
                    out[1] += 1
                    out[2] += 1
                    m[BATCH] = tick
                if m[INSERTED] != tick:
                    out[7] += 1
                m[STAMP] = seq
                m[FREQ] += 1
                locs[e] = s
                continue
            if s <= -2:  # staged earlier in this batch
                locs[e] = -1 - ((-2 - s) * parts + part)
                continue
            out[1] += 1
            out[3] += 1
            base = st * ways
            v = -1
            if filled[st] < ways:  # a free way first
                v = base + filled[st]
                filled[st] += 1
            else:
                best_f, best_s = big, big
                for x in range(base, base + ways):
                    if meta[x, BATCH] >= lock_from:  # read by a batch that may be in flight
                        continue
                    f = meta[x, FREQ] if lfu else 0
                    if f < best_f or (f == best_f and meta[x, STAMP] < best_s):
                        v, best_f, best_s = x, f, meta[x, STAMP]
                if v >= 0:
                    out[5] += 1
                    slot_of[tags[v]] = -1
            if v >= 0:
                out[4] += 1
                tags[v] = g
                slot_of[g] = v
                meta[v, STAMP] = seq
                meta[v, BATCH] = tick
                meta[v, INSERTED] = tick
                meta[v, FREQ] = 1
                dst = v
            else:  # every way locked: stage the row for this batch only
                out[6] += 1
                slot_of[g] = -2 - n_staged
                staged[n_staged] = g
                dst = -1 - (n_staged * parts + part)
                n_staged += 1
            miss_src[n_miss] = g
            miss_dst[n_miss] = dst
            n_miss += 1
            locs[e] = dst
    for k in range(n_staged):
        slot_of[staged[k]] = -1
    return n_miss, n_staged


@njit(cache=True, nogil=True)
def _place_staged(a, stage_base, first_of_part, parts):  # pragma: no cover - compiled
    """Staged rows' codes in ``a`` (locations or fill targets) -> rows of the staging area, the parts' rows
    one after another."""
    for i in range(a.shape[0]):
        if a[i] < 0:
            c = -1 - a[i]
            a[i] = stage_base + first_of_part[c % parts] + c // parts


@dataclass(frozen=True)
class CacheStats:
    """One batch's counters. Per unique row: ``hits`` + ``misses`` = ``unique_rows``; ``inserts`` +
    ``staged`` = ``misses``. Per lookup: ``lookup_hits`` of ``lookups`` were resident before the batch."""

    lookups: int = 0
    unique_rows: int = 0
    hits: int = 0
    misses: int = 0
    inserts: int = 0
    evictions: int = 0
    staged: int = 0
    lookup_hits: int = 0

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


class HbmCache:
    """The cache's state (host) and rows (device) for a set of :class:`~dlrmlab.placement.HostTables`.

    ``max_ids``: the most ids one batch may hold (sizes the staging areas). ``threads``: the sets are split
    among that many planning threads (the same decisions as one). ``on_device=False``: no rows, only the
    cache's decisions and counters (a CPU model at any scale; ``host`` then needs only its shape).
    Refused before anything is allocated when the buffer does not fit in the free GPU memory.
    """

    def __init__(self, host: HostTables, placement: Placement | str, max_ids: int, stream: Any = 0,
                 threads: int = 1, on_device: bool = True) -> None:
        self.placement = Placement.parse(placement)
        if self.placement.kind != "cached":
            raise DlrmlabError(f"an HBM cache needs a 'cached' placement, got {self.placement.kind!r}")
        self.host = host
        self.geometry = geometry(host.rows, host.row_bytes, self.placement)
        self.stage_rows = int(max_ids)
        buffer_rows = self.geometry.slots + 2 * self.stage_rows
        storage = table_dtype(host.dtype).storage
        if on_device:
            check_device_fits(buffer_rows * host.row_bytes + 8 * (2 * self.stage_rows),
                              f"an HBM cache of {self.geometry.slots:,} rows ({checks.fmt_bytes(self.cache_bytes)}) "
                              f"with staging for {self.stage_rows:,} rows a batch")
        slots = self.geometry.slots
        self.tags = np.full(slots, -1, np.int64)
        self.meta = np.zeros((slots, 4), np.int64)
        self.meta[:, BATCH] = self.meta[:, INSERTED] = _NEVER
        self.filled = np.zeros(self.geometry.sets, np.int64)
        self.slot_of = np.full(host.total_rows, -1, np.int64)
        self._parts: list = []
        self._pool: ThreadPoolExecutor | None = None
        self._row_base = np.concatenate([[0], np.cumsum(host.rows)[:-1]]).astype(np.int64)
        self.tick = 0
        self._seq = 0
        self.threads = int(threads)
        # the rows themselves; none for a model of the cache's decisions alone (any size, on the CPU)
        self.rows = cuda.device_array(buffer_rows * host.dim, storage, stream=stream) if on_device else None

    @property
    def cache_bytes(self) -> int:
        return self.geometry.slots * self.host.row_bytes

    @property
    def buffer_rows(self) -> int:
        return self.geometry.slots + 2 * self.stage_rows

    def plan(self, ids: np.ndarray, seg: np.ndarray, locs: np.ndarray, miss_src: np.ndarray,
             miss_dst: np.ndarray, lock_previous: bool) -> tuple[int, CacheStats]:
        """Run one batch's ids (``ids[seg[t]:seg[t+1]]`` of table t) through the cache: fills ``locs``
        and the missed rows' ``miss_src`` -> ``miss_dst``; returns how many rows to fetch and the counters.
        ``lock_previous``: the previous batch may still be reading (pipelined), so its ways stay."""
        if ids.shape[0] > self.stage_rows:
            raise DlrmlabError(f"a batch of {ids.shape[0]:,} ids is more than this cache was sized for "
                               f"({self.stage_rows:,})")
        self.tick += 1
        seg = np.asarray(seg, np.int64)
        ids = np.ascontiguousarray(ids, np.int64)
        n_ids = int(seg[-1] - seg[0])
        lock_from = self.tick - 1 if lock_previous else self.tick
        stage_base = self.geometry.slots + (self.tick % 2) * self.stage_rows
        parts = max(1, min(self.threads, self.geometry.sets, 256))
        g = self.geometry
        scratch = self._scratch(parts, int(seg[-1]))
        sets, part_of = self._sets[: int(seg[-1])], self._part_of[: int(seg[-1])]
        outs = np.zeros((parts, len(COUNTERS)), np.int64)
        set_start, set_count = np.asarray(g.set_start, np.int64), np.asarray(g.set_count, np.int64)
        chunk = -(-n_ids // parts)

        def sets_of(p: int) -> None:
            lo = int(seg[0]) + p * chunk
            _sets_of(ids, seg, self._row_base, set_start, set_count, parts, lo, lo + chunk, sets, part_of)

        def part(p: int) -> tuple[int, int]:
            src, dst, staged = scratch[p]
            return _plan(ids, seg, self._row_base, sets, part_of, g.ways, self.placement.policy == "lfu", self.tick,
                         lock_from, self._seq, p, parts, self.tags, self.meta, self.filled, self.slot_of, locs, src,
                         dst, staged, outs[p])

        if parts == 1:
            sets_of(0)
            done = [part(0)]
        else:  # disjoint sets: the parts run in parallel threads (the cores release the GIL)
            if self._pool is None or self._pool._max_workers != parts:
                self._pool = ThreadPoolExecutor(parts, thread_name_prefix="hbmcache-plan")
            list(self._pool.map(sets_of, range(parts)))
            done = list(self._pool.map(part, range(parts)))
        first_of_part = np.concatenate([[0], np.cumsum([k for _, k in done])[:-1]]).astype(np.int64)
        n = 0
        for p, (m, _) in enumerate(done):  # the parts' missed rows, one list
            miss_src[n : n + m] = scratch[p][0][:m]
            miss_dst[n : n + m] = scratch[p][1][:m]
            n += m
        if sum(k for _, k in done):
            _place_staged(locs[seg[0] : seg[-1]], stage_base, first_of_part, parts)
            _place_staged(miss_dst[:n], stage_base, first_of_part, parts)
        self._seq += n_ids
        return int(n), CacheStats(*(int(x) for x in outs.sum(axis=0)))

    def _scratch(self, parts: int, n: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Per part: missed rows' sources and targets, staged rows; per id: its set and part (all reused
        from batch to batch)."""
        if len(self._parts) != parts or self._parts[0][0].size < n:
            self._parts = [tuple(np.zeros(max(n, 1), np.int64) for _ in range(3)) for _ in range(parts)]
            self._sets, self._part_of = np.zeros(max(n, 1), np.int64), np.zeros(max(n, 1), np.int16)
        return self._parts

    def fill(self, miss_src: Any, miss_dst: Any, n: int, stream: Any = 0) -> None:
        """Copy ``n`` missed rows from the host tables (zero-copy) into the device buffer, on ``stream``."""
        if n:
            blocks = launch.cover(n * gather.WARP, gather.BLOCK, cap=None if backend.SIMULATOR else 65535)
            gather.build()[blocks, gather.BLOCK, stream](self.host.flat, miss_src, self.rows, miss_dst, n,
                                                          self.host.dim)

    def resident(self) -> np.ndarray:
        """Global rows held in the cache now (tests, inspection)."""
        return np.sort(self.tags[self.tags >= 0])


def segments(offsets: np.ndarray, table_offsets: np.ndarray) -> np.ndarray:
    """Per-table id ranges of a jagged batch: table t's ids are ``ids[seg[t]:seg[t+1]]``."""
    return np.asarray(offsets, np.int64)[np.asarray(table_offsets, np.int64)]
