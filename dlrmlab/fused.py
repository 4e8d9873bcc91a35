"""Host side of the fused path: packed tables, its kernel's configuration, one launch per batch.

>>> tables = PackedTables.from_arrays(host_tables)          # one packed device buffer
>>> out = fused_forward(tables, jagged_dev, mode="sum")     # one launch for all tables

Replay from a CUDA graph with :class:`dlrmlab.graph.StageGraph`.

The kernel's configuration is a pure function of the shape, dtype, pooling, GPU and explicit overrides
(:func:`configure`); tuned knobs come in as data (:mod:`dlrmlab.tuned`).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any

import numpy as np

from dlrmlab import backend, device, hotness, l2window, launch, quant, rules, tuned
from dlrmlab import validate as checks
from dlrmlab.backend import cuda
from dlrmlab.config import BoundsCheck, Combine, TableDType, table_dtype
from dlrmlab.errors import DlrmlabError
from dlrmlab.kernels.fused import KNOBS, FastConfig, build
from dlrmlab.workload import JaggedBatch

#: CUDA's limit on a grid's x dimension; tiles beyond it are walked grid-stride.
MAX_GRID = 2**31 - 1
#: Untuned default: 128-thread blocks (threads per bag x bags per block).
DEFAULT_BLOCK_THREADS = 128
#: What the kernel can write (it accumulates in fp32 either way).
OUT_DTYPES = ("float32", "float16")
#: Knobs that change what the kernel checks, not how fast it is: giving one keeps the tuned configuration.
DEBUG_KNOBS = frozenset({"bounds_check"})
#: The serving loop's defaults: re-decide the layout every this many batches, from at most this many ids.
REDECIDE_EVERY = 64
SAMPLE_IDS = 1 << 16


class BoundsWarning(UserWarning):
    """Ids outside their table were skipped (``bounds_check="warning"``): how many, and the first."""


def configure(
    dim: int, dtype: str = "float32", combine: Combine | None = None, split_hot: bool = False,
    tuned_params: dict | None = None, **overrides: Any,
) -> FastConfig:
    """The kernel configuration for a shape: explicit ``overrides`` win over ``tuned_params`` (from
    :func:`dlrmlab.tuned.fast_entry`), which win over defaults (vector loads when the width allows,
    128-thread blocks, 8 rows in flight). Pure: same inputs, same kernel, on any machine."""
    unknown = set(overrides) - KNOBS
    if unknown:
        raise DlrmlabError(f"unknown fast-kernel knobs: {', '.join(sorted(unknown))}; valid: "
                           f"{', '.join(sorted(KNOBS))}")
    vec_ok = dim % quant.vector_values(dtype) == 0
    tuning = set(overrides) - DEBUG_KNOBS  # a debugging switch does not make a configuration hand-tuned
    knobs = {"vector": vec_ok, **((tuned_params or {}) if not tuning else {}), **overrides}
    lanes = FastConfig(dim=dim, dtype=dtype, vector=bool(knobs["vector"])).lanes
    knobs.setdefault("bags_per_block", max(1, DEFAULT_BLOCK_THREADS // lanes))
    return FastConfig(dim=dim, dtype=dtype, combine=combine or Combine(), split_hot=split_hot, **knobs)


def quantized_rows(tables: Sequence[Any], fmt: str) -> tuple[int, list[np.ndarray]]:
    """``(dim, rows)``: each table as host ``(rows, row_stride)`` uint8 rows of format ``fmt``, padded for the
    kernel. A float32/float16 table is quantized here; a uint8 table is taken as rows already in ``fmt``'s
    layout (FBGEMM's op output, ``row_bytes`` wide), its dim inferred from the width as FBGEMM's ops do."""
    f = quant.row_format(fmt)
    if not tables:
        raise DlrmlabError("need at least one table")
    out, dims = [], set()
    for i, t in enumerate(tables):
        a = checks.host_copy(t)
        if a.ndim != 2:
            raise DlrmlabError(f"tables[{i}] must be 2-D (rows, dim), got shape {a.shape}")
        if a.dtype == np.uint8:
            dim = quant.dim_from_row_bytes(fmt, a.shape[1])
        else:
            dim, a = a.shape[1], quant.quantize(a, fmt)
        dims.add(dim)
        out.append(quant.pack_rows(a, fmt, dim))
    if len(dims) != 1:
        raise DlrmlabError(f"the fast kernel needs one width for all tables, got {sorted(dims)}")
    return f.check_dim(dims.pop()), out


def configure_here(dim: int, dtype: str, pooling_mean: float, **kwargs: Any) -> tuple[FastConfig, str]:
    """:func:`configure` with this GPU's knobs, and where they came from: the user's tuning cache, else the
    shipped table, else the rule derived from the shape and the GPU's properties
    (:func:`dlrmlab.rules.derive_knobs`, source ``rule``)."""
    split_hot = kwargs.get("split_hot", False)
    t = tuned.fast_entry(device.family(), dim, dtype, pooling_mean, split_hot=split_hot)
    params, source = t.params, t.source
    if source == "default":
        params, source = rules.derive_knobs(dim, dtype, pooling_mean, split_hot, device.limits()), "rule"
    if any(k in KNOBS - DEBUG_KNOBS for k in kwargs):
        source = "explicit"
    return configure(dim, dtype, tuned_params=params, **kwargs), source


@dataclass
class PackedTables:
    """All tables of a stage in one 1-D device buffer (same width and dtype).

    With a split layout (:meth:`ranked_split`) every table's hottest rows sit together at the front of the
    buffer (``hot_bytes`` long), so one L2 window covers them all.
    """

    packed: Any
    row_base: Any  # device int64, first element of each table (of its cold part, when split)
    rows: tuple[int, ...]
    dim: int
    dtype: str
    hot_rows: Any = None  # device int64 per table (split layout only)
    hot_base: Any = None  # device int64 per table (split layout only)
    remaps: list[np.ndarray] | None = None  # old id -> ranked id per table (split layout only)
    hot_bytes: int = 0
    _table_rows: Any = field(default=None, repr=False)

    @property
    def split(self) -> bool:
        return self.hot_rows is not None

    @property
    def table_rows(self) -> Any:
        """Rows per table on the device (the checked kernel's bounds), made once."""
        if self._table_rows is None:
            self._table_rows = cuda.to_device(np.asarray(self.rows, np.int64))
        return self._table_rows

    @property
    def num_tables(self) -> int:
        return len(self.rows)

    @staticmethod
    def _check(tables: Sequence[Any], dtype: str | None) -> tuple[int, TableDType]:
        if not tables:
            raise DlrmlabError("need at least one table")
        shapes = [tuple(t.shape) for t in tables]
        if any(len(s) != 2 for s in shapes):
            raise DlrmlabError("tables must be 2-D (rows, dim)")
        dims = {s[1] for s in shapes}
        if len(dims) != 1:
            raise DlrmlabError(f"the fast kernel needs one width for all tables, got {sorted(dims)}")
        storages = {str(np.dtype(t.dtype)) for t in tables}
        if len(storages) != 1:
            raise DlrmlabError(f"the fast kernel needs one dtype for all tables, got {sorted(storages)}")
        storage = storages.pop()
        name = dtype or {"float32": "float32", "float16": "float16"}.get(storage)
        if name is None or str(table_dtype(name).storage) != storage:
            raise DlrmlabError(f"table storage {storage} does not match dtype {dtype!r}")
        return int(dims.pop()), table_dtype(name)

    @classmethod
    def from_arrays(cls, tables: Sequence[Any], dtype: str | None = None, stream=0) -> PackedTables:
        """Pack host (NumPy) or device 2-D tables. bf16 tables are uint16 arrays with ``dtype='bfloat16'``.

        A quantized ``dtype`` (``int8``, ``int4``, ``fp8``: :mod:`dlrmlab.quant`) takes float tables, quantized
        here, or uint8 tables of rows already in that format (FBGEMM's fused row-wise bytes); rows are padded
        to 16 bytes in the packed buffer.
        """
        if dtype is not None and quant.is_quantized(dtype):
            return cls._from_quantized(*quantized_rows(tables, dtype), dtype, stream)
        dim, dt = cls._check(tables, dtype)
        rows = tuple(int(t.shape[0]) for t in tables)
        for i, t in enumerate(tables):
            checks.contiguous(t, f"tables[{i}]")
        on_host = all(isinstance(t, np.ndarray) for t in tables)
        checks.check_memory(  # the packed copy (and, from host tables, its staging concatenation)
            f"packing {len(tables)} table(s) of {sum(rows):,} rows x {dim} ({dt.name})",
            host=sum(rows) * dim * dt.bytes if on_host else 0, device=sum(rows) * dim * dt.bytes,
        )
        base = np.concatenate([[0], np.cumsum(rows)[:-1]]).astype(np.int64) * dim
        if all(isinstance(t, np.ndarray) for t in tables):
            packed = cuda.to_device(np.concatenate([np.ascontiguousarray(t).reshape(-1) for t in tables]), stream)
        else:
            packed = cuda.device_array(int(sum(rows)) * dim, dt.storage, stream=stream)
            for t, b in zip(tables, base, strict=True):
                src = t if hasattr(t, "copy_to_device") else cuda.as_cuda_array(t)
                packed[int(b) : int(b) + src.size].copy_to_device(src.reshape(src.size), stream=stream)
        return cls(packed, cuda.to_device(base, stream), rows, dim, dt.name)

    @classmethod
    def _from_quantized(cls, dim: int, rows2d: list[np.ndarray], fmt: str, stream=0) -> PackedTables:
        stride = quant.row_format(fmt).row_stride(dim)
        rows = tuple(int(r.shape[0]) for r in rows2d)
        checks.check_memory(f"packing {len(rows2d)} {fmt} table(s) of {sum(rows):,} rows x {dim}",
                            host=sum(rows) * stride, device=sum(rows) * stride)
        base = np.concatenate([[0], np.cumsum(rows)[:-1]]).astype(np.int64) * stride
        packed = cuda.to_device(np.concatenate([r.reshape(-1) for r in rows2d]), stream)
        return cls(packed, cuda.to_device(base, stream), rows, dim, fmt)

    @classmethod
    def ranked_split(
        cls, tables: Sequence[np.ndarray], rankings: Sequence[hotness.Ranking], budget_bytes: int,
        dtype: str | None = None, stream=0,
    ) -> PackedTables:
        """Frequency-ranked tables with every table's hottest rows together at the front of the buffer.

        The budget is split across tables by accesses per byte (:func:`dlrmlab.l2window.split_budget`);
        ids must then be remapped with :meth:`remap_ids`. A quantized ``dtype`` as in :meth:`from_arrays`.
        """
        if dtype is not None and quant.is_quantized(dtype):
            dim, tables = quantized_rows(tables, dtype)
            name, width = dtype, quant.row_format(dtype).row_stride(dim)
            row_bytes = width
        else:
            dim, dt = cls._check(tables, dtype)
            name, width, row_bytes = dt.name, dim, dim * dt.bytes
        total = sum(int(t.shape[0]) for t in tables) * row_bytes
        checks.check_memory(f"a ranked copy of {len(tables)} table(s) ({name})", host=2 * total, device=total)
        hot = l2window.split_budget([r.ranked_counts for r in rankings], [row_bytes] * len(tables), budget_bytes)
        ranked = [np.asarray(t)[r.order] for t, r in zip(tables, rankings, strict=True)]
        hot_base = np.concatenate([[0], np.cumsum(hot)[:-1]]).astype(np.int64) * width
        n_hot = int(sum(hot))
        cold_rows = [len(t) - h for t, h in zip(tables, hot, strict=True)]
        cold_start = np.concatenate([[0], np.cumsum(cold_rows)[:-1]]).astype(np.int64)
        # ranked id r >= hot[t] lives at cold row (r - hot[t]) of table t's cold part
        row_base = (n_hot + cold_start - np.asarray(hot, np.int64)) * width
        flat = np.concatenate([r[:h].reshape(-1) for r, h in zip(ranked, hot, strict=True)]
                              + [r[h:].reshape(-1) for r, h in zip(ranked, hot, strict=True)])
        return cls(
            cuda.to_device(flat, stream), cuda.to_device(row_base, stream), tuple(len(t) for t in tables), dim,
            name, cuda.to_device(np.asarray(hot, np.int64), stream), cuda.to_device(hot_base, stream),
            [r.remap for r in rankings], n_hot * row_bytes,
        )

    def remap_ids(self, t: int, ids: np.ndarray) -> np.ndarray:
        """Ids of table t in this layout's numbering (identity unless the layout is ranked)."""
        return ids if self.remaps is None else self.remaps[t][ids].astype(ids.dtype)

    def vector_ok(self) -> bool:
        """16-byte loads are safe: row width a multiple of the vector and the buffer 16-byte aligned."""
        if self.dim % quant.vector_values(self.dtype):
            return False
        return backend.SIMULATOR or checks.aligned(self.packed)


def grid_for(cfg: FastConfig, num_bags: int) -> int:
    """One block per tile. Blocks start in index order as earlier ones finish, so the bags in flight are a
    window sliding over the table-major bags and about one table's rows share L2 at a time. (A persistent
    grid walks tiles grid-stride: its blocks drift apart over several tables, and repeats within a table
    hit L2 less; on the H100 it moved 2-3% fewer bytes per second on uniform ids and the low trace.)"""
    return launch.cover(num_bags, cfg.bags_per_block, cap=MAX_GRID)


@lru_cache(maxsize=1)
def _no_weights() -> Any:
    return cuda.device_array(1, np.float32)


def fused_forward(
    tables: PackedTables,
    jagged: Any,
    mode: str = "sum",
    padding_idx: int | None = None,
    out: Any = None,
    stream: Any = 0,
    config: FastConfig | None = None,
    validate: bool | str = True,
    out_dtype: str = "float32",
    **knobs: Any,
) -> Any:
    """One launch for all tables. ``jagged``: device (indices, offsets, table_offsets, psw-or-None).

    Returns (or fills) a device array of shape (T * B, dim), bags table-major: fp32, or fp16 with
    ``out_dtype="float16"`` (or an fp16 ``out``); rows are always accumulated in fp32.

    ``validate`` (:class:`dlrmlab.validate.Validation`): ``True`` (``"shapes"``) checks what can be checked
    without reading the arrays (so without a sync, and inside a CUDA-graph capture): dtypes, shapes, the
    table count, per_sample_weights' length, the output, the memory a new output needs. ``"full"`` also reads
    ids and offsets on the host (a device copy and a sync): offsets from 0, non-decreasing, within the ids;
    every table's ids within its rows. ``False`` (``"off"``): nothing (trusted hot loops). The knob
    ``bounds_check`` (:class:`dlrmlab.config.BoundsCheck`) checks every id on the device instead (no host copy
    of the ids): a bad id is not read and adds nothing; after the launch (a sync), ``"fatal"`` raises a
    DlrmlabError naming how many there were and the first one, ``"warning"`` warns so (a :class:`BoundsWarning`),
    ``"ignore"`` says nothing (and does not sync).
    """
    level = checks.Validation.parse(validate)
    if level is not checks.Validation.OFF:
        check_jagged(tables, jagged, full=level is checks.Validation.FULL)
    indices, offsets, table_offsets, psw = jagged
    if table_offsets.shape[0] - 1 != tables.num_tables:
        raise DlrmlabError(f"batch has {table_offsets.shape[0] - 1} tables, packed tables {tables.num_tables}")
    num_bags = offsets.shape[0] - 1
    if config is None:
        combine = Combine(mode, psw is not None, padding_idx is not None)
        config, _ = configure_here(tables.dim, tables.dtype, indices.shape[0] / max(num_bags, 1),
                                   combine=combine, split_hot=tables.split, **knobs)
    if config.split_hot != tables.split:
        raise DlrmlabError("kernel configuration and table layout disagree on the split hot region")
    if config.vector and not tables.vector_ok():
        config = replace(config, vector=False)  # fall back rather than read misaligned
    if out is None:
        if out_dtype not in OUT_DTYPES:
            raise DlrmlabError(f"out_dtype must be one of {', '.join(OUT_DTYPES)}, got {out_dtype!r}")
        size = np.dtype(out_dtype).itemsize
        if level is not checks.Validation.OFF:
            checks.check_memory(f"the output of {num_bags:,} bags x {tables.dim}", device=num_bags * tables.dim * size)
        out = cuda.device_array((num_bags, tables.dim), np.dtype(out_dtype), stream=stream)
    elif tuple(out.shape) != (num_bags, tables.dim):
        raise DlrmlabError(f"out must have shape {(num_bags, tables.dim)}, got {tuple(out.shape)}")
    elif str(np.dtype(str(out.dtype).replace("torch.", ""))) not in OUT_DTYPES:
        raise DlrmlabError(f"out must be float32 or float16, got {out.dtype}")
    hot_rows = tables.hot_rows if tables.split else tables.row_base  # read, unused, by the plain addresser
    hot_base = tables.hot_base if tables.split else tables.row_base
    report = config.bounds_check in (BoundsCheck.FATAL, BoundsCheck.WARNING)
    errors = _bounds_errors(stream) if report else _no_errors()
    build(_compiled(config))[grid_for(config, num_bags), config.threads, stream](
        tables.packed, tables.row_base, hot_rows, hot_base, indices, offsets, table_offsets,
        _no_weights() if psw is None else psw, -1 if padding_idx is None else int(padding_idx), out,
        tables.table_rows, errors,
    )
    if report:
        _report_bad_ids(errors.copy_to_host(stream=stream), indices, config.bounds_check)
    return out


def _compiled(config: FastConfig) -> FastConfig:
    """The configuration the kernel is compiled for: every checking mode is one kernel (it only knows whether
    it checks; what a bad id means is decided here, on the host)."""
    return replace(config, bounds_check=BoundsCheck.FATAL) if config.checked else config


def _bounds_errors(stream: Any) -> Any:
    """``[count, first position]`` of bad ids, filled by a checked kernel."""
    return cuda.to_device(np.array([0, np.iinfo(np.int64).max], np.int64), stream=stream)


@lru_cache(maxsize=1)
def _no_errors() -> Any:
    return cuda.device_array(2, np.int64)


def _report_bad_ids(errors: np.ndarray, indices: Any, mode: BoundsCheck) -> None:
    """Raise (``fatal``) or warn (``warning``) with how many ids were bad and the first one."""
    count, first = int(errors[0]), int(errors[1])
    if not count:
        return
    bad = int(indices[first : first + 1].copy_to_host()[0]) if hasattr(indices, "copy_to_host") else None
    text = (f"indices: {count:,} id(s) out of their table's range (checked on the device); the first at position "
            f"{first:,}" + (f" is {bad:,}" if bad is not None else ""))  # fmt: skip
    if mode is BoundsCheck.FATAL:
        raise DlrmlabError(text)
    warnings.warn(f"{text}; skipped (they add nothing to their bags)", BoundsWarning, stacklevel=3)


def check_jagged(tables: PackedTables, jagged: Any, full: bool = False) -> None:
    """Refuse a jagged batch ``tables`` cannot serve (see :func:`fused_forward`'s ``validate``)."""
    if len(jagged) != 4:
        raise DlrmlabError(f"jagged must be (indices, offsets, table_offsets, per_sample_weights or None), got "
                           f"{len(jagged)} item(s)")
    indices, offsets, table_offsets, psw = jagged
    for name, a in (("indices", indices), ("offsets", offsets), ("table_offsets", table_offsets)):
        if len(getattr(a, "shape", ())) != 1:
            raise DlrmlabError(f"jagged {name} must be 1-D, got shape {tuple(getattr(a, 'shape', ()))}")
        checks.integer_array(a, f"jagged {name}", "integer ids" if name == "indices" else "integers")
    n_tables = int(table_offsets.shape[0]) - 1
    if n_tables != tables.num_tables:
        raise DlrmlabError(f"jagged table_offsets has {n_tables} table(s), the packed tables {tables.num_tables}")
    checks.per_sample_weights(psw, int(indices.shape[0]), "jagged per_sample_weights")
    if not full:
        return
    n_ids = int(indices.shape[0])
    off = checks.offsets(checks.host_copy(offsets), n_ids, True, "jagged offsets")
    toff = checks.host_copy(table_offsets).astype(np.int64)
    checks.offsets(toff, off.size - 1, True, "jagged table_offsets")
    if toff[-1] != off.size - 1:
        raise DlrmlabError(f"jagged table_offsets end at bag {int(toff[-1])}, offsets hold {off.size - 1} bag(s)")
    ids = checks.host_copy(indices)
    for t in range(n_tables):
        lo, hi = int(off[toff[t]]), int(off[toff[t + 1]])
        checks.ids(ids[lo:hi], tables.rows[t], f"jagged indices of table {t}")


# --- serving with a layout that follows the ids ---------------------------------------------------------------


@dataclass(frozen=True)
class ServedBatch:
    """What served one batch: the layout in use and why, whether it was re-decided and re-packed at this
    batch, and how many re-packs the server has done so far (the first packing not counted)."""

    batch: int
    layout: str
    reason: str
    hot_share: float
    decided: bool
    repacked: bool
    repacks: int
    config_source: str

    def params(self) -> dict:
        """As a result row's fields."""
        return {"batch": self.batch, "layout": self.layout, "layout_reason": self.reason,
                "hot_share": round(self.hot_share, 4), "redecided": self.decided, "repacked": self.repacked,
                "repacks": self.repacks, "config_source": self.config_source}


class AdaptiveServer:
    """Serves jagged batches (:class:`dlrmlab.workload.JaggedBatch`) with one fused launch each, choosing the
    row layout itself as the ids' distribution moves.

    Every ``every`` batches (the first included) it samples at most ``sample_ids`` of the batch's ids
    (:func:`dlrmlab.rules.sampled_share`) and re-decides the layout (:func:`dlrmlab.rules.decide_layout`,
    with the previous choice for hysteresis). When the layout changes it re-packs the tables (plain, or
    frequency-ranked by that batch's ids with every table's hot rows first) and swaps the kernel
    configuration (:func:`configure_here` for the layout). On a GPU the split-hot rows sit behind a
    persisting-L2 window, opened when that layout is chosen and closed (limit, window and persisting lines
    restored) when it is left, on exit, or on an exception::

        with AdaptiveServer(host_tables, every=64) as server:
            for batch in batches:
                out, served = server(batch)   # out: (T * B, dim) on the device; served: a ServedBatch
    """

    def __init__(self, tables: Sequence[np.ndarray], every: int = REDECIDE_EVERY, sample_ids: int = SAMPLE_IDS,
                 mode: str = "sum", dtype: str | None = None, persisting_bytes: int | None = None,
                 stream: Any = 0, seed: int = 0) -> None:
        self.every, self.sample_ids = checks.integer("every", every, 1), checks.integer("sample_ids", sample_ids, 1)
        self.host_tables, self.mode, self.stream, self.seed = list(tables), mode, stream, seed
        self.dim, dt = PackedTables._check(self.host_tables, dtype)
        self.dtype, self.row_bytes = dt.name, self.dim * dt.bytes
        self.budget = int(persisting_bytes if persisting_bytes is not None
                          else device.limits().get("persisting_l2_max_bytes") or 0)
        self.choice: rules.LayoutChoice | None = None
        self.tables: PackedTables | None = None
        self.repacks, self.batches = 0, 0
        self._config: tuple[FastConfig, str] | None = None
        self._stack = contextlib.ExitStack()
        self._window = contextlib.ExitStack()  # the split-hot layout's persisting L2, while it is in use

    def __enter__(self) -> AdaptiveServer:
        self._stack.callback(self._window.close)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stack.close()

    def _pack(self, split_hot: bool, ids: Sequence[np.ndarray], pooling_mean: float, weighted: bool) -> None:
        self._window.close()  # the old layout's window first (its buffer is about to go), limit restored
        if split_hot:
            ranks = [hotness.frequency_ranking(np.asarray(t, np.int64), len(w))
                     for t, w in zip(ids, self.host_tables, strict=True)]
            l2 = None if backend.SIMULATOR else self._window.enter_context(l2window.persisting_l2(self.budget))
            self.tables = PackedTables.ranked_split(self.host_tables, ranks, l2.limit_bytes if l2 else self.budget,
                                                    self.dtype, self.stream)
            if l2 is not None:  # no L2 to steer in the simulator
                nbytes = min(self.tables.hot_bytes, l2.max_window)
                hit = min(1.0, l2.limit_bytes / nbytes) if nbytes else 0.0
                l2.set_window(self.stream, self.tables.packed.device_ctypes_pointer.value, nbytes, hit)
        else:
            self.tables = PackedTables.from_arrays(self.host_tables, self.dtype, self.stream)
        self._config = configure_here(self.dim, self.dtype, pooling_mean, split_hot=split_hot,
                                      combine=Combine(self.mode, weighted))

    def __call__(self, batch: JaggedBatch) -> tuple[Any, ServedBatch]:
        ids = [batch.table(t).indices for t in range(batch.num_tables)]
        if len(ids) != len(self.host_tables):
            raise DlrmlabError(f"batch has {len(ids)} tables, the server {len(self.host_tables)}")
        pooling = batch.indices.size / max(batch.offsets.size - 1, 1)
        decided = self.batches % self.every == 0
        repacked = False
        if decided:
            k = self.budget // max(self.row_bytes, 1)
            share = rules.sampled_share(ids, k, self.sample_ids, self.seed + self.batches)
            choice = rules.decide_layout(share, k, self.row_bytes, pooling, previous=self.choice)
            if self.choice is None or choice.layout != self.choice.layout:
                repacked = self.tables is not None
                self.repacks += repacked
                self._pack(choice.split_hot, ids, pooling, batch.per_sample_weights is not None)
            self.choice = choice
        indices = (np.concatenate([self.tables.remap_ids(t, i) for t, i in enumerate(ids)]) if self.tables.split
                   else batch.indices)
        w = batch.per_sample_weights
        jagged = tuple(None if a is None else cuda.to_device(np.ascontiguousarray(a), self.stream)
                       for a in (indices, batch.offsets, batch.table_offsets, w))
        cfg, source = self._config
        out = fused_forward(self.tables, jagged, mode=self.mode, stream=self.stream, config=cfg)
        served = ServedBatch(self.batches, self.choice.layout, self.choice.reason, self.choice.hot_share, decided,
                             repacked, self.repacks, source)
        self.batches += 1
        return out, served
