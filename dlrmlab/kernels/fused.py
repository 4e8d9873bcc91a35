"""The fast path's kernel: every table of a batch in one launch, at the memory roofline.

One skeleton, built from named device functions chosen at compile time (as cuEmbed's IndexLoader /
Addresser / Combiner templates):

* **work split** — bags of all tables (table-major, the jagged layout) are cut into tiles of
  ``bags_per_block`` bags, one block per tile (grid-stride beyond the grid limit). ``split`` groups of
  ``lanes`` threads share one bag, each summing a contiguous part of its ids; the parts are added in shared
  memory at the end. Splitting keeps as many loads in flight with fewer bags live at once: a repeated row
  comes back sooner, while L2 still holds it.
* **stage ids** — ``ids="shared"``: per tile the block stages ``chunk`` ids per bag in shared memory,
  already turned into row offsets by the **addresser** (and their weights, when rows are scaled); every
  thread runs as many stages as the tile's longest bag needs, so the barriers are uniform.
  ``ids="registers"``: each lane keeps the ids of the next ``unroll`` rows in registers, loaded while the
  current rows' loads are in flight: no barrier, and index loads off the critical path.
* **addresser** — (table, id) → first element of the row in the packed buffer: ``plain`` rows, or
  ``split-hot`` rows (frequency-ranked tables whose hottest rows sit together at the front of the buffer,
  behind one L2 window).
* **load a row slice** — each lane loads its ``vectors`` 16-byte vectors of the row (4 fp32 or 8
  fp16/bf16 values), or scalars when the width is not a multiple of the vector; ``unroll`` rows (the rows
  in flight) are loaded before any is used (memory-level parallelism). A bag's tail, fewer rows, is one
  such block too: its missing slots re-read a row and add nothing (one memory latency, not one per row).
  Quantized rows (int8, int4, fp8; :mod:`dlrmlab.kernels.quantized`) stay packed in flight, dequantized
  when added.
* **bounds check** (``checked``: every ``bounds_check`` mode but ``none``) — an id outside its table is not
  read: it counts, the first bad position is recorded, and the row adds nothing; the host then acts on it
  (:class:`dlrmlab.config.BoundsCheck`).
* **combine** — add the rows (scaled by their factor when weighted or padded); **write** — the mean's
  division and the store of the lane's columns.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from enum import StrEnum
from functools import lru_cache

from numba import float32, int64, uint32

from dlrmlab import backend
from dlrmlab.backend import cuda
from dlrmlab.config import BoundsCheck, Combine, positive_int, table_dtype
from dlrmlab.errors import DlrmlabError
from dlrmlab.kernels import quantized
from dlrmlab.kernels.elements import check_load_hint, load16_hinted, scalar_loader, unpack_hi, unpack_lo
from dlrmlab.quant import is_quantized, row_format

WARP = 32
MAX_ROWS_IN_FLIGHT = 16


class IdStaging(StrEnum):
    """Where a bag's ids wait before their rows are loaded."""

    #: staged per chunk in shared memory, already turned into row offsets
    SHARED = "shared"
    #: the next ``unroll`` ids prefetched into registers, no barrier
    REGISTERS = "registers"


@dataclass(frozen=True)
class FastConfig:
    """Compile-time configuration of the fast kernel (one compiled kernel per distinct value)."""

    dim: int
    #: table storage: a float dtype (``config.TABLE_DTYPES``) or a quantized row format (``quant.FORMATS``)
    dtype: str = "float32"
    combine: Combine = field(default_factory=Combine)
    vector: bool = True
    #: rows whose loads are issued before any of them is accumulated
    unroll: int = 8
    bags_per_block: int = 4
    #: groups of lanes that share one bag
    split: int = 1
    #: ids per bag staged in shared memory at a time
    chunk: int = 64
    max_registers: int | None = None
    split_hot: bool = False
    #: where ids wait before their rows are loaded (:class:`IdStaging`; given as its string)
    ids: IdStaging = IdStaging.SHARED
    #: what to do with an id outside its table (:class:`BoundsCheck`; given as its string, or a bool)
    bounds_check: BoundsCheck = BoundsCheck.NONE
    #: PTX cache qualifiers of the 16-byte row loads (``elements.LOAD_HINTS``)
    load_hint: str = ""

    def __post_init__(self) -> None:
        positive_int("dim", self.dim)
        if self.quantized:
            row_format(self.dtype).check_dim(self.dim)
        else:
            table_dtype(self.dtype)
        positive_int("unroll (rows in flight)", self.unroll, 1, MAX_ROWS_IN_FLIGHT)
        positive_int("chunk", self.chunk)
        if self.vector and self.dim % self.vec:
            raise DlrmlabError(
                f"vector loads need dim to be a multiple of {self.vec} for {self.dtype}; use vector=False"
            )
        positive_int("split", self.split, 1, 32)
        if self.ids not in tuple(IdStaging):
            raise DlrmlabError(f"ids must be {' or '.join(repr(v.value) for v in IdStaging)}, got {self.ids!r}")
        object.__setattr__(self, "ids", IdStaging(self.ids))  # frozen: the parsed value replaces the string
        object.__setattr__(self, "bounds_check", BoundsCheck.parse(self.bounds_check))
        positive_int("bags_per_block", self.bags_per_block, 1, 1024 // (self.lanes * self.split))
        check_load_hint(self.load_hint)

    @property
    def checked(self) -> bool:
        """The kernel checks every id on the device (the one compile-time flag of every checking mode)."""
        return self.bounds_check.checks

    @property
    def quantized(self) -> bool:
        return is_quantized(self.dtype)

    @property
    def vec(self) -> int:
        """Elements per load: a 16-byte vector, or one element (one byte of codes for quantized rows)."""
        if self.quantized:
            return (16 if self.vector else 1) * row_format(self.dtype).values_per_byte()
        return table_dtype(self.dtype).vector if self.vector else 1

    @property
    def stride(self) -> int:
        """Elements of the packed buffer from one row to the next (bytes, for quantized rows: padded to 16)."""
        return row_format(self.dtype).row_stride(self.dim) if self.quantized else self.dim

    @property
    def held(self) -> int:
        """Values a lane holds per row in flight (fp32 values; uint32 words of codes for quantized rows)."""
        return quantized.held_words(self) if self.quantized else self.vectors * self.vec

    @property
    def lanes(self) -> int:
        """Threads per bag: enough to cover the row with one load each, at most a warp, a power of 2."""
        need = -(-self.dim // self.vec)
        lanes = 1
        while lanes < min(need, WARP):
            lanes *= 2
        return lanes

    @property
    def vectors(self) -> int:
        """Loads per lane per row."""
        return -(-self.dim // (self.vec * self.lanes))

    @property
    def accumulators(self) -> int:
        """fp32 sums a lane keeps per bag: one per value it covers, plus a bias slot for rows that have one."""
        bias = self.quantized and quantized.bias_slot(self)
        return self.vectors * self.vec + int(bias)

    @property
    def threads(self) -> int:
        return self.lanes * self.bags_per_block * self.split

    def params(self) -> dict:
        """The configuration as flat result-row parameters."""
        return {
            "dim": self.dim, "dtype": self.dtype, **self.combine.params(), "vector": self.vector,
            "unroll": self.unroll, "bags_per_block": self.bags_per_block, "split": self.split, "chunk": self.chunk,
            "max_registers": self.max_registers, "split_hot": self.split_hot, "ids": self.ids.value,
            "bounds_check": self.bounds_check.value, "load_hint": self.load_hint, "lanes": self.lanes,
            "vectors": self.vectors, "threads": self.threads,
        }  # fmt: skip


#: Fields the stage's shape and the table layout decide; every other field of :class:`FastConfig` is a knob.
SHAPE_FIELDS = frozenset({"dim", "dtype", "combine", "split_hot"})
#: The fast kernel's knobs: :class:`FastConfig`'s fields but the shape's.
KNOBS: frozenset[str] = frozenset(f.name for f in fields(FastConfig)) - SHAPE_FIELDS


# --- policies: small device functions, chosen by the configuration -------------------------------------


def _table_of_bag():
    @cuda.jit(device=True, inline=True)
    def table_of_bag(table_offsets, bag):
        # one entry per table: a linear scan is cheaper than a search for tens of tables
        t = 0
        while t + 2 < table_offsets.shape[0] and table_offsets[t + 1] <= bag:
            t += 1
        return t

    return table_of_bag


def _addresser(cfg: FastConfig):
    """``row_offset(idx, base, hot_rows, hot_base)``: first element of row ``idx`` of a table."""
    DIM = cfg.stride
    if cfg.split_hot:

        @cuda.jit(device=True, inline=True)
        def split_hot_row(idx, base, hot_rows, hot_base):
            return hot_base + idx * DIM if idx < hot_rows else base + idx * DIM

        return split_hot_row

    @cuda.jit(device=True, inline=True)
    def plain_row(idx, base, hot_rows, hot_base):
        return base + idx * DIM

    return plain_row


def _checker(cfg: FastConfig):
    """``in_bounds(idx, t, e, table_rows, errors, record) -> bool``: with ``checked``, a bad id is counted
    (``errors[0]``) and its first position kept (``errors[1]``) by the one thread that ``record``s it;
    without, always True (compiled away)."""
    CHECKED = cfg.checked

    @cuda.jit(device=True, inline=True)
    def in_bounds(idx, t, e, table_rows, errors, record):
        if CHECKED and (idx < 0 or idx >= table_rows[t]):
            if record:
                cuda.atomic.add(errors, 0, 1)
                cuda.atomic.min(errors, 1, e)
            return False
        return True

    return in_bounds


def _factor(cfg: FastConfig):
    """``factor(psw, e, idx, padding_idx)``: what row ``e`` of the bag is multiplied by."""
    WEIGHTED, PADDED = cfg.combine.weighted, cfg.combine.padded

    @cuda.jit(device=True, inline=True)
    def factor(psw, e, idx, padding_idx):
        f = psw[e] if WEIGHTED else float32(1.0)
        if PADDED and idx == padding_idx:
            f = float32(0.0)
        return f

    return factor


def _slice_loader(cfg: FastConfig):
    """``load_row_slice(packed, row, vals, slot)``: this lane's part of a row into ``vals[slot, :]``."""
    if cfg.quantized:
        return quantized.slice_loader(cfg)
    DIM, VEC, LANES, SLICES = cfg.dim, cfg.vec, cfg.lanes, cfg.vectors
    # The lanes cover the row exactly: no bounds test, so the loads are not predicated.
    EXACT = LANES * SLICES * VEC == DIM
    VECTOR, HALF = cfg.vector, cfg.dtype != "float32"
    load, load16 = scalar_loader(cfg.dtype), load16_hinted(cfg.load_hint)
    lo = unpack_lo("bfloat16" if cfg.dtype == "float32" else cfg.dtype)
    hi = unpack_hi("bfloat16" if cfg.dtype == "float32" else cfg.dtype)

    @cuda.jit(device=True, inline=True)
    def load_row_slice(packed, row, vals, slot):
        lane = cuda.threadIdx.x % LANES
        for v in range(SLICES):
            col = (v * LANES + lane) * VEC
            if EXACT or col < DIM:
                if not VECTOR:
                    vals[slot, v] = load(packed, row + col)
                elif HALF:
                    x = load16(packed, row + col)
                    for k in range(4):
                        vals[slot, v * VEC + 2 * k] = lo(uint32(x[k]))
                        vals[slot, v * VEC + 2 * k + 1] = hi(uint32(x[k]))
                else:
                    x = load16(packed, row + col)
                    for k in range(4):
                        vals[slot, v * VEC + k] = x[k]
            else:  # lanes past the row's end: keep their (never written) accumulators finite
                for q in range(VEC):
                    vals[slot, v * VEC + q] = 0.0

    return load_row_slice


def _combiner(cfg: FastConfig):
    """``add_row(acc, vals, slot, f, present) -> counted``: accumulate one loaded row (scaled when rows have
    factors); a tail's padding slot (``present`` False) adds nothing, whatever the row it re-read holds."""
    if cfg.quantized:
        return quantized.combiner(cfg)
    ACC, FACTORS = cfg.vectors * cfg.vec, cfg.combine.factors or cfg.checked

    @cuda.jit(device=True, inline=True)
    def add_row(acc, vals, slot, f, present):
        if present:
            for a in range(ACC):
                acc[a] += vals[slot, a] * f if FACTORS else vals[slot, a]
        return 1 if present and f != 0 else 0

    return add_row


def _writer(cfg: FastConfig):
    """``write_bag(out, bag, acc, rows, nonzero)``: mean's division, then the lane's columns."""
    DIM, VEC, LANES, SLICES = cfg.dim, cfg.vec, cfg.lanes, cfg.vectors
    MEAN, BIAS, ACC = cfg.combine.mean, cfg.accumulators > cfg.vectors * cfg.vec, cfg.vectors * cfg.vec
    COUNT_NONZERO = cfg.combine.padded and not cfg.combine.weighted  # a mean skips padding rows

    @cuda.jit(device=True, inline=True)
    def write_bag(out, bag, acc, rows, nonzero):
        scale = float32(1.0)
        if MEAN:
            n = nonzero if COUNT_NONZERO else rows
            if n > 0:
                scale = float32(1.0) / float32(n)
        lane = cuda.threadIdx.x % LANES
        for v in range(SLICES):
            for q in range(VEC):
                col = (v * LANES + lane) * VEC + q
                if col < DIM:
                    out[bag, col] = ((acc[v * VEC + q] + acc[ACC]) if BIAS else acc[v * VEC + q]) * scale

    return write_bag


def _part_from_registers(cfg: FastConfig):
    """``sum_part(...) -> nonzero``: add rows ``begin..end`` of a bag into ``acc``, the next ``unroll`` ids
    loaded into registers while the current rows' loads are in flight (full blocks unpredicated)."""
    IN_FLIGHT, FACTORS, LANES = cfg.unroll, cfg.combine.factors or cfg.checked, cfg.lanes
    row_offset, factor, in_bounds = _addresser(cfg), _factor(cfg), _checker(cfg)
    load_row_slice, add_row = _slice_loader(cfg), _combiner(cfg)

    @cuda.jit(device=True, inline=True)
    def sum_part(packed, indices, psw, padding_idx, begin, end, base, hot_n, hot_b, acc, vals, ids, fs, t,
                 table_rows, errors):
        nonzero = 0
        lead = cuda.threadIdx.x % LANES == 0  # every lane reads every id; one of them reports a bad one
        for u in range(IN_FLIGHT):
            ids[u] = int64(indices[begin + u]) if begin + u < end else int64(0)
            if begin + u < end and not in_bounds(ids[u], t, begin + u, table_rows, errors, lead):
                ids[u] = int64(-1)  # a bad id: row 0 is read instead, and weighs nothing
        k = begin
        while k + IN_FLIGHT <= end:
            for u in range(IN_FLIGHT):  # this block's rows: all loads issued before any is used
                load_row_slice(packed, row_offset(max(ids[u], int64(0)), base, hot_n, hot_b), vals, u)
                if FACTORS:
                    fs[u] = factor(psw, k + u, ids[u], padding_idx) if ids[u] >= 0 else float32(0.0)
            for u in range(IN_FLIGHT):  # the next block's ids, in flight with the rows
                e = k + IN_FLIGHT + u
                ids[u] = int64(indices[e]) if e < end else int64(0)
                if e < end and not in_bounds(ids[u], t, e, table_rows, errors, lead):
                    ids[u] = int64(-1)
            for u in range(IN_FLIGHT):
                nonzero += add_row(acc, vals, u, fs[u] if FACTORS else float32(1.0), True)
            k += IN_FLIGHT
        if k < end:  # the tail, fewer rows than a block: a full block's loads, rows past the end (id 0) unused
            for u in range(IN_FLIGHT):
                load_row_slice(packed, row_offset(max(ids[u], int64(0)), base, hot_n, hot_b), vals, u)
            for u in range(IN_FLIGHT):
                f = float32(0.0) if ids[u] < 0 else (factor(psw, min(k + u, end - 1), ids[u], padding_idx)
                                                      if FACTORS else float32(1.0))
                nonzero += add_row(acc, vals, u, f, k + u < end)
        return nonzero

    return sum_part


# --- the skeleton --------------------------------------------------------------------------------------


@lru_cache(maxsize=256)
def build(cfg: FastConfig):
    """Compile (at first launch) the fast kernel for ``cfg``."""
    LANES, BAGS, IDS, SPLIT = cfg.lanes, cfg.bags_per_block, cfg.chunk, cfg.split
    GROUPS, IN_FLIGHT, ACC = cfg.bags_per_block * cfg.split, cfg.unroll, cfg.accumulators
    HELD, HELD_TYPE = cfg.held, uint32 if cfg.quantized else float32
    FACTORS, IN_REGISTERS = cfg.combine.factors or cfg.checked, cfg.ids is IdStaging.REGISTERS
    table_of_bag, row_offset, factor = _table_of_bag(), _addresser(cfg), _factor(cfg)
    in_bounds = _checker(cfg)
    load_row_slice, add_row, write_bag = _slice_loader(cfg), _combiner(cfg), _writer(cfg)
    sum_part = _part_from_registers(cfg)
    STAGED = (1, 1) if IN_REGISTERS else (GROUPS, IDS)
    STAGED_FACTORS = STAGED if FACTORS else (1, 1)
    PARTS = (GROUPS, LANES, ACC) if SPLIT > 1 else (1, 1, 1)

    @backend.jit(max_registers=cfg.max_registers)
    def embedding_bag_fast(packed, row_base, hot_rows, hot_base, indices, offsets, table_offsets, psw,
                           padding_idx, out, table_rows, errors):
        # shared memory limits occupancy: an array a configuration does not use takes one element
        rows_s = cuda.shared.array(STAGED, int64)  # staged row offsets, per group of the tile
        factors_s = cuda.shared.array(STAGED_FACTORS, float32)
        parts_s = cuda.shared.array(PARTS, float32)  # partial sums of split bags
        counts_s = cuda.shared.array(PARTS[0], int64)
        vals = cuda.local.array((IN_FLIGHT, HELD), HELD_TYPE)  # rows in flight (packed, for quantized rows)
        acc = cuda.local.array(ACC, float32)
        ids = cuda.local.array(IN_FLIGHT, int64)  # prefetched ids (ids="registers")
        fs = cuda.local.array(IN_FLIGHT, float32)
        num_bags = offsets.shape[0] - 1
        g, lane = cuda.threadIdx.x // LANES, cuda.threadIdx.x % LANES
        part = g % SPLIT
        tile = cuda.blockIdx.x
        while tile * BAGS < num_bags:
            bag = tile * BAGS + g // SPLIT
            valid = bag < num_bags
            first = offsets[bag] if valid else int64(0)
            size = offsets[bag + 1] - first if valid else int64(0)
            begin, end = first + size * part // SPLIT, first + size * (part + 1) // SPLIT  # this group's part
            t = table_of_bag(table_offsets, bag)
            base, hot_n, hot_b = row_base[t], hot_rows[t], hot_base[t]
            longest = int64(0)  # the tile's longest part: every thread runs as many stages
            for j in range(0 if IN_REGISTERS else min(BAGS, num_bags - tile * BAGS)):
                longest = max(longest, (offsets[tile * BAGS + j + 1] - offsets[tile * BAGS + j] + SPLIT - 1) // SPLIT)
            for a in range(ACC):
                acc[a] = 0.0
            nonzero = 0
            if IN_REGISTERS:
                nonzero = sum_part(packed, indices, psw, padding_idx, begin, end, base, hot_n, hot_b, acc, vals, ids,
                                   fs, t, table_rows, errors)
            c0 = int64(0)
            while c0 < longest:
                cuda.syncthreads()
                for k in range(lane, IDS, LANES):  # stage ids: row offsets (and factors) of this chunk
                    e = begin + c0 + k
                    if e < end:
                        idx = int64(indices[e])
                        ok = in_bounds(idx, t, e, table_rows, errors, True)
                        rows_s[g, k] = row_offset(idx if ok else int64(0), base, hot_n, hot_b)
                        if FACTORS:
                            factors_s[g, k] = factor(psw, e, idx, padding_idx) if ok else float32(0.0)
                cuda.syncthreads()
                n = max(int64(0), min(int64(IDS), end - begin - c0))
                k = int64(0)
                while k + IN_FLIGHT <= n:  # IN_FLIGHT rows loaded before any is used
                    for u in range(IN_FLIGHT):
                        load_row_slice(packed, rows_s[g, k + u], vals, u)
                    for u in range(IN_FLIGHT):
                        nonzero += add_row(acc, vals, u, factors_s[g, k + u] if FACTORS else float32(1.0), True)
                    k += IN_FLIGHT
                if k < n:  # the chunk's tail, fewer rows: a full block of unpredicated loads, the slots past
                    for u in range(IN_FLIGHT):  # the end re-reading the last row (in flight already), unused
                        load_row_slice(packed, rows_s[g, min(k + u, n - 1)], vals, u)
                    for u in range(IN_FLIGHT):
                        f = factors_s[g, min(k + u, n - 1)] if FACTORS else float32(1.0)
                        nonzero += add_row(acc, vals, u, f, k + u < n)
                c0 += IDS
            if SPLIT > 1:  # add the parts of each bag: group part 0 gathers the others' sums
                for a in range(ACC):
                    parts_s[g, lane, a] = acc[a]
                counts_s[g] = nonzero
                cuda.syncthreads()
                if part == 0:
                    for p in range(1, SPLIT):
                        nonzero += counts_s[g + p]
                        for a in range(ACC):
                            acc[a] += parts_s[g + p, lane, a]
                cuda.syncthreads()  # the next tile may overwrite the parts only once they are read
            if valid and part == 0:
                write_bag(out, bag, acc, size, nonzero)
            tile += cuda.gridDim.x

    return embedding_bag_fast
