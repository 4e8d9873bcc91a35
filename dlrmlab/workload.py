"""Workloads: the shape of a DLRM embedding stage, and seeded batches of lookups for it.

Names follow DLRM (``embedding_sizes`` = rows per table, ``sparse_feature_size`` = embedding width) and
PyTorch's EmbeddingBag (CSR ``indices`` / ``offsets`` with ``include_last_offset=True``,
``per_sample_weights``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import numpy as np

from dlrmlab import quant, validate
from dlrmlab.config import INDEX_DTYPES, table_dtype
from dlrmlab.datasets import IndexStream, make_stream
from dlrmlab.errors import DlrmlabError

# --- pooling ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pooling:
    """Bag sizes: ``fixed`` (every bag has ``a`` ids), ``uniform`` (integers in [a, b]) or ``poisson``
    (mean ``a``). Written as ``150``, ``uniform:0-300`` or ``poisson:150``."""

    kind: str = "fixed"
    a: float = 150
    b: float = 0

    def __post_init__(self) -> None:
        if not all(np.isfinite([self.a, self.b])) or max(self.a, self.b) > 2**31 - 1:
            raise DlrmlabError(f"pooling parameters must be finite and below 2**31, got {self.a}, {self.b}")
        if self.kind == "fixed" and (self.a != int(self.a) or self.a <= 0):
            raise DlrmlabError(f"pooling must be a positive integer, got {self.a}")
        if self.kind == "uniform" and not (0 <= self.a <= self.b and self.b > 0):
            raise DlrmlabError(f"uniform pooling needs 0 <= lo <= hi and hi > 0, got {self.a}-{self.b}")
        if self.kind == "poisson" and not self.a > 0:
            raise DlrmlabError(f"poisson pooling needs a positive mean, got {self.a}")
        if self.kind not in ("fixed", "uniform", "poisson"):
            raise DlrmlabError(f"unknown pooling kind {self.kind!r}: fixed, uniform or poisson")

    @classmethod
    def parse(cls, spec: int | str | Pooling) -> Pooling:
        if isinstance(spec, Pooling):
            return spec
        s = str(spec).strip()
        try:
            if s.startswith("uniform:"):
                lo, hi = s[8:].split("-")
                return cls("uniform", int(lo), int(hi))
            if s.startswith("poisson:"):
                return cls("poisson", float(s[8:]))
            return cls("fixed", int(s))
        except DlrmlabError:
            raise
        except ValueError:
            raise DlrmlabError(
                f"bad pooling {spec!r}: expected an integer (e.g. 150), uniform:LO-HI or poisson:MEAN"
            ) from None

    @property
    def mean(self) -> float:
        return (self.a + self.b) / 2 if self.kind == "uniform" else float(self.a)

    @property
    def max(self) -> int | None:
        return {"fixed": int(self.a), "uniform": int(self.b)}.get(self.kind)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        if self.kind == "fixed":
            return np.full(n, int(self.a), np.int64)
        if self.kind == "uniform":
            return rng.integers(int(self.a), int(self.b) + 1, size=n, dtype=np.int64)
        return rng.poisson(self.a, size=n).astype(np.int64)

    def __str__(self) -> str:
        return {"fixed": f"{int(self.a)}", "uniform": f"uniform:{int(self.a)}-{int(self.b)}"}.get(
            self.kind, f"poisson:{self.a:g}"
        )


# --- the stage's shape -----------------------------------------------------------------------------------

#: Bounds that keep a shape describable from its metadata alone (a tuple of 10**9 table sizes would take
#: gigabytes before any check ran): far above any DLRM (TorchRec models have hundreds of tables).
MAX_TABLES, MAX_ROWS, MAX_DIM, MAX_BATCH = 100_000, 2**40, 2**24, 2**31 - 1



def _positive(name: str, value: object, maximum: int) -> int:
    n = validate.integer(name, value, maximum=maximum)
    if n <= 0:
        raise DlrmlabError(f"{name} must be positive, got {n}")
    return n


@dataclass(frozen=True)
class EmbeddingStage:
    """Shape of the embedding stage: tables, their rows and width, batch size, pooling, dtypes."""

    embedding_sizes: tuple[int, ...]
    sparse_feature_size: int
    batch_size: int
    pooling: Pooling = field(default_factory=Pooling)
    dtype: str = "float32"
    index_dtype: str = "int64"
    name: str = "custom"

    def __post_init__(self) -> None:
        sizes = self.embedding_sizes
        if isinstance(sizes, (str, bytes)) or not hasattr(sizes, "__len__"):
            raise DlrmlabError(f"embedding_sizes must be a sequence of row counts, got {sizes!r}")
        if len(sizes) > MAX_TABLES:
            raise DlrmlabError(f"embedding_sizes: at most {MAX_TABLES:,} tables, got {len(sizes):,}")
        object.__setattr__(self, "embedding_sizes", tuple(_positive("rows", r, MAX_ROWS) for r in sizes))
        object.__setattr__(self, "pooling", Pooling.parse(self.pooling))
        if not self.embedding_sizes:
            raise DlrmlabError("need at least one table")
        object.__setattr__(self, "sparse_feature_size", _positive("embedding dim", self.sparse_feature_size, MAX_DIM))
        object.__setattr__(self, "batch_size", _positive("batch size", self.batch_size, MAX_BATCH))
        if not isinstance(self.dtype, str) or not isinstance(self.index_dtype, str):
            raise DlrmlabError(f"dtype and index_dtype are names (e.g. 'float32', 'int64'), got {self.dtype!r}, "
                               f"{self.index_dtype!r}")
        if quant.is_quantized(self.dtype):
            quant.row_format(self.dtype).check_dim(int(self.sparse_feature_size))
        else:
            table_dtype(self.dtype)
        if self.index_dtype not in INDEX_DTYPES:
            raise DlrmlabError(f"unknown index dtype {self.index_dtype!r}; valid: {', '.join(INDEX_DTYPES)}")
        if self.index_dtype == "int32" and max(self.embedding_sizes) > 2**31 - 1:
            raise DlrmlabError("int32 ids cannot address tables of more than 2**31 - 1 rows")

    @property
    def num_tables(self) -> int:
        return len(self.embedding_sizes)

    @property
    def embedding_dim(self) -> int:
        return int(self.sparse_feature_size)

    @property
    def element_bytes(self) -> int:
        """Bytes of one stored element (1 for quantized rows: their storage is bytes)."""
        return 1 if quant.is_quantized(self.dtype) else table_dtype(self.dtype).bytes

    @property
    def row_bytes(self) -> int:
        """Bytes of one table row (codes, scale and bias for quantized rows, as FBGEMM stores them)."""
        if quant.is_quantized(self.dtype):
            return quant.row_format(self.dtype).row_bytes(self.embedding_dim)
        return self.embedding_dim * self.element_bytes

    def table_bytes(self) -> int:
        return sum(self.embedding_sizes) * self.row_bytes

    def lookups_per_batch(self) -> float:
        return self.num_tables * self.batch_size * self.pooling.mean

    def bytes_per_batch(self) -> float:
        """Bytes a perfect kernel moves per batch: each looked-up row read once, output written once."""
        return self.lookups_per_batch() * self.row_bytes + self.num_tables * self.batch_size * self.embedding_dim * 4

    def with_(self, **changes) -> EmbeddingStage:
        return replace(self, **changes)

    def describe(self) -> dict:
        return {
            "preset": self.name,
            "tables": self.num_tables,
            "rows": self.embedding_sizes[0] if len(set(self.embedding_sizes)) == 1 else list(self.embedding_sizes),
            "dim": self.embedding_dim,
            "dtype": self.dtype,
            "index_dtype": self.index_dtype,
            "batch": self.batch_size,
            "pooling": str(self.pooling),
        }


PRESETS: dict[str, EmbeddingStage] = {
    # The paper's artifact: 12 x 500,000 x 128 fp32 (256 MB each), batch 2048, 150 lookups per bag.
    "paper": EmbeddingStage((500_000,) * 12, 128, 2048, Pooling("fixed", 150), name="paper"),
    # Small enough for Numba's CUDA simulator (one Python thread per CUDA thread) in seconds.
    "tiny": EmbeddingStage((1000, 700, 1500), 32, 8, Pooling("fixed", 5), name="tiny"),
}


#: ``preset`` overrides: the field names and the names users reach for (the CLI's flags, PyTorch's and
#: DLRM's words), each to its field.
OVERRIDES = {
    "tables": "tables", "num_tables": "tables", "rows": "rows", "num_embeddings": "rows",
    "embedding_sizes": "embedding_sizes", "batch_size": "batch_size", "batch": "batch_size",
    "sparse_feature_size": "sparse_feature_size", "dim": "sparse_feature_size",
    "embedding_dim": "sparse_feature_size", "pooling": "pooling", "dtype": "dtype", "index_dtype": "index_dtype",
    "name": "name",
}  # fmt: skip


def preset(name: str, **overrides) -> EmbeddingStage:
    """A named stage shape, optionally changed: ``preset("paper", batch_size=4096)``.

    Overrides: ``tables``, ``rows`` (every table), ``embedding_sizes`` (rows per table), ``batch_size``
    (or ``batch``), ``sparse_feature_size`` (or ``dim``, ``embedding_dim``), ``pooling``, ``dtype``,
    ``index_dtype``. Numbers are checked (integers, in range) before anything is built."""
    if not isinstance(name, str) or name not in PRESETS:
        raise DlrmlabError(f"unknown preset {name!r}; valid: {', '.join(PRESETS)}")
    stage = PRESETS[name]
    unknown = sorted(k for k in overrides if k not in OVERRIDES)
    if unknown:
        raise DlrmlabError(f"preset(): unknown override(s) {', '.join(unknown)}; valid: {', '.join(OVERRIDES)}")
    fields: dict = {}
    for key, value in overrides.items():
        field_ = OVERRIDES[key]
        if field_ in fields:
            raise DlrmlabError(f"preset(): {key}= names the same setting as another override ({field_})")
        fields[field_] = (key, value)
    if "embedding_sizes" in fields and ({"tables", "rows"} & set(fields)):
        raise DlrmlabError("preset(): give embedding_sizes, or tables and rows, not both")
    changes = {f: v for f, (_k, v) in fields.items() if f not in ("tables", "rows")}
    if "tables" in fields or "rows" in fields:
        t_key, t = fields.get("tables", ("tables", stage.num_tables))
        r_key, r = fields.get("rows", ("rows", stage.embedding_sizes[0]))
        t = validate.integer(t_key, t, minimum=1, maximum=MAX_TABLES)
        changes["embedding_sizes"] = (validate.integer(r_key, r, minimum=1, maximum=MAX_ROWS),) * t
    for f, limit in (("batch_size", MAX_BATCH), ("sparse_feature_size", MAX_DIM)):
        if f in changes:  # checked here so the message names the argument as the user passed it
            changes[f] = validate.integer(fields[f][0], changes[f], minimum=1, maximum=limit)
    return stage.with_(**changes) if changes else stage


# --- batches ---------------------------------------------------------------------------------------------


@dataclass
class TableBatch:
    """One table's lookups in CSR form: bag ``b`` is ``indices[offsets[b]:offsets[b+1]]``."""

    indices: np.ndarray
    offsets: np.ndarray
    per_sample_weights: np.ndarray | None = None

    @property
    def num_bags(self) -> int:
        return self.offsets.size - 1


@dataclass
class JaggedBatch:
    """All tables in one layout, like TorchRec's KeyedJaggedTensor (keys = tables).

    Bags are numbered table-major: bag ``t * B + b``. ``offsets`` (length T*B + 1) delimits every bag in
    the one ``indices`` array; ``table_offsets`` (length T + 1) delimits each table's run of bags.
    """

    indices: np.ndarray
    offsets: np.ndarray
    table_offsets: np.ndarray
    per_sample_weights: np.ndarray | None = None

    @property
    def num_tables(self) -> int:
        return self.table_offsets.size - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def table(self, t: int) -> TableBatch:
        b0, b1 = int(self.table_offsets[t]), int(self.table_offsets[t + 1])
        i0, i1 = int(self.offsets[b0]), int(self.offsets[b1])
        w = None if self.per_sample_weights is None else self.per_sample_weights[i0:i1]
        return TableBatch(self.indices[i0:i1], self.offsets[b0 : b1 + 1] - i0, w)

    @classmethod
    def from_tables(cls, tables: list[TableBatch]) -> JaggedBatch:
        idx_dtype = tables[0].indices.dtype
        indices = np.concatenate([t.indices for t in tables]).astype(idx_dtype, copy=False)
        base = np.cumsum([0] + [t.indices.size for t in tables])
        offsets = np.concatenate([t.offsets[:-1] + base[i] for i, t in enumerate(tables)] + [base[-1:]])
        table_offsets = np.cumsum([0] + [t.num_bags for t in tables]).astype(np.int64)
        weighted = [t.per_sample_weights is not None for t in tables]
        if any(weighted) and not all(weighted):
            raise DlrmlabError("per_sample_weights must be given for all tables or none")
        w = np.concatenate([t.per_sample_weights for t in tables]) if all(weighted) else None
        return cls(indices, offsets.astype(np.int64), table_offsets, w)


@dataclass
class Batch:
    """One batch of the embedding stage: a :class:`TableBatch` per table."""

    tables: list[TableBatch]

    def jagged(self) -> JaggedBatch:
        return JaggedBatch.from_tables(self.tables)

    def all_ids(self) -> np.ndarray:
        return np.concatenate([t.indices for t in self.tables]).astype(np.int64, copy=False)


class Workload:
    """A stage shape plus a dataset: yields seeded, deterministic batches.

    Ids come from one stream consumed table after table, batch after batch (the artifact's order); bag
    sizes and per-sample weights come from a separate generator so they never shift the id stream.
    """

    def __init__(
        self,
        stage: EmbeddingStage | str = "paper",
        dataset: str | IndexStream = "random",
        seed: int = 0,
        weighted: bool = False,
    ) -> None:
        seed = validate.integer("seed", seed, 0, validate.SEED_MAX)
        self.stage = preset(stage) if isinstance(stage, str) else stage
        self.stream = make_stream(dataset, seed) if isinstance(dataset, str) else dataset
        self.dataset = self.stream.name  # the canonical label (synthetic-low, trace:medium, ...)
        self.seed = int(seed)
        self.weighted = weighted
        self._rng = np.random.default_rng([self.seed, 0xBA65])

    def reset(self) -> None:
        self.stream.reset()
        self._rng = np.random.default_rng([self.seed, 0xBA65])

    def batch(self) -> Batch:
        s = self.stage
        idt = np.dtype(s.index_dtype)
        tables = []
        for rows in s.embedding_sizes:
            lengths = s.pooling.sample(self._rng, s.batch_size)
            offsets = np.zeros(s.batch_size + 1, np.int64)
            np.cumsum(lengths, out=offsets[1:])
            ids = self.stream.take(int(offsets[-1]), rows).astype(idt, copy=False)
            w = self._rng.random(ids.size, dtype=np.float32) if self.weighted else None
            tables.append(TableBatch(ids, offsets.astype(idt), w))
        return Batch(tables)

    def batches(self, n: int) -> Iterator[Batch]:
        for _ in range(int(n)):
            yield self.batch()

    def ids(self, n: int | None = None) -> np.ndarray:
        """The first ``n`` ids of the stream as batches consume them (default: one batch's worth).

        Ids are drawn against the first table's rows; with equal-sized tables this is exactly the id
        sequence that batches see, which is what hotness statistics should describe.
        """
        self.reset()
        if n is None:
            ids = self.batch().all_ids()
        else:
            if int(n) <= 0:
                raise DlrmlabError(f"number of ids must be positive, got {n}")
            ids = self.stream.take(int(n), self.stage.embedding_sizes[0])
        self.reset()
        return ids

    def make_tables(self, seed: int | None = None) -> list[np.ndarray]:
        """Random host tables (normal entries) of the stage's shape and dtype."""
        rng = np.random.default_rng([self.seed if seed is None else seed, 0x7AB1E])
        out = []
        for rows in self.stage.embedding_sizes:
            w = rng.standard_normal((rows, self.stage.embedding_dim), dtype=np.float32)
            out.append(cast_table(w, self.stage.dtype))
        return out


def cast_table(w: np.ndarray, dtype: str) -> np.ndarray:
    """fp32 array to the table dtype. bfloat16 is stored as uint16 bit patterns (NumPy has no bf16); a
    quantized format as its uint8 rows (:func:`dlrmlab.quant.quantize`)."""
    if quant.is_quantized(dtype):
        return quant.quantize_fast(w, dtype)
    if dtype == "float32":
        return np.ascontiguousarray(w, np.float32)
    if dtype == "float16":
        return np.ascontiguousarray(w, np.float16)
    if dtype == "bfloat16":
        w32 = np.ascontiguousarray(w, np.float32)
        bits = w32.view(np.uint32)
        # round to nearest even; NaNs stay (quiet) NaNs instead of overflowing into inf
        rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
        return np.where(np.isnan(w32), ((bits >> 16) | 0x0040).astype(np.uint16), rounded)
    raise DlrmlabError(f"unknown table dtype {dtype!r}")


def table_as_float32(w: np.ndarray, dtype: str) -> np.ndarray:
    """Inverse of :func:`cast_table` (exact): the fp32 values a kernel accumulates."""
    if dtype == "bfloat16":
        return (np.asarray(w, np.uint16).astype(np.uint32) << 16).view(np.float32)
    if quant.is_quantized(dtype):  # not the fp32 table it came from: the values its rows hold
        return quant.dequantize(w, dtype, quant.dim_from_row_bytes(dtype, np.asarray(w).shape[1]))
    return np.asarray(w).astype(np.float32)
