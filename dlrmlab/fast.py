"""Host side of the fast path: packed tables, one launch per batch, and CUDA-graph replay.

>>> tables = PackedTables.from_arrays(host_tables)          # one packed device buffer
>>> out = fused_forward(tables, jagged_dev, mode="sum")      # one launch for all tables
>>> g = StageGraph.capture(lambda s: fused_forward(tables, jagged_dev, out=out, stream=s), inputs=[...])
>>> g.replay()                                               # a few microseconds of host time per batch
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from dlrmlab import backend, launch, occupancy
from dlrmlab.backend import cuda
from dlrmlab.errors import DlrmlabError
from dlrmlab.kernels import fused
from dlrmlab.kernels.elements import VECTOR_ELEMS

#: Resident blocks per SM the persistent grid aims for (128-thread blocks use few registers).
BLOCKS_PER_SM = 16


@dataclass
class PackedTables:
    """All tables of a stage in one 1-D device buffer (same width and dtype)."""

    packed: Any
    row_base: Any  # device int64, first element of each table
    rows: tuple[int, ...]
    dim: int
    dtype: str
    hot_rows: Any = None  # device int64 per table (split layout only)
    hot_base: Any = None  # device int64 per table (split layout only)
    remaps: list[np.ndarray] | None = None  # old id -> ranked id per table (split layout only)
    hot_bytes: int = 0  # size of the contiguous hot region at the front of ``packed``

    @property
    def split(self) -> bool:
        return self.hot_rows is not None

    @classmethod
    def from_arrays(cls, tables: Sequence[Any], dtype: str | None = None, stream=0) -> PackedTables:
        """Pack host (NumPy) or device 2-D tables. bf16 tables are uint16 arrays with ``dtype='bfloat16'``."""
        if not tables:
            raise DlrmlabError("need at least one table")
        shapes = [tuple(t.shape) for t in tables]
        if any(len(s) != 2 for s in shapes):
            raise DlrmlabError("tables must be 2-D (rows, dim)")
        dims = {s[1] for s in shapes}
        if len(dims) != 1:
            raise DlrmlabError(f"the fused kernel needs one width for all tables, got {sorted(dims)}")
        dts = {str(np.dtype(t.dtype)) for t in tables}
        if len(dts) != 1:
            raise DlrmlabError(f"the fused kernel needs one dtype for all tables, got {sorted(dts)}")
        np_dtype = dts.pop()
        dtype = dtype or {"float32": "float32", "float16": "float16"}.get(np_dtype)
        if dtype is None or (dtype == "bfloat16") != (np_dtype == "uint16"):
            raise DlrmlabError(f"table storage {np_dtype} does not match dtype {dtype!r}")
        dim = dims.pop()
        rows = tuple(int(s[0]) for s in shapes)
        base = np.concatenate([[0], np.cumsum(rows)[:-1]]).astype(np.int64) * dim
        total = int(sum(rows)) * dim
        if all(isinstance(t, np.ndarray) for t in tables):
            packed = cuda.to_device(np.concatenate([np.ascontiguousarray(t).reshape(-1) for t in tables]), stream)
        else:
            packed = cuda.device_array(total, np.dtype(np_dtype), stream=stream)
            for t, b in zip(tables, base, strict=True):
                src = t if hasattr(t, "copy_to_device") else cuda.as_cuda_array(t)
                packed[int(b) : int(b) + src.size].copy_to_device(src.reshape(src.size), stream=stream)
        return cls(packed, cuda.to_device(base, stream), rows, int(dim), dtype)

    @classmethod
    def ranked_split(
        cls, tables: Sequence[np.ndarray], counts: Sequence[np.ndarray], budget_bytes: int,
        dtype: str | None = None, stream=0,
    ) -> PackedTables:
        """Frequency-ranked tables with every table's hottest rows together at the front of the buffer.

        ``counts[t]``: access counts of table t's rows. The budget is split across tables by accesses per
        byte (:func:`dlrmlab.l2window.split_budget`); ids must then be remapped with ``remap_ids``.
        """
        from dlrmlab.l2window import split_budget

        plain = cls.from_arrays([t[:1] for t in tables], dtype)  # validates widths and dtypes, cheaply
        orders = [np.argsort(-np.asarray(c), kind="stable") for c in counts]
        row_bytes = plain.dim * np.dtype(tables[0].dtype).itemsize
        hot = split_budget([np.asarray(c)[o] for c, o in zip(counts, orders, strict=True)],
                           [row_bytes] * len(tables), budget_bytes)
        hot_parts = [np.asarray(t)[o[:h]] for t, o, h in zip(tables, orders, hot, strict=True)]
        cold_parts = [np.asarray(t)[o[h:]] for t, o, h in zip(tables, orders, hot, strict=True)]
        hot_base = np.concatenate([[0], np.cumsum(hot)[:-1]]).astype(np.int64) * plain.dim
        n_hot = int(sum(hot))
        cold_start = np.concatenate([[0], np.cumsum([len(c) for c in cold_parts])[:-1]]).astype(np.int64)
        # ranked id r >= hot[t] lives at cold row (r - hot[t]) of table t's cold part
        row_base = (n_hot + cold_start - np.asarray(hot, np.int64)) * plain.dim
        flat = np.concatenate([p.reshape(-1) for p in hot_parts + cold_parts])
        remaps = []
        for o in orders:
            r = np.empty_like(o)
            r[o] = np.arange(o.size)
            remaps.append(r)
        return cls(
            cuda.to_device(flat, stream), cuda.to_device(row_base, stream), tuple(len(t) for t in tables),
            plain.dim, plain.dtype, cuda.to_device(np.asarray(hot, np.int64), stream),
            cuda.to_device(hot_base, stream), remaps, n_hot * row_bytes,
        )

    def remap_ids(self, t: int, ids: np.ndarray) -> np.ndarray:
        """Ids of table t in this layout's numbering (identity unless the layout is ranked)."""
        return ids if self.remaps is None else self.remaps[t][ids].astype(ids.dtype)

    @property
    def num_tables(self) -> int:
        return len(self.rows)

    def vector_ok(self) -> bool:
        """16-byte loads are safe: row width a multiple of the vector and the buffer 16-byte aligned."""
        if self.dim % VECTOR_ELEMS[self.dtype]:
            return False
        if backend.SIMULATOR:
            return True
        return self.packed.device_ctypes_pointer.value % 16 == 0


def grid_for(cfg: fused.FusedConfig, num_bags: int) -> int:
    from dlrmlab.occupancy import device_limits

    sms = device_limits().get("sms", 132)
    tiles = -(-num_bags // cfg.bags_per_block)
    return launch.grid(min(tiles, sms * BLOCKS_PER_SM))


def fused_forward(
    tables: PackedTables,
    jagged: Any,
    mode: str = "sum",
    padding_idx: int | None = None,
    out: Any = None,
    stream: Any = 0,
    config: fused.FusedConfig | None = None,
    **overrides: Any,
) -> Any:
    """One launch for all tables. ``jagged``: device (indices, offsets, table_offsets, psw-or-None).

    Returns (or fills) a device array of shape (T * B, dim), fp32, bags table-major.
    """
    indices, offsets, table_offsets, psw = jagged
    if table_offsets.shape[0] - 1 != tables.num_tables:
        raise DlrmlabError(f"batch has {table_offsets.shape[0] - 1} tables, packed tables {tables.num_tables}")
    num_bags = offsets.shape[0] - 1
    cfg = config or fused.choose(
        tables.dim, tables.dtype, pooling_mean=indices.shape[0] / max(num_bags, 1), mode=mode,
        weighted=psw is not None, padded=padding_idx is not None, split_hot=tables.split, **overrides,
    )
    if cfg.split_hot != tables.split:
        raise DlrmlabError("kernel configuration and table layout disagree on the split hot region")
    if cfg.vector and not tables.vector_ok():
        cfg = replace(cfg, vector=False)  # fall back rather than read misaligned
    if cfg.max_registers is not None:
        occupancy.check_register_cap(cfg.max_registers)
    if out is None:
        out = cuda.device_array((num_bags, tables.dim), np.float32, stream=stream)
    elif tuple(out.shape) != (num_bags, tables.dim):
        raise DlrmlabError(f"out must have shape {(num_bags, tables.dim)}, got {tuple(out.shape)}")
    if psw is None:
        psw = _dummy_weights()
    kernel = build_cached(cfg)
    hot_rows = tables.hot_rows if tables.split else tables.row_base  # unused without split
    hot_base = tables.hot_base if tables.split else tables.row_base
    kernel[grid_for(cfg, num_bags), cfg.threads, stream](
        tables.packed, tables.row_base, hot_rows, hot_base, indices, offsets, table_offsets, psw,
        -1 if padding_idx is None else int(padding_idx), out,
    )
    return out


build_cached = fused.build
_DUMMY: dict = {}


def _dummy_weights():
    if "w" not in _DUMMY:
        _DUMMY["w"] = cuda.device_array(1, np.float32)
    return _DUMMY["w"]


class StageGraph:
    """A captured stage (CUDA graph) replayed with ``cuGraphLaunch``: launch cost off the critical path.

    The graph holds raw device pointers: replay refuses if any array registered in ``inputs`` has been
    reallocated (its pointer or size changed) or freed since capture.
    """

    def __init__(self, exe: Any, graph: Any, stream: Any, inputs: list[Any], fingerprint: list[tuple]):
        self._exe, self._graph, self.stream = exe, graph, stream
        self._inputs, self._fingerprint = inputs, fingerprint

    @staticmethod
    def _fp(arrays: Sequence[Any]) -> list[tuple]:
        return [(a.device_ctypes_pointer.value, int(a.nbytes)) for a in arrays]

    @classmethod
    def capture(cls, enqueue: Callable[[Any], Any], inputs: Sequence[Any], stream: Any = None) -> StageGraph:
        """Record what ``enqueue(stream)`` launches (compile it first: run it once outside capture)."""
        if backend.SIMULATOR:
            raise DlrmlabError("CUDA graphs need a CUDA GPU (simulator mode)")
        from dlrmlab import cudart

        stream = stream or cuda.stream()
        enqueue(stream)  # compile and warm outside the capture
        stream.synchronize()
        cudart.begin_capture(stream)
        try:
            enqueue(stream)
        finally:
            exe, graph = cudart.end_capture(stream)
        return cls(exe, graph, stream, list(inputs), cls._fp(inputs))

    def replay(self, current_inputs: Sequence[Any] | None = None) -> None:
        """Launch the graph on its stream. Pass the arrays you mean to use to have them checked."""
        from dlrmlab import cudart

        if self._exe is None:
            raise DlrmlabError("graph was destroyed")
        if current_inputs is not None and self._fp(current_inputs) != self._fingerprint:
            raise DlrmlabError("graph inputs were reallocated since capture: capture the stage again")
        cudart.graph_launch(self._exe, self.stream)

    def close(self) -> None:
        from dlrmlab import cudart

        if self._exe is not None:
            cudart.graph_destroy(self._exe, self._graph)
            self._exe = None
