"""One benchmark input: a workload's tables and rotating batches, copied to the device once.

Every variant of a comparison reads the same device arrays, so differences in timing come from the
kernels, not from where the data happens to live. ``n_batches`` distinct batches rotate through the timed
runs: a single repeated batch would leave its rows in L2 and measure a cache the real workload (a new
batch every request) does not have.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from dlrmlab import hotness, quant, validate
from dlrmlab.backend import cuda
from dlrmlab.config import Combine
from dlrmlab.errors import DlrmlabError
from dlrmlab.reference import embedding_bag
from dlrmlab.workload import Batch, EmbeddingStage, Workload, preset, table_as_float32


class DeviceTableBatch(NamedTuple):
    """One table's CSR lookups on the device (``include_last_offset=True`` offsets)."""

    indices: Any
    offsets: Any
    #: float32 per-sample weights, or the case's 1-element dummy when the case is unweighted
    psw: Any


class DeviceJagged(NamedTuple):
    """All tables' lookups in one jagged layout (see :class:`dlrmlab.workload.JaggedBatch`), on the device."""

    indices: Any
    offsets: Any
    table_offsets: Any
    #: float32 per-sample weights, or the case's 1-element dummy when the case is unweighted
    psw: Any


@dataclass
class DeviceBatch:
    """One batch on the device: per table, and jagged (one launch for all tables)."""

    tables: list[DeviceTableBatch]
    jagged: DeviceJagged


@dataclass
class BenchCase:
    """Tables and batches of one (stage, dataset, seed), on host and device, with a stream to run on."""

    stage: EmbeddingStage
    dataset: str
    seed: int
    mode: str
    weighted: bool
    stream: Any
    host_tables: list[np.ndarray]
    dev_tables: list[Any]
    host_batches: list[Batch]
    dev_batches: list[DeviceBatch]
    #: 1-element float32 device array passed as ``psw`` when the case is unweighted
    psw_dummy: Any
    #: trace ids skipped (>= the table's rows) while the batches were built; 0 for generated streams
    dropped_ids: int = 0
    #: passes over the end of the trace while the batches were built (the trace repeated); 0 if generated
    trace_wraps: int = 0
    _refs: dict[int, list[np.ndarray]] = field(default_factory=dict, repr=False)
    #: data derived from the case by variants (ranked tables, packed buffers), built once per key
    _derived: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def create(
        cls,
        stage: EmbeddingStage | str,
        dataset: str,
        seed: int = 0,
        n_batches: int = 4,
        weighted: bool = False,
        mode: str = "sum",
        *,
        tables_from: BenchCase | None = None,
    ) -> BenchCase:
        """Generate the workload and copy it to the device.

        ``tables_from`` reuses another case's host and device tables (same stage and seed required), so
        a sweep over datasets generates and uploads the tables once.
        """
        stage = preset(stage) if isinstance(stage, str) else stage
        if not isinstance(stage, EmbeddingStage):
            raise DlrmlabError(f"stage must be an EmbeddingStage or a preset name, got {type(stage).__name__}")
        if int(n_batches) != n_batches or int(n_batches) < 1:
            raise DlrmlabError(f"n_batches must be a positive integer, got {n_batches!r}")
        Combine(mode, bool(weighted))  # the kernels' modes; weights with sum only, as in torch
        validate.check_stage(stage, int(n_batches), weighted=bool(weighted), dataset=dataset,
                             tables=tables_from is None)  # before anything is generated or uploaded
        wl = Workload(stage, dataset, seed=seed, weighted=weighted)
        host_batches = list(wl.batches(int(n_batches)))
        stream = wl.stream  # what the trace stream dropped and repeated while the batches were built
        dropped_ids, trace_wraps = int(stream.dropped), int(stream.wraps)

        if tables_from is not None:
            if tables_from.stage != stage or tables_from.seed != int(seed):
                raise DlrmlabError("tables_from must be a case of the same stage and seed")
            host_tables, dev_tables = tables_from.host_tables, tables_from.dev_tables
        else:
            host_tables = wl.make_tables()
            # Flattened 1-D, row-major (row stride = dim): the layout every dlrmlab kernel addresses.
            dev_tables = [cuda.to_device(np.ascontiguousarray(t).reshape(-1)) for t in host_tables]

        psw_dummy = cuda.to_device(np.zeros(1, np.float32))
        dev_batches = [_to_device(b, psw_dummy) for b in host_batches]
        return cls(
            stage=stage, dataset=wl.dataset, seed=int(seed), mode=mode, weighted=bool(weighted), stream=cuda.stream(),
            host_tables=host_tables, dev_tables=dev_tables, host_batches=host_batches, dev_batches=dev_batches,
            psw_dummy=psw_dummy, dropped_ids=dropped_ids, trace_wraps=trace_wraps,
        )

    # --- shape -------------------------------------------------------------------------------------------

    @property
    def dim(self) -> int:
        return self.stage.embedding_dim

    @property
    def dtype(self) -> str:
        return self.stage.dtype

    @property
    def num_tables(self) -> int:
        return self.stage.num_tables

    @property
    def n_batches(self) -> int:
        return len(self.host_batches)

    @property
    def preset(self) -> str:
        return self.stage.name

    def describe(self) -> dict:
        """The workload columns of a result row (CSV-friendly scalars)."""
        d = self.stage.describe()
        if isinstance(d["rows"], list):
            d["rows"] = ",".join(str(r) for r in d["rows"])
        return {"dataset": self.dataset, **d, "seed": self.seed, "mode": self.mode, "weighted": self.weighted,
                "n_batches": self.n_batches, "dropped_ids": self.dropped_ids, "trace_wraps": self.trace_wraps}

    # --- inputs and references ---------------------------------------------------------------------------

    def _check_batch(self, batch_i: int) -> int:
        if not 0 <= int(batch_i) < self.n_batches:
            raise DlrmlabError(f"batch index {batch_i} out of range: the case has {self.n_batches} batches")
        return int(batch_i)

    def ids(self, batch_i: int) -> np.ndarray:
        """Host ids of all tables of batch ``batch_i``, table after table (for hotness statistics)."""
        return self.host_batches[self._check_batch(batch_i)].all_ids()

    def table_ids(self, t: int) -> np.ndarray:
        """Table t's ids over all of the case's batches (the workload's frequencies)."""
        return np.concatenate([b.tables[t].indices for b in self.host_batches]).astype(np.int64)

    def rankings(self) -> list[hotness.Ranking]:
        """Each table's rows ranked by frequency over the case's batches (cached)."""
        return self.derived("rankings", lambda: [
            hotness.frequency_ranking(self.table_ids(t), rows) for t, rows in enumerate(self.stage.embedding_sizes)
        ])

    def derived(self, key: str, make: Callable[[], Any]) -> Any:
        """``make()`` once per key and case: sweeps prepare many configurations of one variant on one case,
        and 3 GB of tables each would not fit."""
        if key not in self._derived:
            self._derived[key] = make()
        return self._derived[key]

    def reference(self, batch_i: int) -> list[np.ndarray]:
        """Expected outputs of batch ``batch_i``, one (batch, dim) float32 array per table (cached)."""
        i = self._check_batch(batch_i)
        if i not in self._refs:
            out = []
            for table, tb in zip(self.host_tables, self.host_batches[i].tables, strict=True):
                # fp32 tables go in as they are (the reference gathers rows before widening them)
                # quantized rows are dequantized by the reference, only those looked up
                fmt = self.dtype if quant.is_quantized(self.dtype) else None
                w = table if self.dtype == "float32" or fmt else table_as_float32(table, self.dtype)
                out.append(embedding_bag(tb.indices, w, tb.offsets, mode=self.mode, weight_format=fmt,
                                         per_sample_weights=tb.per_sample_weights, include_last_offset=True))
            self._refs[i] = out
        return self._refs[i]

    def tolerance(self) -> float:
        """Largest acceptable ||out - ref|| / ||ref||: 1e-5 for fp32 tables (1e-2 for 16-bit ones), or the
        worst-case error of an fp32 sum of the case's longest bag (n x 2**-24: every kernel, torch's and
        cuEmbed's too, adds a bag's rows one after another in fp32) when that is larger."""
        longest = max((int(np.diff(tb.offsets).max(initial=0)) for b in self.host_batches for tb in b.tables),
                      default=0)
        exact = self.dtype == "float32" or quant.is_quantized(self.dtype)  # the reference reads the same values
        return max(1e-5 if exact else 1e-2, longest * 2.0**-24)


def _to_device(batch: Batch, psw_dummy: Any) -> DeviceBatch:
    tables = []
    for tb in batch.tables:
        psw = psw_dummy if tb.per_sample_weights is None else cuda.to_device(tb.per_sample_weights)
        tables.append(DeviceTableBatch(cuda.to_device(tb.indices), cuda.to_device(tb.offsets), psw))
    j = batch.jagged()
    jpsw = psw_dummy if j.per_sample_weights is None else cuda.to_device(j.per_sample_weights)
    jagged = DeviceJagged(
        cuda.to_device(j.indices), cuda.to_device(j.offsets), cuda.to_device(j.table_offsets), jpsw
    )
    return DeviceBatch(tables, jagged)
