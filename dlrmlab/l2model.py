"""A CPU model of the GPU's L2 cache for embedding lookups: what hit rate a trace of row ids gets.

The model replays a stage's lookups as the embedding kernel would issue them and runs them through a
set-associative LRU cache of 128-byte lines with 32-byte sectors, optionally with a *persisting*
partition for pinned rows. It runs on the CPU (``numba.njit``, not ``numba.cuda``): one ``paper`` batch
(12 x 2048 x 150 = 3.7M lookups of 512-byte rows, 15M line accesses) takes one to two seconds of CPU.

API: :class:`L2Config` (geometry), :class:`Trace` (ids per batch and table), :func:`simulate` (the model
itself), :class:`Policy` / :data:`POLICIES` / :func:`predict` (how each dlrmlab variant touches L2),
:func:`hit_rate_table`, :func:`carve_out_sweep` and :func:`footprint_table` (tidy sweeps),
:func:`ncu_predictions`, :func:`compare_with_ncu` and :func:`ncu_comparison` (against Nsight Compute),
:func:`teaching_setup` and :func:`teaching_datasets` (for notebook T3).

What it does
------------
* Every table occupies its own address range (by default back to back, each aligned to 4 KiB; any layout
  can be given as per-table row -> byte-address arrays, e.g. the frequency-ranked layouts of the window
  variants). A lookup of row ``r`` reads the row's bytes in order: its lines, each with the mask of the
  32-byte sectors it covers.
* Set index = line address modulo the number of sets; each set holds ``ways`` lines, evicted LRU.
  Hits and misses are counted per sector, as Nsight Compute's ``lts__t_sector_hit_rate`` counts them: a
  line whose tag is present but whose sector was never fetched is a sector miss (32 bytes from DRAM).
* Pinned rows (``pinned``, per table) with a persisting carve-out (``carve_out`` bytes, at most
  ``persisting_max``): the carve-out is a number of *ways* in every set (``ceil(carve_out / (sets x
  line))``, at least one way left for normal lines; on the H100 a way is 3,276,800 B and the 32,768,000 B
  maximum is exactly 10 of the 16 ways). Pinned lines live there and are evicted only by other pinned
  lines (LRU among themselves); normal lines never evict them and use the remaining ways. This is how
  ``cudaAccessPropertyPersisting`` (the access-policy window) and ``evict_last`` (the pin kernel) are meant
  to behave. With ``L2Config(lend_unused=True)`` normal lines may also use carve-out ways that no pinned
  line holds (what the CUDA guide says the hardware does with an unused set-aside).
* How pinned rows get there (``pin``): ``"window"`` -- persisting from their first touch, a fraction
  ``hit_ratio`` of their lines chosen by a hash of the address (the window's ``hitRatio``); ``"table"`` --
  a pin kernel prefetches each table's pinned rows right before that table's lookups, every batch (the
  paper's L2P); ``"batch"`` -- all tables' pinned rows prefetched before each batch (``fast+l2p``). The
  pin kernel's own traffic is not counted in the hit rate; its DRAM bytes are reported apart.

The order a kernel touches rows matters (``order``):

* ``"table-major"``: all of table 0's lookups (bag after bag), then table 1's, ... -- what the per-table
  launches do: ``torch``, ``baseline``, ``optmt``, ``rpf*``, ``l2p``, ``l2window``, ``combined*``.
* ``"interleaved"``: tables taken ``tables_at_once`` at a time, their lookups merged round-robin (each
  table advancing at the same relative pace). The fast kernel (``fast``, ``fast_graph``, ``fast+l2p``,
  ``fast+window``) takes the table-major bags one block per tile, so the bags in flight are a window
  sliding over the tables: about half a table with the H100's plain entry (132 SMs x 4 blocks x 2 bags),
  about two with its split-hot entry (132 x 8 x 4). Its policies use ``tables_at_once=2``: even at half a
  table in flight, ncu measured fewer L2 hits than per-table launches get (56.7% against 67.0% on the
  medium trace), since bags finish out of order and the window straddles table boundaries.
  ``tables_at_once`` = all tables models a bag-major kernel (every table's bag b before any table's bag
  b+1).

Where the model is wrong, and why
---------------------------------
* **Set-index hashing.** The real L2 hashes address bits into set (and slice) indices; the model takes
  the line address modulo the number of sets. Strided or contiguous layouts that would pile into few sets
  under modulo indexing are spread by the hardware hash, and the other way round; for scattered rows
  (random ids in big tables) both behave like a random placement, so the error is small there.
* **The sectored L2.** A miss fetches the missing 32-byte sectors (here) or, on the real L2, possibly a
  64-byte pair or the whole line, depending on the access and DRAM granularity: DRAM bytes can be
  under-estimated. With 512-byte rows every sector of every line is read, so hit rates are unaffected.
* **Two partitions.** The H100's L2 is two partitions joined by a crossbar; an SM's data may be cached
  in the "far" partition and also copied into the near one, so the capacity one SM effectively sees is
  smaller than 50 MiB, and duplicated lines count twice. The model is one flat 50 MiB cache: it
  over-estimates hit rates when the working set is near the capacity.
* **Not true LRU.** The replacement policy, the way the persisting set-aside is carved (ways here), the
  promotion of lines on ``evict_last`` and any hardware prefetching are undocumented. ``hitRatio`` here
  picks lines by a hash, the hardware picks them "randomly". On the H100 a full carve-out did not cost
  normal lines the capacity the strict way partition takes from them, and the pin kernel's ``evict_last``
  prefetches did not raise the hit rate at all (``results/h100/L2MODEL.md``): pinning results are an
  upper bound.
* **Concurrency.** Thousands of warps on 132 SMs interleave their loads nondeterministically; the model
  replays one fixed order (see ``order``). Reuse distances shorter than the accesses in flight (a few MB)
  are not modelled precisely.
* **No L1, no other traffic.** ncu's L2 hit rate counts only what missed in L1 (the per-SM L1 catches
  part of the hot rows, so the L2 sees fewer, colder repeats) and also counts index loads and output
  writes; the model sees every row read and nothing else. :func:`compare_with_ncu` shows both the L2 hit
  rate and the on-chip (L1 + L2) one.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numba import njit

from dlrmlab import backend
from dlrmlab.datasets import DATA_DIR_ENV, PAPER_TRACES
from dlrmlab.errors import DlrmlabError
from dlrmlab.l2window import split_budget as window_split
from dlrmlab.validate import integer
from dlrmlab.variants import VARIANTS
from dlrmlab.workload import Workload
from dlrmlab.workload import preset as make_preset

#: H100 (80 GB HBM3) L2: 52,428,800 bytes; ``persistingL2CacheMaxSize`` 32,768,000 bytes.
H100_L2_BYTES = 52_428_800
H100_PERSISTING_MAX_BYTES = 32_768_000

ORDERS = ("table-major", "interleaved")
PIN_MODES = ("none", "window", "table", "batch")
LAYOUTS = ("plain", "ranked", "split-hot")
#: Alignment of each table's base address in the default layout.
TABLE_ALIGN = 4096

# flag bits of one row lookup in the simulator
_PINNED, _COUNTED, _PREFILL = 1, 2, 4
_HASH_ONE = 1 << 32  # hit-ratio threshold meaning "every pinned line"


def _int(name: str, value: Any, minimum: int | None = 0) -> int:
    """``value`` as an int, or a DlrmlabError naming the argument (:func:`dlrmlab.validate.integer`)."""
    return integer(name, value, minimum)


def _one_of(what: str, value: Any, valid: Sequence[str]) -> None:
    if value not in valid:
        raise DlrmlabError(f"unknown {what} {value!r}; valid: {', '.join(valid)}")


# --- cache geometry ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class L2Config:
    """Geometry of the modelled L2. Defaults: the H100's 50 MiB, 128-byte lines of four 32-byte sectors,
    16 ways (an assumption: NVIDIA does not document the associativity), 32,768,000 bytes of persisting
    carve-out at most."""

    size: int = H100_L2_BYTES
    line: int = 128
    sector: int = 32
    ways: int = 16
    persisting_max: int = H100_PERSISTING_MAX_BYTES
    #: let normal lines use carve-out ways that no pinned line holds (False: a strict partition)
    lend_unused: bool = False

    def __post_init__(self) -> None:
        for name in ("size", "line", "sector", "ways"):
            object.__setattr__(self, name, _int(name, getattr(self, name), minimum=1))
        object.__setattr__(self, "persisting_max", _int("persisting_max", self.persisting_max, minimum=0))
        if not isinstance(self.lend_unused, (bool, np.bool_)):
            raise DlrmlabError(f"lend_unused must be True or False, got {self.lend_unused!r}")
        if self.line % self.sector:
            raise DlrmlabError(f"line ({self.line} B) must be a multiple of sector ({self.sector} B)")
        if self.line // self.sector > 16:
            raise DlrmlabError(f"at most 16 sectors per line, got line={self.line} / sector={self.sector}")
        if self.size % (self.line * self.ways):
            raise DlrmlabError(
                f"size ({self.size} B) must be a multiple of line x ways = {self.line} x {self.ways} "
                f"= {self.line * self.ways} B"
            )
        if self.persisting_max > self.size - self.way_bytes:
            raise DlrmlabError(
                f"persisting_max ({self.persisting_max} B) must leave at least one way ({self.way_bytes} B) "
                f"of the {self.size} B for normal lines"
            )

    @property
    def sets(self) -> int:
        return self.size // (self.line * self.ways)

    @property
    def way_bytes(self) -> int:
        """Bytes of one way across all sets: the granularity of the carve-out."""
        return self.sets * self.line

    def carve_out_ways(self, carve_out: int) -> int:
        """Ways set aside for pinned lines: ``ceil(carve_out / way_bytes)``, at most ``ways - 1``."""
        c = _int("carve_out", carve_out)
        if c > self.persisting_max:
            raise DlrmlabError(f"carve_out ({c} B) is over persisting_max ({self.persisting_max} B)")
        return min(-(-c // self.way_bytes), self.ways - 1)

    def with_(self, **changes: Any) -> L2Config:
        return replace(self, **changes)

    def describe(self) -> dict:
        return {**asdict(self), "sets": self.sets, "way_bytes": self.way_bytes}


# --- traces -----------------------------------------------------------------------------------------------


@dataclass
class Trace:
    """The row ids a stage looks up: ``ids[b][t]`` is table ``t``'s ids in batch ``b``, bags in order.

    ``rows[t]`` is table t's row count (it sets the table's address range). Build one with
    :meth:`from_workload` or :meth:`of` (a :class:`~dlrmlab.workload.Batch`, a list of them, per-table id
    arrays of one batch, or a list of such lists).
    """

    ids: list[list[np.ndarray]]
    rows: tuple[int, ...]
    name: str = ""

    def __post_init__(self) -> None:
        self.rows = tuple(_int(f"rows[{t}]", r, minimum=1) for t, r in enumerate(self.rows))
        if not self.rows:
            raise DlrmlabError("a trace needs at least one table")
        batches = []
        for b, batch in enumerate(self.ids):
            if len(batch) != len(self.rows):
                raise DlrmlabError(f"batch {b} has {len(batch)} tables, the trace has {len(self.rows)} (rows)")
            tables = []
            for t, ids in enumerate(batch):
                a = np.asarray(ids)
                if a.ndim != 1 or (a.size and a.dtype.kind not in "iu"):
                    raise DlrmlabError(f"ids of batch {b}, table {t} must be a 1-D integer array")
                a = a.astype(np.int64, copy=False)
                if a.size and (a.min() < 0 or a.max() >= self.rows[t]):
                    bad = int(a.min()) if a.min() < 0 else int(a.max())
                    raise DlrmlabError(f"id {bad} in batch {b}, table {t} is outside 0..{self.rows[t] - 1}")
                tables.append(a)
            batches.append(tables)
        if not batches:
            raise DlrmlabError("a trace needs at least one batch")
        self.ids = batches

    @classmethod
    def from_workload(cls, stage: Any = "paper", dataset: str = "random", seed: int = 0, n_batches: int = 1) -> Trace:
        """``n_batches`` batches of ``Workload(stage, dataset, seed)``, as the benchmarks draw them."""
        wl = Workload(stage, dataset, seed=seed)
        n = _int("n_batches", n_batches, minimum=1)
        return cls.of(list(wl.batches(n)), wl.stage.embedding_sizes, name=wl.dataset)

    @classmethod
    def of(cls, obj: Any, rows: int | Sequence[int] | None = None, name: str = "") -> Trace:
        """A trace from a Batch, a list of Batches, per-table id arrays (one batch) or a list of those."""
        if isinstance(obj, Trace):
            return obj
        if hasattr(obj, "tables"):  # one workload Batch
            obj = [obj]
        batches: list[list[np.ndarray]] = []
        if isinstance(obj, np.ndarray):
            raise DlrmlabError("a trace is per-table id arrays: wrap one table's ids in a list, [ids]")
        items = list(obj)
        if not items:
            raise DlrmlabError("a trace needs at least one batch")
        if all(hasattr(x, "tables") for x in items):
            batches = [[tb.indices for tb in x.tables] for x in items]
        elif all(_is_ids(x) for x in items):
            batches = [[np.asarray(x) for x in items]]
        elif all(isinstance(x, (list, tuple)) and all(_is_ids(y) for y in x) for x in items):
            batches = [[np.asarray(y) for y in x] for x in items]
        else:
            raise DlrmlabError(
                "a trace is a Batch, a list of Batches, per-table 1-D id arrays, or a list of those per batch"
            )
        n_tables = len(batches[0])
        if rows is None:
            top = [max((int(b[t].max()) + 1 if b[t].size else 1) for b in batches) for t in range(n_tables)]
            rows = tuple(top)
        elif isinstance(rows, (int, np.integer)):
            rows = (int(rows),) * n_tables
        return cls(batches, tuple(rows), name)

    @property
    def n_batches(self) -> int:
        return len(self.ids)

    @property
    def n_tables(self) -> int:
        return len(self.rows)

    @property
    def lookups(self) -> int:
        return int(sum(a.size for batch in self.ids for a in batch))

    def counts(self, t: int) -> np.ndarray:
        """Access counts of table ``t``'s rows over all batches."""
        parts = [batch[t] for batch in self.ids]
        return np.bincount(np.concatenate(parts), minlength=self.rows[t]).astype(np.int64)

    def select(self, batches: Iterable[int] | None = None, tables: Iterable[int] | None = None) -> Trace:
        """The same layout, keeping some batches and only some tables' ids (the others' lookups emptied)."""
        bs = range(self.n_batches) if batches is None else [int(b) for b in batches]
        keep = set(range(self.n_tables) if tables is None else (int(t) for t in tables))
        for b in bs:
            if not 0 <= b < self.n_batches:
                raise DlrmlabError(f"batch {b} is out of range: the trace has {self.n_batches}")
        for t in keep:
            if not 0 <= t < self.n_tables:
                raise DlrmlabError(f"table {t} is out of range: the trace has {self.n_tables}")
        empty = np.zeros(0, np.int64)
        ids = [[a if t in keep else empty for t, a in enumerate(self.ids[b])] for b in bs]
        return Trace(ids, self.rows, self.name)

    def then(self, other: Trace) -> Trace:
        """This trace's batches followed by ``other``'s (same tables)."""
        if other.rows != self.rows:
            raise DlrmlabError("traces can only be joined when their tables (rows) are the same")
        return Trace(self.ids + other.ids, self.rows, self.name)


def _is_ids(x: Any) -> bool:
    """A 1-D integer array (or list of ints): one table's ids."""
    if isinstance(x, (list, tuple)) and any(isinstance(y, (list, tuple, np.ndarray)) for y in x):
        return False
    try:
        a = np.asarray(x)
    except ValueError:
        return False
    return a.ndim == 1 and (a.size == 0 or a.dtype.kind in "iu")


# --- layouts ----------------------------------------------------------------------------------------------


def table_bases(rows: Sequence[int], row_bytes: int, align: int = TABLE_ALIGN) -> np.ndarray:
    """Byte address of each table in the default layout: back to back, each aligned to ``align``."""
    bases, at = [], 0
    for r in rows:
        at = -(-at // align) * align
        bases.append(at)
        at += int(r) * int(row_bytes)
    return np.array(bases, np.int64)


def _ranking(counts: np.ndarray) -> np.ndarray:
    """``remap[old] = rank`` (hottest first, ties in row order), as :mod:`dlrmlab.hotness` ranks."""
    order = np.argsort(-counts, kind="stable")
    remap = np.empty_like(order)
    remap[order] = np.arange(order.size)
    return remap.astype(np.int64)


def split_budget(counts: Sequence[np.ndarray], row_bytes: int, budget_bytes: int) -> list[int]:
    """Rows of each table to keep persisting within ``budget_bytes``: the rows of all tables taken in
    order of accesses (same row size), only rows that were accessed -- :func:`dlrmlab.l2window.split_budget`,
    which the window variants use, over each table's counts ranked hottest first."""
    ranked = [np.sort(np.asarray(c, np.int64))[::-1] for c in counts]
    return window_split(ranked, [int(row_bytes)] * len(ranked), int(budget_bytes))


def layout(
    trace: Trace, row_bytes: int, kind: str = "plain", hot_rows: Sequence[int] | None = None,
    align: int = TABLE_ALIGN,
) -> list[np.ndarray]:
    """Per-table row -> byte address arrays.

    ``plain``: tables back to back (:func:`table_bases`). ``ranked``: each table's rows permuted hottest
    first (frequencies over the whole trace), as ``l2window`` ranks them. ``split-hot``: ranked, with the
    hottest ``hot_rows[t]`` rows of every table packed together at the front (``fast+window``).
    """
    _one_of("layout", kind, LAYOUTS)
    rb = _int("row_bytes", row_bytes, minimum=1)
    if kind == "plain":
        bases = table_bases(trace.rows, rb, align)
        return [bases[t] + np.arange(r, dtype=np.int64) * rb for t, r in enumerate(trace.rows)]
    remaps = [_ranking(trace.counts(t)) for t in range(trace.n_tables)]
    if kind == "ranked":
        bases = table_bases(trace.rows, rb, align)
        return [bases[t] + remaps[t] * rb for t in range(trace.n_tables)]
    if hot_rows is None or len(hot_rows) != trace.n_tables:
        raise DlrmlabError("the split-hot layout needs hot_rows, one count per table")
    hot = [min(_int(f"hot_rows[{t}]", h), trace.rows[t]) for t, h in enumerate(hot_rows)]
    hot_base = np.concatenate([[0], np.cumsum(hot)[:-1]]).astype(np.int64) * rb
    hot_end = -(-int(sum(hot)) * rb // align) * align
    cold_bases = hot_end + table_bases([r - h for r, h in zip(trace.rows, hot, strict=True)], rb, align)
    out = []
    for t in range(trace.n_tables):
        rank = remaps[t]
        out.append(np.where(rank < hot[t], hot_base[t] + rank * rb, cold_bases[t] + (rank - hot[t]) * rb))
    return out


# --- the simulator (Numba, CPU) ---------------------------------------------------------------------------


@njit(cache=True, inline="always")
def _line_hash(line):
    x = line ^ (line >> 31)
    x = x * 0x2545F4914F6CDD1D
    x = x ^ (x >> 29)
    return (x >> 17) & 0xFFFFFFFF


@njit(cache=True, inline="always")
def _popcount(x):
    c = 0
    while x:
        x &= x - 1
        c += 1
    return c


_TAG_SHIFT = 18  # a cache word: line address << 18 | kind << 16 | valid-sector mask (16 bits)


@njit(cache=True, nogil=True)
def _simulate(addr, flags, row_bytes, line, sector, n_sets, ways, pin_ways, lend, thr, state,
              out):  # pragma: no cover - compiled
    """Run row lookups through the cache ``state`` (updated in place).

    ``state`` holds ``ways`` words per set, most recently used first (true LRU by position); a word is
    ``line << 18 | kind << 16 | valid sectors`` with kind 0 empty, 1 normal, 2 persisting.
    ``out``: 0 sector accesses, 1 sector hits, 2 line accesses, 3 line hits (every requested sector
    present), 4 pinned sector accesses, 5 pinned sector hits, 6 prefill (pin kernel) sector misses,
    7 counted row lookups, 8 evictions.
    """
    for i in range(addr.shape[0]):
        a = addr[i]
        f = flags[i]
        counted = (f & 2) != 0
        prefill = (f & 4) != 0
        if counted:
            out[7] += 1
        first = a // line
        last = (a + row_bytes - 1) // line
        for ln in range(first, last + 1):
            lo = max(a, ln * line) - ln * line
            hi = min(a + row_bytes, (ln + 1) * line) - ln * line
            s0 = lo // sector
            s1 = (hi - 1) // sector
            mask = ((1 << (s1 - s0 + 1)) - 1) << s0
            nreq = s1 - s0 + 1
            pers = False
            if (f & 1) != 0 and pin_ways > 0:
                pers = thr >= 4294967296 or _line_hash(ln) < thr
            base = (ln % n_sets) * ways
            found = -1
            for w in range(ways):
                word = state[base + w]
                if (word >> 18) == ln and (word >> 16) & 3 != 0:
                    found = w
                    break
            n_pers = 0
            n_norm = 0
            empty = -1
            lru_n = -1
            lru_p = -1
            if found < 0 or pers:
                for w in range(ways):
                    k = (state[base + w] >> 16) & 3
                    if k == 0:
                        if empty < 0:
                            empty = w
                    elif k == 1:
                        n_norm += 1
                        lru_n = w
                    else:
                        n_pers += 1
                        lru_p = w
            if found >= 0:
                word = state[base + found]
                nh = _popcount(word & mask)
                k = (word >> 16) & 3
                if pers and k == 1 and n_pers < pin_ways:
                    k = 2
                new = (ln << 18) | (k << 16) | ((word | mask) & 0xFFFF)
                victim = found
            else:
                nh = 0
                if pers and n_pers < pin_ways:
                    victim = empty if empty >= 0 else lru_n
                elif pers:
                    victim = lru_p
                else:
                    limit = ways - n_pers if lend else ways - pin_ways
                    victim = empty if n_norm < limit else lru_n
                if (state[base + victim] >> 16) & 3 != 0:
                    out[8] += 1
                new = (ln << 18) | ((2 if pers else 1) << 16) | mask
            for w in range(victim, 0, -1):  # move to the front: most recently used first
                state[base + w] = state[base + w - 1]
            state[base] = new
            if counted:
                out[0] += nreq
                out[1] += nh
                out[2] += 1
                if nh == nreq:
                    out[3] += 1
                if pers:
                    out[4] += nreq
                    out[5] += nh
            elif prefill:
                out[6] += nreq - nh


class _Cache:
    """Cache state: the array the simulator updates, and the geometry it belongs to."""

    def __init__(self, config: L2Config, row_bytes: int, pin_ways: int, thr: int) -> None:
        self.config, self.row_bytes, self.pin_ways, self.thr = config, row_bytes, pin_ways, thr
        self.state = np.zeros(config.sets * config.ways, np.int64)
        self.out = np.zeros(9, np.int64)

    def run(self, addr: np.ndarray, flags: np.ndarray) -> None:
        c = self.config
        if addr.size and int(addr.max()) + self.row_bytes >= (1 << 62 - _TAG_SHIFT) * c.line:
            raise DlrmlabError("row addresses are too large for the model's cache words (over 2**44 lines)")
        _simulate(
            np.ascontiguousarray(addr, np.int64), np.ascontiguousarray(flags, np.uint8), self.row_bytes, c.line,
            c.sector, c.sets, c.ways, self.pin_ways, bool(c.lend_unused), self.thr, self.state, self.out,
        )


# --- results ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class L2Result:
    """Counts from one simulation. Rates are per 32-byte sector, as ncu's ``lts__t_sector_hit_rate``."""

    lookups: int
    sector_accesses: int
    sector_hits: int
    line_accesses: int
    line_hits: int
    pinned_sector_accesses: int
    pinned_sector_hits: int
    evictions: int
    sector_bytes: int
    prefill_sectors: int
    carve_out_bytes: int
    pinned_rows: int
    seconds: float

    @property
    def sector_misses(self) -> int:
        return self.sector_accesses - self.sector_hits

    @property
    def hit_rate(self) -> float:
        return self.sector_hits / self.sector_accesses if self.sector_accesses else math.nan

    @property
    def line_hit_rate(self) -> float:
        return self.line_hits / self.line_accesses if self.line_accesses else math.nan

    @property
    def pinned_share(self) -> float:
        """Fraction of the counted sector accesses that went to pinned (persisting) lines."""
        return self.pinned_sector_accesses / self.sector_accesses if self.sector_accesses else math.nan

    @property
    def dram_bytes(self) -> int:
        """Bytes the counted lookups fetched from DRAM (one sector per sector miss)."""
        return self.sector_misses * self.sector_bytes

    @property
    def prefill_dram_bytes(self) -> int:
        """Bytes the pin kernel fetched (not part of the hit rate)."""
        return self.prefill_sectors * self.sector_bytes

    def as_dict(self) -> dict:
        d = asdict(self)
        d.update(
            sector_misses=self.sector_misses, hit_rate=self.hit_rate, line_hit_rate=self.line_hit_rate,
            pinned_share=self.pinned_share, dram_bytes=self.dram_bytes, prefill_dram_bytes=self.prefill_dram_bytes,
        )
        return d


# --- building the access stream ---------------------------------------------------------------------------


def _pinned_masks(trace: Trace, pinned: Any) -> list[np.ndarray] | None:
    if pinned is None:
        return None
    if isinstance(pinned, Mapping):
        items = {int(t): v for t, v in pinned.items()}
    else:
        seq = list(pinned)
        if len(seq) != trace.n_tables:
            raise DlrmlabError(f"pinned needs one row array per table ({trace.n_tables}), got {len(seq)}")
        items = dict(enumerate(seq))
    masks = [np.zeros(r, bool) for r in trace.rows]
    for t, rows in items.items():
        if not 0 <= t < trace.n_tables:
            raise DlrmlabError(f"pinned: table {t} is out of range: the trace has {trace.n_tables}")
        r = np.asarray(rows, np.int64).reshape(-1)
        if r.size and (r.min() < 0 or r.max() >= trace.rows[t]):
            raise DlrmlabError(f"pinned: rows of table {t} must be in 0..{trace.rows[t] - 1}")
        masks[t][r] = True
    return masks


def _order(parts: list[np.ndarray], order: str, k: int) -> np.ndarray:
    """Permutation of the concatenated per-table lookups for ``order``."""
    sizes = [p.size for p in parts]
    starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    if order == "table-major" or k <= 1:
        return np.arange(starts[-1], dtype=np.int64)
    perm = []
    for g in range(0, len(parts), k):
        ts = [t for t in range(g, min(g + k, len(parts))) if sizes[t]]
        if not ts:
            continue
        pace = np.concatenate([(np.arange(sizes[t]) + 0.5) / sizes[t] for t in ts])
        tab = np.concatenate([np.full(sizes[t], t) for t in ts])
        idx = np.concatenate([starts[t] + np.arange(sizes[t]) for t in ts])
        perm.append(idx[np.lexsort((tab, pace))])
    return np.concatenate(perm) if perm else np.zeros(0, np.int64)


def _stream(
    trace: Trace, addresses: list[np.ndarray], masks: list[np.ndarray] | None, pin: str, order: str, k: int,
    counted: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Row addresses and flags of the whole trace, pin-kernel prefetches included where ``pin`` says."""
    addr_parts: list[np.ndarray] = []
    flag_parts: list[np.ndarray] = []
    base_flag = _COUNTED if counted else 0

    def prefill(tables: Iterable[int]) -> None:
        for t in tables:
            rows = np.flatnonzero(masks[t])
            if rows.size:
                addr_parts.append(addresses[t][rows])
                flag_parts.append(np.full(rows.size, _PINNED | _PREFILL, np.uint8))

    for batch in trace.ids:
        if pin == "batch":
            prefill(range(trace.n_tables))
        a = [addresses[t][ids] for t, ids in enumerate(batch)]
        f = [
            (np.full(ids.size, base_flag, np.uint8) if masks is None
             else (masks[t][ids].astype(np.uint8) * _PINNED) | np.uint8(base_flag))
            for t, ids in enumerate(batch)
        ]
        if pin == "table":  # table-major only: each table's pin kernel right before its lookups
            for t in range(trace.n_tables):
                if batch[t].size:
                    prefill([t])
                addr_parts.append(a[t])
                flag_parts.append(f[t])
        else:
            perm = _order(a, order, k)
            addr_parts.append(np.concatenate(a)[perm])
            flag_parts.append(np.concatenate(f)[perm])
    if not addr_parts:
        return np.zeros(0, np.int64), np.zeros(0, np.uint8)
    return np.concatenate(addr_parts).astype(np.int64), np.concatenate(flag_parts)


def _check_options(order: str, tables_at_once: int, pin: str, hit_ratio: Any) -> int:
    """Refuse bad :func:`simulate` options before any work is done; ``tables_at_once`` as a checked int."""
    _one_of("order", order, ORDERS)
    k = _int("tables_at_once", tables_at_once, minimum=1)
    _one_of("pin mode", pin, PIN_MODES[1:])
    if pin == "table" and order != "table-major":
        raise DlrmlabError("pin='table' (a pin kernel before each table's lookups) needs order='table-major'")
    if isinstance(hit_ratio, bool) or not isinstance(hit_ratio, (int, float, np.number)) or not 0 <= hit_ratio <= 1:
        raise DlrmlabError(f"hit_ratio must be a number in [0, 1], got {hit_ratio!r}")
    return k


def _row_addresses(tr: Trace, row_bytes: int, addresses: Sequence[np.ndarray] | None) -> list[np.ndarray]:
    """Per-table row -> byte address arrays (default :func:`layout` ``"plain"``), checked against the trace."""
    if addresses is None:
        addresses = layout(tr, row_bytes)
    addresses = [np.asarray(a, np.int64) for a in addresses]
    if len(addresses) != tr.n_tables or any(a.shape != (r,) for a, r in zip(addresses, tr.rows, strict=False)):
        raise DlrmlabError("addresses needs one array of row addresses per table, as long as the table's rows")
    if any(a.size and a.min() < 0 for a in addresses):
        raise DlrmlabError("row addresses must be non-negative")
    return addresses


def _pass_result(
    o: np.ndarray, cfg: L2Config, pin_ways: int, masks: list[np.ndarray] | None, since: float
) -> L2Result:
    """One pass's counters (the kernel's ``out`` slots) as an :class:`L2Result`, timed from ``since``."""
    return L2Result(
        lookups=int(o[7]), sector_accesses=int(o[0]), sector_hits=int(o[1]), line_accesses=int(o[2]),
        line_hits=int(o[3]), pinned_sector_accesses=int(o[4]), pinned_sector_hits=int(o[5]),
        evictions=int(o[8]), sector_bytes=cfg.sector, prefill_sectors=int(o[6]),
        carve_out_bytes=pin_ways * cfg.way_bytes,
        pinned_rows=int(sum(m.sum() for m in masks)) if masks is not None else 0,
        seconds=time.perf_counter() - since,
    )


def simulate(
    trace: Any,
    row_bytes: int = 512,
    config: L2Config | None = None,
    *,
    order: str = "table-major",
    tables_at_once: int = 2,
    pinned: Any = None,
    carve_out: int | None = None,
    pin: str = "window",
    hit_ratio: float = 1.0,
    addresses: Sequence[np.ndarray] | None = None,
    warmup: Any = None,
    passes: int = 1,
    all_passes: bool = False,
) -> L2Result | list[L2Result]:
    """Run a trace through the modelled L2 (see the module docstring) and count hits and misses.

    ``trace``: a :class:`Trace` or what :meth:`Trace.of` takes. ``row_bytes``: bytes per row (dim x
    element size). ``order``: ``"table-major"`` or ``"interleaved"`` (``tables_at_once`` tables at a
    time). ``pinned``: rows to keep persisting, per table (a list of arrays, one per table, or a dict
    ``{table: rows}``); ``carve_out``: bytes set aside for them (default ``config.persisting_max`` when
    something is pinned, else 0); ``pin``: ``"window"``, ``"table"`` or ``"batch"`` (how they get there);
    ``hit_ratio``: the window's ``hitRatio``. ``addresses``: per-table row -> byte address arrays (default
    :func:`layout` ``"plain"``). ``warmup``: a trace (same tables) run first and not counted -- the launches
    before the one measured. ``passes``: run the trace that many times in a row and count the last pass
    (as a profiler replaying a launch without flushing L2 sees it); ``all_passes=True`` returns every
    pass's result, first to last.
    """
    cfg = config or L2Config()
    if not isinstance(cfg, L2Config):
        raise DlrmlabError(f"config must be an L2Config, got {type(cfg).__name__}")
    tr = Trace.of(trace)
    rb = _int("row_bytes", row_bytes, minimum=1)
    k = _check_options(order, tables_at_once, pin, hit_ratio)
    masks = _pinned_masks(tr, pinned)
    if carve_out is None:
        carve_out = cfg.persisting_max if masks is not None else 0
    pin_ways = cfg.carve_out_ways(carve_out)
    if masks is None:
        pin_ways = 0
    thr = _HASH_ONE if pin != "window" or hit_ratio >= 1 else int(float(hit_ratio) * _HASH_ONE)
    addresses = _row_addresses(tr, rb, addresses)
    mode = pin if masks is not None else "window"
    n_passes = _int("passes", passes, minimum=1)
    cache = _Cache(cfg, rb, pin_ways, thr)
    t0 = time.perf_counter()
    if warmup is not None:
        wu = Trace.of(warmup)
        if wu.rows != tr.rows:
            raise DlrmlabError("warmup must have the same tables (rows) as the trace")
        cache.run(*_stream(wu, addresses, masks, mode, order, k, counted=False))
    stream = _stream(tr, addresses, masks, mode, order, k, counted=True)
    results = []
    for _ in range(n_passes):
        cache.out[:] = 0
        t1 = time.perf_counter()
        cache.run(*stream)
        results.append(_pass_result(cache.out, cfg, pin_ways, masks, since=t0 if not results else t1))
    return results if all_passes else results[-1]


# --- policies: how each dlrmlab variant touches L2 --------------------------------------------------------


@dataclass(frozen=True)
class Policy:
    """How a family of dlrmlab variants touches L2, in the model's terms.

    ``hot_rows``: rows pinned per table (``pin="table"``) or over all tables (``pin="batch"``); ``None``
    means the variant's own default: the artifact's 60,000 per table for ``l2p`` (scaled with the modelled
    L2's size against the H100's), as many as fill half of L2 for ``fast+l2p``. Window policies take the
    rows that fit ``carve_out`` (default the GPU's maximum), split across tables by accesses
    (:func:`split_budget`).
    """

    name: str
    order: str = "table-major"
    tables_at_once: int = 1
    pin: str = "none"
    layout: str = "plain"
    hot_rows: int | None = None
    carve_out: int | None = None
    description: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        _one_of("order", self.order, ORDERS)
        _one_of("pin mode", self.pin, PIN_MODES)
        _one_of("layout", self.layout, LAYOUTS)
        _int("tables_at_once", self.tables_at_once, minimum=1)
        if self.hot_rows is not None:
            _int("hot_rows", self.hot_rows, minimum=1)
        if self.carve_out is not None:
            _int("carve_out", self.carve_out)

    def with_(self, **changes: Any) -> Policy:
        return replace(self, **changes)


#: The artifact's hot set for L2P: the 60,000 most frequent rows of each table.
L2P_HOT_ROWS = 60_000

POLICIES: dict[str, Policy] = {
    p.name: p
    for p in (
        Policy("per-table", description="one launch per table, tables one after another"),
        Policy("per-table+l2p", pin="table",
               description="a pin kernel (evict_last) over each table's 60K hottest rows before its launch"),
        Policy("per-table+window", pin="window", layout="ranked",
               description="rows ranked by frequency, a persisting window per table over its hottest rows"),
        Policy("fast", order="interleaved", tables_at_once=2,
               description="one launch for all tables; the bags in flight slide over the tables, about two at a time"),
        Policy("fast+l2p", order="interleaved", tables_at_once=2, pin="batch",
               description="the hottest rows of all tables (half of L2) pinned before each batch"),
        Policy("fast+window", order="interleaved", tables_at_once=2, pin="window", layout="split-hot",
               description="every table's hottest rows packed together behind one persisting window"),
    )
}


def policy_for(variant: str | Policy) -> Policy:
    """The model policy of a dlrmlab variant name (its row's ``l2_policy``: ``"fast_graph+window"`` ->
    ``fast+window``) or of a policy name."""
    if isinstance(variant, Policy):
        return variant
    name = str(variant)
    if name in POLICIES:
        return POLICIES[name]
    row = VARIANTS.get(name)
    if row is not None and row.l2_policy is not None:
        return POLICIES[row.l2_policy]
    known = sorted({*POLICIES, *(n for n, v in VARIANTS.items() if v.l2_policy is not None)})
    raise DlrmlabError(f"no L2 model policy for variant {name!r}; valid: {', '.join(known)}")


def predict(
    trace: Any,
    policy: str | Policy = "per-table",
    row_bytes: int = 512,
    config: L2Config | None = None,
    *,
    warmup: Any = None,
    counts_from: Any = None,
    passes: int = 1,
    all_passes: bool = False,
) -> L2Result | list[L2Result]:
    """Simulate ``trace`` the way ``policy`` (or a dlrmlab variant name) touches L2.

    Hot sets and rankings come from the access counts of ``counts_from`` (default: ``warmup`` then
    ``trace``), as the variants rank the rows of all the batches they hold. ``passes`` and ``all_passes``
    as in :func:`simulate`.
    """
    pol = policy_for(policy)
    cfg = config or L2Config()
    rb = _int("row_bytes", row_bytes, minimum=1)
    tr = Trace.of(trace)
    wu = None if warmup is None else Trace.of(warmup)
    ref = Trace.of(counts_from) if counts_from is not None else (tr if wu is None else wu.then(tr))
    if ref.rows != tr.rows:
        raise DlrmlabError("counts_from must have the same tables (rows) as the trace")
    carve = cfg.persisting_max if pol.carve_out is None else pol.carve_out
    pinned, hot_per_table = None, None
    kw: dict[str, Any] = {"order": pol.order, "tables_at_once": pol.tables_at_once}
    if pol.pin != "none":
        counts = [ref.counts(t) for t in range(ref.n_tables)]
        if pol.pin == "table":
            k = pol.hot_rows or max(1, round(L2P_HOT_ROWS * cfg.size / H100_L2_BYTES))
            pinned = [_top(c, k) for c in counts]
        elif pol.pin == "batch":
            k = pol.hot_rows or (cfg.size // 2) // rb
            pinned = _top_global(counts, k)
        else:
            hot_per_table = split_budget(counts, rb, carve)
            pinned = [_top(c, h) for c, h in zip(counts, hot_per_table, strict=True)]
        kw.update(pinned=pinned, carve_out=carve, pin=pol.pin)
    addresses = layout(ref, rb, pol.layout, hot_per_table)
    return simulate(tr, rb, cfg, addresses=addresses, warmup=wu, passes=passes, all_passes=all_passes, **kw)


def _top(counts: np.ndarray, k: int) -> np.ndarray:
    order = np.argsort(-counts, kind="stable")[: int(k)]
    return order[counts[order] > 0]


def _top_global(counts: Sequence[np.ndarray], k: int) -> list[np.ndarray]:
    flat = np.concatenate(counts)
    top = _top(flat, k)
    starts = np.concatenate([[0], np.cumsum([c.size for c in counts])])
    return [top[(top >= starts[t]) & (top < starts[t + 1])] - starts[t] for t in range(len(counts))]


# --- sweeps -----------------------------------------------------------------------------------------------


def _result_row(res: L2Result) -> dict:
    d = res.as_dict()
    keep = ("lookups", "sector_accesses", "sector_hits", "sector_misses", "hit_rate", "line_hit_rate",
            "pinned_rows", "pinned_share", "carve_out_bytes", "dram_bytes", "prefill_dram_bytes", "seconds")
    return {k: d[k] for k in keep}


def _warm_split(tr: Trace, wb: int, what: str) -> tuple[Trace | None, Trace]:
    """(the first ``wb`` batches, which warm the cache, or None; the batches counted after them)."""
    if wb >= tr.n_batches:
        raise DlrmlabError(f"warmup_batches={wb} leaves no batch of {what} ({tr.n_batches} batches) to count")
    return (tr.select(range(wb)) if wb else None), tr.select(range(wb, tr.n_batches))


def hit_rate_table(
    traces: Mapping[str, Any],
    variants: Sequence[str | Policy] = ("per-table", "fast"),
    row_bytes: int = 512,
    config: L2Config | None = None,
    *,
    warmup_batches: int = 0,
) -> pd.DataFrame:
    """Predicted hit rates, one row per (dataset, policy): a tidy DataFrame.

    ``traces``: dataset name -> trace (anything :meth:`Trace.of` takes). ``variants``: policy names,
    dlrmlab variant names or :class:`Policy` objects. With ``warmup_batches`` > 0 the first batches of
    each trace warm the cache and only the rest are counted (a serving loop in steady state).
    """
    if not traces:
        raise DlrmlabError("traces is empty: give at least one dataset")
    cfg = config or L2Config()
    wb = _int("warmup_batches", warmup_batches)
    rows = []
    for name, obj in traces.items():
        tr = Trace.of(obj)
        wu, measured = _warm_split(tr, wb, repr(name))
        for v in variants:
            pol = policy_for(v)
            res = predict(measured, pol, row_bytes, cfg, warmup=wu, counts_from=tr)
            rows.append({"dataset": str(name), "policy": pol.name, "variant": v if isinstance(v, str) else pol.name,
                         "order": pol.order, "tables_at_once": pol.tables_at_once if pol.order != "table-major" else 1,
                         "pin": pol.pin, "batches": measured.n_batches, "warmup_batches": wb, **_result_row(res)})
    return pd.DataFrame(rows)


def carve_out_sweep(
    trace: Any,
    carve_outs: Sequence[int],
    variants: Sequence[str | Policy] = ("per-table+window",),
    row_bytes: int = 512,
    config: L2Config | None = None,
    *,
    warmup_batches: int = 0,
) -> pd.DataFrame:
    """Hit rate against the persisting carve-out (bytes), one row per (policy, carve-out); the first
    ``warmup_batches`` batches warm the cache and are not counted."""
    cfg = config or L2Config()
    tr = Trace.of(trace)
    wu, measured = _warm_split(tr, _int("warmup_batches", warmup_batches), "the trace")
    rows = []
    for v in variants:
        pol = policy_for(v)
        for c in carve_outs:
            res = predict(measured, pol.with_(carve_out=_int("carve_out", c)), row_bytes, cfg, warmup=wu,
                          counts_from=tr)
            rows.append({"dataset": tr.name, "policy": pol.name, "carve_out": int(c), **_result_row(res)})
    return pd.DataFrame(rows)


def footprint_table(traces: Mapping[str, Any], row_bytes: int = 512, config: L2Config | None = None) -> pd.DataFrame:
    """What each dataset asks of L2, per batch: lookups and distinct rows per table, the bytes those rows
    take against the L2's size, and ``repeat_share`` (1 - distinct / lookups): the hit rate of an infinite
    cache that starts the batch cold -- the most any policy can get without data from earlier batches."""
    cfg = config or L2Config()
    rb = _int("row_bytes", row_bytes, minimum=1)
    rows = []
    for name, obj in traces.items():
        tr = Trace.of(obj)
        look = [a.size for batch in tr.ids for a in batch if a.size]
        dist = [np.unique(a).size for batch in tr.ids for a in batch if a.size]
        per_table = float(np.mean(dist)) if dist else 0.0
        batch_bytes = sum(dist) * rb / tr.n_batches
        rows.append({
            "dataset": str(name), "tables": tr.n_tables, "lookups_per_table": float(np.mean(look)) if look else 0.0,
            "distinct_rows_per_table": per_table, "table_footprint_bytes": per_table * rb,
            "batch_footprint_bytes": batch_bytes, "l2_bytes": cfg.size,
            "table_footprint_over_l2": per_table * rb / cfg.size,
            "repeat_share": 1 - sum(dist) / sum(look) if look else math.nan,
        })
    return pd.DataFrame(rows)


# --- against Nsight Compute -------------------------------------------------------------------------------

#: How the committed ncu profiles were taken (results/h100/README.md, dlrmlab.bench.ncu): ``--launch-skip 2
#: --launch-count 1`` over a run of 4 distinct batches, L2 not flushed (``--cache-control none``).
NCU_LAUNCH_SKIP = 2
NCU_BATCHES = 4
WARM_STATES = ("preceding launches", "replayed launch")


def ncu_trace(policy: str | Policy, full: Trace, launch_skip: int = NCU_LAUNCH_SKIP) -> tuple[Trace, Trace | None]:
    """(measured, warmup) for the launch ncu profiled: per-table policies launch once per table, so
    launch ``launch_skip`` is batch 0's table ``launch_skip``; the fast kernel launches once per batch, so it is
    batch ``launch_skip`` after the batches before it."""
    pol = policy_for(policy)
    if pol.order == "table-major":
        b, t = divmod(launch_skip, full.n_tables)
        measured = full.select([b], [t])
        before = [full.select([bb]) for bb in range(b)] + ([full.select([b], range(t))] if t else [])
    else:
        measured = full.select([launch_skip])
        before = [full.select([bb]) for bb in range(launch_skip)]
    warm = None
    for x in before:
        warm = x if warm is None else warm.then(x)
    return measured, warm


def ncu_predictions(
    datasets: Sequence[str],
    variants: Sequence[str],
    preset: str = "paper",
    seed: int = 0,
    config: L2Config | None = None,
    n_batches: int = NCU_BATCHES,
    launch_skip: int = NCU_LAUNCH_SKIP,
    traces: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """Model predictions for the launches ``dlrmlab profile`` measured, in two warm states of L2:

    * ``preceding launches``: L2 as the launches before the measured one left it (a serving loop);
    * ``replayed launch``: ncu collects its metrics over several replays of the same launch and, with
      ``--cache-control none``, a replay finds L2 as the previous replay of the *same* launch left it
      (modelled as a second pass over the launch; a pin kernel before it is replayed too).

    The workload is ``Workload(preset, dataset, seed).batches(n_batches)``, as ``ncu_target`` draws it;
    ``traces`` may give it instead, per dataset. One row per (variant, dataset, warm state).
    """
    stage = make_preset(preset)
    cfg = config or L2Config()
    rb = stage.embedding_dim * stage.element_bytes
    rows = []
    for ds in datasets:
        given = (traces or {}).get(ds)
        full = Trace.of(given) if given is not None else Trace.from_workload(stage, ds, seed, n_batches)
        by_policy: dict[str, list[L2Result]] = {}
        for v in variants:
            pol = policy_for(v)
            if pol.name not in by_policy:
                measured, before = ncu_trace(pol, full, launch_skip)
                by_policy[pol.name] = predict(measured, pol, rb, cfg, warmup=before, counts_from=full, passes=2,
                                              all_passes=True)
            for state, res in zip(WARM_STATES, by_policy[pol.name], strict=True):
                rows.append({"variant": v, "dataset": ds, "policy": pol.name, "warm_state": state,
                             "predicted": res.hit_rate, **_result_row(res)})
    return pd.DataFrame(rows)


def compare_with_ncu(model_df: pd.DataFrame, ncu_df: pd.DataFrame) -> pd.DataFrame:
    """Predicted hit rates beside ncu's measured L2 hit rates, per (variant, dataset[, warm state]).

    ``model_df``: :func:`ncu_predictions` (joined on variant and dataset) or :func:`hit_rate_table`
    (joined on the policy of each profiled variant, and dataset). ``ncu_df``: rows of
    ``dlrmlab profile`` (``results/<gpu>/profile.csv``; columns ``variant``, ``dataset``, ``l2_hit_rate``
    = ``lts__t_sector_hit_rate``, ``l1_hit_rate``). Output columns: ``predicted``, ``measured`` (L2),
    ``difference`` (predicted - measured), ``measured_l1``, ``measured_onchip`` (L1 + L2: 1 - (1 - l1)(1 - l2),
    what a cache with no L1 in front would see if L1 hits were L2 hits) and ``difference_onchip``.
    """
    need_ncu = {"variant", "dataset", "l2_hit_rate"}
    if missing := need_ncu - set(ncu_df.columns):
        raise DlrmlabError(f"ncu_df lacks column(s) {', '.join(sorted(missing))} (a dlrmlab profile CSV has them)")
    if "dataset" not in model_df.columns or not ({"variant", "policy"} & set(model_df.columns)):
        raise DlrmlabError("model_df needs a dataset column and a variant or policy column")
    pred_col = "predicted" if "predicted" in model_df.columns else "hit_rate"
    if pred_col not in model_df.columns:
        raise DlrmlabError("model_df needs a predicted (or hit_rate) column")
    keep = [c for c in ("variant", "dataset", "kernel", "l2_hit_rate", "l1_hit_rate") if c in ncu_df.columns]
    ncu = ncu_df[keep].rename(columns={"l2_hit_rate": "measured", "l1_hit_rate": "measured_l1"}).copy()
    known = [v for v in ncu["variant"] if _has_policy(v)]
    ncu = ncu[ncu["variant"].isin(known)].copy()
    ncu["policy"] = [policy_for(v).name for v in ncu["variant"]]
    model = model_df.rename(columns={pred_col: "predicted"})
    extra = [c for c in ("warm_state", "hit_rate", "line_hit_rate", "pinned_share", "dram_bytes") if c in model]
    extra = [c for c in extra if c != "predicted"]
    by_policy = "policy" in model.columns and ("variant" not in model.columns
                                                or (model["variant"] == model["policy"]).all())
    on_variant = not by_policy and model["variant"].isin(ncu["variant"]).any()
    if on_variant:
        out = ncu.merge(model[["variant", "dataset", "predicted", *extra]], on=["variant", "dataset"], how="inner")
    else:
        m = model[["policy", "dataset", "predicted", *extra]].drop_duplicates(["policy", "dataset", *(
            ["warm_state"] if "warm_state" in extra else [])])
        out = ncu.merge(m, on=["policy", "dataset"], how="inner")
    out["difference"] = out["predicted"] - out["measured"]
    if "measured_l1" not in out:
        out["measured_l1"] = np.nan
    out["measured_onchip"] = 1 - (1 - out["measured_l1"]) * (1 - out["measured"])
    out["difference_onchip"] = out["predicted"] - out["measured_onchip"]
    cols = ["variant", "dataset", "policy", *(["warm_state"] if "warm_state" in out else []), "predicted",
            "measured", "difference", "measured_l1", "measured_onchip", "difference_onchip"]
    sort = [c for c in ("dataset", "variant", "warm_state") if c in out]
    return out[cols].sort_values(sort, kind="stable").reset_index(drop=True)


def _has_policy(variant: str) -> bool:
    return variant in POLICIES or getattr(VARIANTS.get(variant), "l2_policy", None) is not None


# --- datasets for the teaching notebook -------------------------------------------------------------------

def teaching_datasets(data_dir: str | os.PathLike | None = None) -> tuple[dict[str, str], str]:
    """Datasets for the L2 notebook: the real low/medium-reuse traces when found (in ``data_dir``, else
    ``$DLRMLAB_DATA_DIR``), else the synthetic ``low``/``medium`` calibrated to them; plus ``random``.

    Returns ``({label: dataset spec}, note)``; the note says which were used.
    """
    d = data_dir if data_dir is not None else os.environ.get(DATA_DIR_ENV)
    found: dict[str, Path] = {}
    if d:
        found = {level: Path(d) / f.file for level, f in PAPER_TRACES.items() if (Path(d) / f.file).is_file()}
    out: dict[str, str] = {}
    for level in PAPER_TRACES:
        out[f"{level} (trace)" if level in found else level] = f"trace:{found[level]}" if level in found else level
    out["random"] = "random"
    if len(found) == len(PAPER_TRACES):
        note = f"using the artifact's real traces from {d}"
    elif found:
        note = (f"found only {', '.join(found)} in {d}; the others are the synthetic datasets calibrated to the "
                "traces' top-60K coverage")
    else:
        note = ("real traces not found (set DLRMLAB_DATA_DIR to the folder holding reuse_low_500K.txt and "
                "reuse_medium_500K.txt): using the synthetic low/medium datasets calibrated to them")
    return out, note


def _resolve_dataset(ds: str, data_dir: str | os.PathLike | None) -> str | None:
    """``trace:PATH`` with PATH found as given or (by file name) in ``data_dir`` / ``$DLRMLAB_DATA_DIR``, and
    the artifact's named traces where the datasets module finds them; None when the file is nowhere. Other
    datasets are returned unchanged."""
    if not ds.startswith("trace:"):
        return ds
    if ds[6:] in PAPER_TRACES:  # trace:low, trace:medium: found (or downloaded) by the datasets module, or nowhere
        try:
            PAPER_TRACES[ds[6:]].obtain()
        except DlrmlabError:
            return None
        return ds
    p = Path(ds[6:])
    if p.is_file():
        return ds
    d = data_dir if data_dir is not None else os.environ.get(DATA_DIR_ENV)
    if d and (Path(d) / p.name).is_file():
        return f"trace:{Path(d) / p.name}"
    return None


def ncu_comparison(
    profile_csv: str | os.PathLike,
    out: str | os.PathLike | None = None,
    datasets: Sequence[str] | None = None,
    config: L2Config | None = None,
    data_dir: str | os.PathLike | None = None,
) -> pd.DataFrame:
    """Model vs Nsight Compute for every profiled (variant, dataset) the model has a policy for.

    Reads ``dlrmlab profile`` rows (``results/<gpu>/profile.csv``), rebuilds each workload from the rows'
    preset and seed, predicts the profiled launch (:func:`ncu_predictions`) and joins
    (:func:`compare_with_ncu`). ``trace:PATH`` datasets whose file is not at PATH are looked up by name
    in ``data_dir`` or ``$DLRMLAB_DATA_DIR`` and skipped when absent. Writes ``out`` (CSV) when given.
    """
    ncu = pd.read_csv(profile_csv)
    if missing := {"variant", "dataset", "l2_hit_rate", "preset", "seed"} - set(ncu.columns):
        raise DlrmlabError(f"{profile_csv} lacks column(s) {', '.join(sorted(missing))}")
    ncu = ncu[[_has_policy(v) for v in ncu["variant"]]]
    if datasets is not None:
        ncu = ncu[ncu["dataset"].isin(list(datasets))]
    parts = []
    for (pre, seed, ds), grp in ncu.groupby(["preset", "seed", "dataset"], sort=False):
        where = _resolve_dataset(str(ds), data_dir)
        if where is None:
            continue
        traces = None
        if where != ds:  # a trace file found elsewhere: same workload, ids read from there
            traces = {ds: Trace.from_workload(str(pre), where, int(seed), NCU_BATCHES)}
        model = ncu_predictions([str(ds)], sorted(set(grp["variant"])), str(pre), int(seed), config, traces=traces)
        parts.append(compare_with_ncu(model, grp))
    if not parts:
        raise DlrmlabError(f"nothing to compare: no profiled variant with a model policy in {profile_csv}")
    df = pd.concat(parts, ignore_index=True)
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        df.to_csv(out, index=False)
    return df


def teaching_setup(preset: str | None = None) -> tuple[Any, L2Config, str]:
    """(stage, L2 geometry, note) for the L2 notebook.

    ``paper``: the paper's 12 tables and the H100's L2. ``tiny`` (the default without a GPU): everything at
    a quarter of the scale -- tables of 125,000 rows, batch 512, a quarter of the L2 and of the carve-out --
    so lookups per row, footprint per L2 byte and carve-out per table stay the paper's (the skew of the
    synthetic datasets over fewer rows is not quite the same). ``None``: ``tiny`` without a CUDA GPU,
    ``paper`` with one.
    """
    if preset is None:
        preset = backend.default_preset()
    full = L2Config()
    if preset == "paper":
        return make_preset("paper"), full, "paper: 12 tables of 500,000 x 128 fp32 rows, the H100's 50 MiB L2"
    if preset == "tiny":
        stage = make_preset("paper", rows=125_000, batch_size=512)
        cfg = full.with_(size=full.size // 4, persisting_max=full.persisting_max // 4)
        return stage, cfg, (
            "tiny: the paper's workload and the H100's L2 at a quarter of the scale -- 12 tables of 125,000 x 128 "
            f"fp32 rows, batch 512 x 150, L2 {cfg.size / 2**20:.1f} MiB with a carve-out of up to "
            f"{cfg.persisting_max / 1e6:.1f} MB -- so every ratio of data to cache is the paper's, in a quarter of "
            "the time (trace ids above 125,000 are skipped). PRESET='paper' runs the full size."
        )
    raise DlrmlabError(f"unknown preset {preset!r} for the L2 notebook; valid: tiny, paper")
