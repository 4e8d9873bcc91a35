"""Where a table lives: ``device`` (HBM), ``host`` (pinned host memory the kernel reads zero-copy) or
``cached`` (the host table plus an HBM cache of its hot rows, :mod:`dlrmlab.hbmcache`).

A :class:`Placement` is parsed once from a spec string (``"device"``, ``"host"``,
``"cached:10%:lfu:per-table:serial"``) and validated before anything is allocated.

Host tables live in :func:`pinned_host`, the only way dlrmlab pins memory: it checks the size against the
free host memory first (naming both), pins and maps the pages (``cudaHostAlloc`` with the mapped flag),
and on every exit path, Ctrl-C included, unmaps and frees them. In the simulator "host memory" is a NumPy
array and everything else runs the same.
"""

from __future__ import annotations

import contextlib
import ctypes
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from dlrmlab import backend, cudart
from dlrmlab import validate as checks
from dlrmlab.backend import cuda
from dlrmlab.config import table_dtype
from dlrmlab.errors import DlrmlabError

PLACEMENTS = ("device", "host", "cached")
POLICIES = ("lru", "lfu")
DEFAULT_WAYS = 32  # FBGEMM's cache associativity

_UNITS = {"": 1, "b": 1, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40, "kb": 10**3, "mb": 10**6,
          "gb": 10**9, "tb": 10**12}


@dataclass(frozen=True)
class Placement:
    """Where tables live, and for ``cached`` the cache's shape.

    ``budget``: the HBM cache's size, a fraction of the tables' bytes (``0 < budget <= 1``) or a byte
    count (> 1). ``shared``: one cache for all tables (rows compete across tables) or one per table (the
    budget split by table bytes). ``pipelined``: batch i+1's rows are fetched while batch i computes.
    """

    kind: str = "device"
    budget: float = 0.1
    policy: str = "lru"
    ways: int = DEFAULT_WAYS
    shared: bool = True
    pipelined: bool = True

    def __post_init__(self) -> None:
        if self.kind not in PLACEMENTS:
            raise DlrmlabError(f"placement must be one of {', '.join(PLACEMENTS)}, got {self.kind!r}")
        if self.policy not in POLICIES:
            raise DlrmlabError(f"cache policy must be one of {', '.join(POLICIES)}, got {self.policy!r}")
        if isinstance(self.budget, bool) or not isinstance(self.budget, (int, float)) or not self.budget > 0:
            raise DlrmlabError(f"cache budget must be a fraction in (0, 1] or a byte count, got {self.budget!r}")
        if isinstance(self.ways, bool) or not isinstance(self.ways, int) or not 1 <= self.ways <= 1024:
            raise DlrmlabError(f"cache ways must be an integer in 1..1024, got {self.ways!r}")

    @classmethod
    def parse(cls, spec: str | Placement) -> Placement:
        """``device``, ``host``, or ``cached`` followed by ``:``-separated options in any order: a budget
        (``10%``, ``0.1``, ``2GiB``), ``lru``/``lfu``, ``shared``/``per-table``, ``N-way``,
        ``pipelined``/``serial``."""
        if isinstance(spec, Placement):
            return spec
        if not isinstance(spec, str) or not spec.strip():
            raise DlrmlabError(f"placement must be a string such as 'device', 'host' or 'cached:10%', got {spec!r}")
        kind, *opts = [p.strip().lower() for p in spec.split(":")]
        if opts and kind != "cached":
            raise DlrmlabError(f"placement {kind!r} takes no options, got {spec!r}")
        changes: dict[str, Any] = {}
        for o in opts:
            if o in POLICIES:
                changes["policy"] = o
            elif o in ("shared", "per-table"):
                changes["shared"] = o == "shared"
            elif o in ("pipelined", "serial"):
                changes["pipelined"] = o == "pipelined"
            elif m := re.fullmatch(r"(\d+)-?ways?", o):
                changes["ways"] = int(m.group(1))
            else:
                changes["budget"] = parse_budget(o)
        return cls(kind, **changes)

    def with_(self, **changes: Any) -> Placement:
        return replace(self, **changes)

    def cache_bytes(self, table_bytes: int) -> int:
        """The cache's bytes for tables of ``table_bytes`` in total."""
        return int(self.budget * table_bytes) if self.budget <= 1 else int(self.budget)

    def __str__(self) -> str:
        if self.kind != "cached":
            return self.kind
        b = f"{self.budget * 100:g}%" if self.budget <= 1 else f"{int(self.budget)}"
        return ":".join(["cached", b, self.policy, "shared" if self.shared else "per-table", f"{self.ways}-way",
                         "pipelined" if self.pipelined else "serial"])

    def params(self) -> dict:
        return {"placement": self.kind, "cache_policy": self.policy if self.kind == "cached" else None,
                "cache_budget": self.budget if self.kind == "cached" else None,
                "cache_ways": self.ways if self.kind == "cached" else None,
                "cache_shared": self.shared if self.kind == "cached" else None,
                "pipelined": self.pipelined if self.kind == "cached" else None}


def parse_budget(text: str) -> float:
    """``"10%"`` -> 0.1, ``"0.25"`` -> 0.25, ``"2GiB"`` -> 2147483648.0."""
    t = text.strip().lower()
    try:
        if t.endswith("%"):
            return float(t[:-1]) / 100
        m = re.fullmatch(r"([0-9.]+)\s*([a-z]*)", t)
        if m and m.group(2) in _UNITS:
            return float(m.group(1)) * _UNITS[m.group(2)]
    except ValueError:
        pass
    raise DlrmlabError(f"bad placement option {text!r}: expected a budget (10%, 0.1, 2GiB), lru/lfu, "
                       "shared/per-table, N-way or pipelined/serial")


# --- pinned, mapped host memory -------------------------------------------------------------------------

#: live pinned buffers (id -> bytes): what :func:`pinned_host` has pinned and not yet freed
_LIVE: dict[int, int] = {}


def live_pinned_bytes() -> int:
    """Bytes pinned by :func:`pinned_host` blocks still open (0 once every block has exited)."""
    return sum(_LIVE.values())


@dataclass
class HostBuffer:
    """Pinned host memory mapped into the GPU's address space; views of it as NumPy and device arrays."""

    nbytes: int
    host_ptr: int = 0
    device_ptr: int = 0
    _array: np.ndarray | None = field(default=None, repr=False)  # the simulator's stand-in
    _owner: Any = field(default=None, repr=False)

    def array(self, dtype: Any, shape: Sequence[int]) -> np.ndarray:
        """The memory as a NumPy array (the CPU writes tables through it)."""
        dt = np.dtype(dtype)
        n = int(np.prod(shape)) * dt.itemsize
        if n > self.nbytes:
            raise DlrmlabError(f"a view of {n} bytes over a pinned buffer of {self.nbytes} bytes")
        if self._array is not None:
            return self._array[:n].view(dt).reshape(tuple(shape))
        raw = (ctypes.c_byte * n).from_address(self.host_ptr)
        return np.frombuffer(raw, dt).reshape(tuple(shape))

    def device(self, dtype: Any, shape: Sequence[int]) -> Any:
        """The same memory as a device array: kernels read it over the host link (zero-copy)."""
        if self._array is not None:
            return self.array(dtype, shape)  # the simulator reads NumPy arrays directly
        dt = np.dtype(dtype)
        desc = {"shape": tuple(int(s) for s in shape), "typestr": dt.str, "data": (self.device_ptr, False),
                "version": 3, "strides": None}
        return cuda.from_cuda_array_interface(desc, owner=self, sync=False)


@contextlib.contextmanager
def pinned_host(nbytes: int, what: str = "host tables") -> Iterator[HostBuffer]:
    """Pin and map ``nbytes`` of host memory for the block; unmap and free them on every exit.

    Refused before anything is allocated when ``nbytes`` is more than the free host memory (both named).
    """
    nbytes = int(nbytes)
    if nbytes <= 0:
        raise DlrmlabError(f"{what}: need a positive size, got {nbytes} bytes")
    check_host_fits(nbytes, what)
    if backend.SIMULATOR:
        buf = HostBuffer(nbytes, _array=np.zeros(nbytes, np.uint8))
    else:
        try:
            ptr = cudart.host_alloc_mapped(nbytes)
        except cudart.CudaError as e:
            raise DlrmlabError(f"{what}: pinning {checks.fmt_bytes(nbytes)} of host memory failed ({e}); "
                               f"{checks.fmt_bytes(checks.available_host_bytes() or 0)} is free") from None
        try:
            buf = HostBuffer(nbytes, ptr, cudart.host_device_pointer(ptr))
        except BaseException:
            cudart.host_free(ptr)
            raise
    _LIVE[id(buf)] = nbytes
    try:
        yield buf
    finally:
        _LIVE.pop(id(buf), None)
        if buf._array is None:
            cuda.synchronize()  # no kernel may still read the pages being unmapped
            cudart.host_free(buf.host_ptr)
        buf._array = None
        buf.host_ptr = buf.device_ptr = 0


def check_host_fits(nbytes: int, what: str) -> None:
    """Refuse ``nbytes`` of host memory when less is free, naming both sizes."""
    free = checks.available_host_bytes()
    if free is not None and nbytes > free:
        raise DlrmlabError(f"{what} need {checks.fmt_bytes(nbytes)} of host memory, more than the "
                           f"{checks.fmt_bytes(free)} free; use fewer or smaller tables")


def check_device_fits(nbytes: int, what: str) -> None:
    """Refuse ``nbytes`` of GPU memory when less is free, naming both sizes (the simulator's "GPU memory"
    is host memory)."""
    free = checks.available_device_bytes()
    if free is None:
        free = checks.available_host_bytes()
    if free is not None and nbytes > free:
        raise DlrmlabError(f"{what} needs {checks.fmt_bytes(nbytes)} of GPU memory, more than the "
                           f"{checks.fmt_bytes(free)} free; give the cache a smaller budget")


@dataclass
class HostTables:
    """Tables packed back to back in one pinned, mapped host buffer (one width and dtype).

    ``flat`` is the device view the kernels read (zero-copy); ``host`` the NumPy view the CPU fills;
    ``row_base[t]`` the first element of table t.
    """

    buffer: HostBuffer
    rows: tuple[int, ...]
    dim: int
    dtype: str

    @property
    def row_base(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.rows)[:-1]]).astype(np.int64) * self.dim

    @property
    def total_rows(self) -> int:
        return int(sum(self.rows))

    @property
    def row_bytes(self) -> int:
        return self.dim * table_dtype(self.dtype).bytes

    @property
    def nbytes(self) -> int:
        return self.total_rows * self.row_bytes

    @property
    def host(self) -> np.ndarray:
        """All rows as one (total_rows, dim) NumPy array in pinned memory."""
        return self.buffer.array(table_dtype(self.dtype).storage, (self.total_rows, self.dim))

    @property
    def flat(self) -> Any:
        return self.buffer.device(table_dtype(self.dtype).storage, (self.total_rows * self.dim,))

    def table(self, t: int) -> np.ndarray:
        start = int(sum(self.rows[:t]))
        return self.host[start : start + self.rows[t]]


@contextlib.contextmanager
def host_tables(rows: Sequence[int], dim: int, dtype: str = "float32",
                fill: Sequence[np.ndarray] | None = None) -> Iterator[HostTables]:
    """Pinned, mapped host tables of ``rows`` x ``dim`` for the block, filled from ``fill`` when given
    (else left for the caller to fill through :attr:`HostTables.host`)."""
    rows = tuple(int(r) for r in rows)
    if not rows or min(rows) <= 0:
        raise DlrmlabError(f"host tables need at least one table of at least one row, got {rows}")
    dt = table_dtype(dtype)
    nbytes = sum(rows) * dim * dt.bytes
    with pinned_host(nbytes, f"{len(rows)} host table(s) of {sum(rows):,} rows x {dim} ({dt.name})") as buf:
        ht = HostTables(buf, rows, int(dim), dt.name)
        if fill is not None:
            if len(fill) != len(rows):
                raise DlrmlabError(f"{len(fill)} table(s) given for {len(rows)} host table(s)")
            for t, w in enumerate(fill):
                if tuple(w.shape) != (rows[t], dim):
                    raise DlrmlabError(f"table {t} has shape {tuple(w.shape)}, expected {(rows[t], dim)}")
                ht.table(t)[:] = w
        yield ht
