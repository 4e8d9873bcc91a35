"""The embedding stage as a torch module, with the implementation picked by name.

:class:`EmbeddingBagCollection` holds every table once, in one packed (sum of rows, dim) tensor; table t is
a row slice of it (a view). Every implementation reads that same memory: ``torch`` through
``F.embedding_bag`` on the views, the paper family one kernel per table on the same views (zero-copy,
``__cuda_array_interface__``), ``fast`` one launch over the packed buffer
(:func:`dlrmlab.fused.fused_forward`). Numba launches go to torch's current stream, so the module mixes with
torch ops. dlrmlab kernels write into outputs this module keeps per batch size, so a forward allocates
nothing outside torch's allocator and never synchronizes: it can be captured in a torch CUDA graph
(``fast_graph`` is ``fast`` under whole-pipeline capture). The paper family is launched through
:func:`dlrmlab.launch.paper` into outputs this module keeps, so it is capturable too.

Without a GPU (Numba's CUDA simulator) the tables are CPU tensors and the dlrmlab kernels run in the
simulator on them (zero-copy too: the simulator's arrays wrap the tensors' NumPy views), so results can
be checked on a laptop on the ``tiny`` preset; nothing is timed meaningfully there.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from dlrmlab import (
    backend,  # decides GPU or simulator before numba.cuda is imported
    fused,
    launch,
    quant,
    variants,
)
from dlrmlab import validate as checks
from dlrmlab.backend import cuda, numba_view  # numba_view: imported from here by the model code
from dlrmlab.config import KERNEL_MODES, BoundsCheck, Combine
from dlrmlab.dlrm.kjt import KeyedJaggedTensor
from dlrmlab.errors import DlrmlabError
from dlrmlab.kernels.paper import PaperConfig
from dlrmlab.placement import Placement

#: Kinds of variant this module runs itself: ``torch`` one ``F.embedding_bag`` per table, ``paper`` one
#: dlrmlab kernel per table, ``fast`` one launch for all tables.
KINDS = ("torch", "paper", "fast")


def implementations() -> dict[str, str]:
    """Embedding implementation name -> kind: every variant of :data:`KINDS` that is its kernel family alone
    (:attr:`~dlrmlab.variants.base.Variant.standalone`), read from :data:`dlrmlab.variants.VARIANTS`."""
    return {n: v.kind for n, v in variants.VARIANTS.items() if v.kind in KINDS and v.standalone}

#: Name suffix -> how the whole pipeline runs: ``NAME_graph`` captured in one torch CUDA graph per batch,
#: ``torch_compile`` under torch.compile (the setting: :mod:`dlrmlab.dlrm.compile_peer`). No suffix: eager.
EXECUTION_SUFFIXES: dict[str, str] = {"_graph": "graph", "_compile": "compile"}

_TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def embedding_names() -> list[str]:
    """Every name ``--embedding`` accepts."""
    impls = implementations()
    return [*impls, *(f"{n}_graph" for n in impls), *(f"{n}_compile" for n, kind in impls.items() if kind == "torch")]


def resolve(name: str) -> tuple[str, str]:
    """``"fast_graph"`` -> ``("fast", "graph")``; ``"rpf"`` -> ``("rpf", "eager")``."""
    name, impls = str(name).strip(), implementations()
    if name in impls:
        return name, "eager"
    for suffix, execution in EXECUTION_SUFFIXES.items():
        base = name[: -len(suffix)]
        if name.endswith(suffix) and base in impls:
            if execution == "compile" and impls[base] != "torch":
                raise DlrmlabError(f"{name!r}: torch.compile applies to the all-PyTorch pipeline only (torch_compile)")
            return base, execution
    raise DlrmlabError(f"unknown embedding {name!r}; valid: {', '.join(embedding_names())}")


def _check_bounds_mode(ebc: EmbeddingBagCollection, impl: str) -> None:
    """Refuse a device bounds check where the fast kernel does not read device tables, and a read-back mode
    (``fatal``, ``warning``: a sync after each launch) where the launch is captured into a CUDA graph."""
    mode = ebc.bounds_check
    if not mode.checks:
        return
    if ebc.kind != "fast" or ebc._placed is not None:
        raise DlrmlabError(f"bounds_check={mode.value!r} is the fast kernel's device check (fast, fast_graph, tables "
                           f"on the device), not {impl!r}; validate=True checks the ids on the host for any impl")
    if ebc.execution == "graph" and mode is not BoundsCheck.IGNORE:
        raise DlrmlabError(f"bounds_check={mode.value!r} reads its counters back after each launch, which a CUDA "
                           f"graph cannot hold: use 'ignore' with {impl!r}, or impl 'fast'")


def dtype_name(dtype: Any) -> str:
    for name, t in _TORCH_DTYPES.items():
        if dtype in (t, name):
            return name
    raise DlrmlabError(f"table dtype must be one of {', '.join(_TORCH_DTYPES)}, got {dtype}")


def quantized_weight(tables: Sequence[torch.Tensor], fmt: str, device: Any) -> torch.Tensor:
    """Float tables quantized to ``fmt`` (uint8 tables: rows already in it) as one packed ``(sum of rows,
    row_stride)`` uint8 tensor on ``device``, each row padded to 16 bytes for the fast kernel."""
    dims = {quant.dim_from_row_bytes(fmt, int(t.shape[1])) if t.dtype == torch.uint8 else int(t.shape[1])
            for t in tables}  # fmt: skip
    if len(dims) != 1:
        raise DlrmlabError(f"tables need one width, got {sorted(dims)}")
    dim = quant.row_format(fmt).check_dim(dims.pop())
    sizes = [int(t.shape[0]) for t in tables]
    _check_table_memory((sum(sizes), quant.row_format(fmt).row_stride(dim)), torch.uint8, device)
    out = torch.zeros((sum(sizes), quant.row_format(fmt).row_stride(dim)), dtype=torch.uint8, device=device)
    start = 0
    for t, n in zip(tables, sizes, strict=True):
        q = t.detach() if t.dtype == torch.uint8 else quant.quantize_torch(t.detach(), fmt)
        out[start : start + n, : q.shape[1]].copy_(q)
        start += n
    return out


def _check_table_memory(shape: tuple[int, int], dtype: torch.dtype, device: Any) -> None:
    """Refuse packed tables larger than the free memory where they would go, before allocating them."""
    nbytes = int(shape[0]) * int(shape[1]) * torch.empty((), dtype=dtype).element_size()
    on_gpu = torch.device(device).type == "cuda"
    checks.check_memory(f"tables of {int(shape[0]):,} rows x {int(shape[1]):,} ({str(dtype).replace('torch.', '')})",
                        host=0 if on_gpu else nbytes, device=nbytes if on_gpu else 0)


def _pack(tables: Sequence[torch.Tensor], dtype: torch.dtype, device: Any) -> torch.Tensor:
    """One (sum of rows, dim) buffer holding ``tables`` one after another (its size checked first)."""
    rows = sum(int(t.shape[0]) for t in tables)
    _check_table_memory((rows, int(tables[0].shape[1])), dtype, device)
    packed = torch.empty((rows, int(tables[0].shape[1])), dtype=dtype, device=device)
    start = 0
    for t in tables:  # copy_ converts dtype and device table by table: no second copy of them all
        packed[start : start + t.shape[0]].copy_(t)
        start += t.shape[0]
    return packed


def stream_capturing() -> bool:
    """Whether torch's current CUDA stream is being captured into a graph (then the content checks, which read
    the batch on the host, are left out). Under torch.compile the question is not asked: dynamo cannot trace
    it (the query returns a bool, not a tensor: a graph break, which ``fullgraph=True`` refuses), and what
    dynamo traces is never inside a capture: torch.compile's CUDA graphs capture the compiled code later."""
    if torch.compiler.is_compiling() or not torch.cuda.is_available():
        return False
    return torch.cuda.is_current_stream_capturing()


class EmbeddingBagCollection(torch.nn.Module):
    """Pooled embeddings of K tables for a batch of B samples: ``forward(kjt) -> [ (B, dim) ] * K``, fp32.

    ``impl`` is a name from :func:`implementations` (or ``NAME_graph``, which runs ``NAME`` and tells
    pipelines to capture). Tables are made here (seeded, DLRM's uniform(-1/sqrt(n), 1/sqrt(n)) init) unless
    ``weight``, an existing packed (sum of rows, dim) tensor, is given: it is then used as is, no copy.
    Outputs of ``fast`` are views of a buffer kept per batch size and overwritten by the next call of the
    same batch size (as a CUDA graph's outputs are); clone them to keep them.

    ``dtype`` ``"int8"``, ``"int4"`` or ``"fp8"`` (:mod:`dlrmlab.quant`; FBGEMM's row-wise formats for the
    integer ones): the tables are held quantized, ``weight`` a packed ``(sum of rows, row_stride)`` uint8
    tensor (rows padded to 16 bytes; made here by quantizing the seeded fp32 tables when not given), and
    only the fast kernel reads them (``fast``, ``fast_graph``).

    ``validate`` (default True): every forward first reads the batch's ids and offsets on the host (a copy
    and a sync on a GPU; skipped while a CUDA graph is being captured) and refuses ids outside their table
    and malformed offsets (:mod:`dlrmlab.validate`). Set it False for batches already checked (a trusted
    serving loop); shapes, dtypes and devices are always checked.

    ``bounds_check`` (the fast implementations, tables on the device; :class:`dlrmlab.config.BoundsCheck`, as
    FBGEMM's ``bounds_check_mode``): ``"none"`` (default) trusts the ids; ``"fatal"``, ``"warning"`` and
    ``"ignore"`` check every id on the device instead, with no host copy of the ids (so with ``validate=False``):
    a bad id adds nothing, and after the launch ``fatal`` raises, ``warning`` warns, ``ignore`` says nothing.
    """

    def __init__(
        self, embedding_sizes: Sequence[int], embedding_dim: int, impl: str = "torch", *, mode: str = "sum",
        dtype: Any = "float32", device: Any = None, seed: int = 0, keys: Sequence[str] | None = None,
        include_last_offset: bool = True, weight: torch.Tensor | None = None, validate: bool = True,
        placement: Any = "device", bounds_check: BoundsCheck | str | bool = "none",
    ) -> None:
        super().__init__()
        self.validate = bool(validate)
        #: what the fast kernel does with an id outside its table (checked in :func:`_check_bounds_mode`)
        self.bounds_check = BoundsCheck.parse(bounds_check)
        self.embedding_sizes = tuple(int(n) for n in embedding_sizes)
        self.embedding_dim = int(embedding_dim)
        if not self.embedding_sizes or min(self.embedding_sizes) <= 0 or self.embedding_dim <= 0:
            raise DlrmlabError(f"need tables of positive rows and width, got {self.embedding_sizes} x {embedding_dim}")
        if mode not in KERNEL_MODES:
            raise DlrmlabError(f"mode must be one of {', '.join(KERNEL_MODES)}, got {mode!r}")
        self.mode, self.include_last_offset = mode, bool(include_last_offset)
        self.keys = list(keys) if keys is not None else [f"t{t}" for t in range(len(self.embedding_sizes))]
        if len(self.keys) != len(self.embedding_sizes):
            raise DlrmlabError(f"{len(self.keys)} keys for {len(self.embedding_sizes)} tables")
        self.row_starts = [0, *np.cumsum(self.embedding_sizes).tolist()]
        shape = (self.row_starts[-1], self.embedding_dim)
        #: the quantized row format of the tables, or None for float tables
        self.table_format = str(dtype) if str(dtype) in quant.FORMATS else None
        if self.table_format is not None:
            shape = (shape[0], quant.row_format(self.table_format).row_stride(quant.row_format(
                self.table_format).check_dim(self.embedding_dim)))
            if weight is None:
                floats = self._init_tables(shape[:1] + (self.embedding_dim,), torch.float32, device, seed)
                weight = quantized_weight([floats], self.table_format, floats.device)
        self._placed = _placed_tables(self, placement, impl, dtype, weight, seed)
        if self._placed is not None:  # tables in pinned host memory (dlrmlab.dlrm.placed)
            weight = self._placed.weight
        if weight is None:
            weight = self._init_tables(shape, _TORCH_DTYPES[dtype_name(dtype)], device, seed)
        elif tuple(weight.shape) != shape or (self.table_format is not None and weight.dtype != torch.uint8):
            raise DlrmlabError(f"packed weight must have shape {shape}, got {tuple(weight.shape)}")
        self.register_buffer("weight", weight.detach())
        #: quantized rows the fast implementations serve in place of the float tables (:meth:`serve_quantized`)
        self.served_rows: torch.Tensor | None = None
        self.impl, self.execution = resolve(impl)
        self.kind = implementations()[self.impl]
        if self.table_format is not None and self.kind != "fast":
            raise DlrmlabError(f"{self.table_format} tables are read by the fast kernel only (fast, fast_graph), "
                               f"not {impl!r}")
        _check_bounds_mode(self, impl)
        self._cache: dict = {}

    def _init_tables(self, shape: tuple[int, int], dtype: torch.dtype, device: Any, seed: int) -> torch.Tensor:
        device = torch.device(device or ("cpu" if backend.SIMULATOR else "cuda"))
        _check_table_memory(shape, dtype, device)
        w = torch.empty(shape, dtype=dtype, device=device)
        g = torch.Generator(device=device).manual_seed(int(seed))
        for t, n in enumerate(self.embedding_sizes):
            b = math.sqrt(1.0 / n)
            w[self.row_starts[t] : self.row_starts[t + 1]].uniform_(-b, b, generator=g)
        return w

    # --- construction from what users have ---------------------------------------------------------------

    @classmethod
    def from_embedding_bags(
        cls, bags: Sequence[torch.nn.EmbeddingBag], impl: str = "torch", device: Any = None,
        keys: Sequence[str] | None = None, dtype: str | None = None,
    ) -> EmbeddingBagCollection:
        """Drop-in for a list of ``nn.EmbeddingBag``: their weights copied once into the packed buffer, or
        quantized into it with ``dtype`` ``"int8"``, ``"int4"`` or ``"fp8"`` (then ``impl`` is a fast one)."""
        if not bags:
            raise DlrmlabError("need at least one nn.EmbeddingBag")
        dims = {b.embedding_dim for b in bags}
        modes = {b.mode for b in bags}
        dtypes = {b.weight.dtype for b in bags}
        if len(dims) != 1 or len(dtypes) != 1:
            raise DlrmlabError(f"tables need one width and dtype, got widths {sorted(dims)}, dtypes {dtypes}")
        if len(modes) != 1 or not modes <= set(KERNEL_MODES):
            raise DlrmlabError(f"tables need one mode of {KERNEL_MODES}, got {sorted(modes)}")
        if any(b.padding_idx is not None for b in bags) or len({b.include_last_offset for b in bags}) != 1:
            raise DlrmlabError("padding_idx is not supported, and include_last_offset must agree across tables")
        device = torch.device(device) if device is not None else bags[0].weight.device
        if dtype is not None and dtype in quant.FORMATS:
            return cls([b.num_embeddings for b in bags], dims.pop(), impl, mode=modes.pop(), keys=keys, dtype=dtype,
                       weight=quantized_weight([b.weight.to(device) for b in bags], dtype, device),
                       include_last_offset=bags[0].include_last_offset)  # fmt: skip
        packed = _pack([b.weight.detach() for b in bags], dtypes.pop(), device)
        return cls([b.num_embeddings for b in bags], packed.shape[1], impl, mode=modes.pop(), keys=keys,
                   weight=packed, include_last_offset=bags[0].include_last_offset)  # fmt: skip

    @classmethod
    def from_arrays(
        cls, tables: Sequence[np.ndarray], impl: str = "torch", dtype: str = "float32", device: Any = None,
        mode: str = "sum",
    ) -> EmbeddingBagCollection:
        """From host tables (e.g. :meth:`dlrmlab.workload.Workload.make_tables`; bf16 as uint16 bits)."""
        dims = {int(t.shape[1]) for t in tables}
        if len(dims) != 1:
            raise DlrmlabError(f"tables need one width, got {sorted(dims)}")
        device = torch.device(device or ("cpu" if backend.SIMULATOR else "cuda"))
        tdt = _TORCH_DTYPES[dtype_name(dtype)]
        srcs = [torch.from_numpy(np.ascontiguousarray(t)) for t in tables]  # views of the arrays
        packed = _pack([x.view(torch.int16).view(torch.bfloat16) if tdt == torch.bfloat16 else x for x in srcs], tdt,
                       device)  # fmt: skip
        return cls([int(t.shape[0]) for t in tables], packed.shape[1], impl, mode=mode, weight=packed)

    def serve_quantized(self, fmt: str) -> EmbeddingBagCollection:
        """Serve ``fmt`` rows: quantize the float tables once (kept for :meth:`with_impl`'s fast
        implementations) and replace them, in place, by the values those rows hold, so the per-table
        implementations (torch's too) compute on the same values and all outputs compare exactly. Returns self."""
        if self.table_format is not None or self.weight.dtype != torch.float32:
            raise DlrmlabError(f"serve_quantized needs float32 tables, these are {self.table_dtype}")
        rows = quantized_weight([self.weight], fmt, self.weight.device)
        self.weight.copy_(quant.dequantize_torch(rows, fmt, self.embedding_dim))
        self.served_rows, self._served_format = rows, fmt
        self._cache.clear()
        return self

    def with_impl(self, impl: str, placement: Any = "device") -> EmbeddingBagCollection:
        """The same tables (shared, not copied; copied into pinned host memory for a host or cached
        ``placement``) under another implementation; the fast ones read the quantized rows
        :meth:`serve_quantized` made, when it was called."""
        if self.served_rows is not None and implementations()[resolve(impl)[0]] == "fast":
            return EmbeddingBagCollection(
                self.embedding_sizes, self.embedding_dim, impl, mode=self.mode, keys=self.keys,
                weight=self.served_rows, include_last_offset=self.include_last_offset, validate=self.validate,
                dtype=self._served_format, placement=placement,
            )
        return EmbeddingBagCollection(
            self.embedding_sizes, self.embedding_dim, impl, mode=self.mode, keys=self.keys, weight=self.weight,
            include_last_offset=self.include_last_offset, validate=self.validate, placement=placement,
            dtype=self.table_format or dtype_name(self.weight.dtype),
        )

    def close(self) -> None:
        """Unpin host tables now (a no-op for tables in HBM)."""
        if self._placed is not None:
            self._placed.close()

    # --- shape ---------------------------------------------------------------------------------------------

    @property
    def num_tables(self) -> int:
        return len(self.embedding_sizes)

    @property
    def name(self) -> str:
        return self.impl if self.execution == "eager" else f"{self.impl}_{self.execution}"

    def table(self, t: int) -> torch.Tensor:
        """Table ``t``: a view of the packed buffer."""
        return self.weight[self.row_starts[t] : self.row_starts[t + 1]]

    def tables(self) -> list[torch.Tensor]:
        return [self.table(t) for t in range(self.num_tables)]

    @property
    def table_dtype(self) -> str:
        """The tables' dtype or quantized row format, by name."""
        return self.table_format or dtype_name(self.weight.dtype)

    def extra_repr(self) -> str:
        return (f"impl={self.name}, tables={self.num_tables}, dim={self.embedding_dim}, mode={self.mode}"
                + (f", dtype={self.table_format}" if self.table_format else ""))

    # --- validation (host only: shapes, dtypes, devices) ----------------------------------------------------

    def check(self, sparse: KeyedJaggedTensor) -> None:
        """Raise DlrmlabError for input this stage cannot run, before anything is launched."""
        if not isinstance(sparse, KeyedJaggedTensor):
            raise DlrmlabError(f"sparse input must be a KeyedJaggedTensor, got {type(sparse).__name__}")
        if sparse.num_keys != self.num_tables:
            raise DlrmlabError(f"sparse input has {sparse.num_keys} keys, the embedding stage {self.num_tables} tables")
        if self._placed is not None:  # tables in host memory, inputs anywhere: only the values are checked
            if self.validate:
                self.check_values(sparse)
            return
        self._check_devices(sparse.values.device)
        if sparse.weights is not None and self.mode != "sum":
            raise DlrmlabError("per-sample weights need mode 'sum' (as in torch)")
        capturing = stream_capturing()
        if self.validate and not capturing:
            self.check_values(sparse)

    def check_values(self, sparse: KeyedJaggedTensor) -> None:
        """Ids within each key's table and offsets well formed, read on the host (a sync on a GPU)."""
        off = checks.offsets(checks.host_copy(sparse.offsets), int(sparse.values.numel()), True, "sparse offsets")
        values = checks.host_copy(sparse.values)
        starts, b = sparse.value_starts(), sparse.stride
        for t, key in enumerate(sparse.keys):
            if int(off[t * b]) != starts[t]:
                raise DlrmlabError(f"sparse offsets[{t * b}] = {int(off[t * b])}, but key {key!r} starts at id "
                                   f"{starts[t]} (length_per_key {sparse.length_per_key})")
            checks.ids(values[starts[t] : starts[t + 1]], self.embedding_sizes[t], f"sparse values of key {key!r}")

    def _check_devices(self, inputs: torch.device) -> None:
        tables = self.weight.device
        if inputs != tables:
            raise DlrmlabError(
                f"tables are on {tables} but the sparse inputs on {inputs}: move the module (.to) or the batch"
            )
        if self.kind != "torch" and backend.SIMULATOR == (tables.type == "cuda"):
            want = "the CPU (simulator mode)" if backend.SIMULATOR else "a CUDA device"
            raise DlrmlabError(f"dlrmlab kernels ({self.impl}) need the tables on {want}; they are on {tables}")

    # --- forward -------------------------------------------------------------------------------------------

    def forward(self, sparse: KeyedJaggedTensor) -> list[torch.Tensor]:
        """One (B, dim) fp32 tensor per table, in key order (what a list of nn.EmbeddingBag returns)."""
        if self._placed is not None:
            return self._forward_placed(sparse)
        self.check(sparse)
        if self.kind == "fast":
            return self._fast(sparse)
        return [self._one_table(t, ids, off, w) for t, (ids, off, w) in enumerate(sparse.split())]

    def _forward_placed(self, sparse: KeyedJaggedTensor) -> list[torch.Tensor]:
        """Host or cached tables: the inputs may be on the GPU while the tables are in host memory."""
        self.check(sparse)
        b = sparse.stride
        out, out_nb = self._output(self.num_tables * b, key=("placed",))
        self._placed.forward(sparse, out, out_nb)
        return list(out.view(self.num_tables, b, self.embedding_dim).unbind(0))

    def prefetch(self, sparse: KeyedJaggedTensor) -> None:
        """Cached tables: start fetching ``sparse``'s missed rows while the current batch computes (a no-op
        for tables in HBM or read from host memory directly)."""
        if self._placed is not None:
            self._placed.prefetch(sparse)

    def forward_tables(
        self, indices: Sequence[torch.Tensor], offsets: Sequence[torch.Tensor],
        per_sample_weights: Sequence[torch.Tensor | None] | None = None,
    ) -> list[torch.Tensor]:
        """Drop-in for ``[bag(i, o, per_sample_weights=w) for bag, i, o, w in ...]`` over a list of
        nn.EmbeddingBag (offsets with or without the last one, as ``include_last_offset`` says). Per-table
        implementations run on the lists as given (plain Python and torch ops: torch.compile traces it);
        ``fast`` packs them first (:meth:`pack`)."""
        if self.kind == "fast":
            return self.forward(self.pack(indices, offsets, per_sample_weights))
        if not len(indices) == len(offsets) == self.num_tables:
            raise DlrmlabError(f"need {self.num_tables} index and offset tensors, got {len(indices)}, {len(offsets)}")
        psw = list(per_sample_weights) if per_sample_weights is not None else [None] * self.num_tables
        if any(w is not None for w in psw) and self.mode != "sum":
            raise DlrmlabError("per-sample weights need mode 'sum' (as in torch)")
        outs = []
        capturing = stream_capturing()
        for t in range(self.num_tables):
            ids, off = indices[t], offsets[t]
            self._check_devices(ids.device)
            if self.validate and not capturing:
                checks.per_sample_weights(psw[t], int(ids.numel()), f"per_sample_weights[{t}]")
                checks.offsets(checks.host_copy(off), int(ids.numel()), self.include_last_offset, f"offsets[{t}]")
                checks.ids(checks.host_copy(ids), self.embedding_sizes[t], f"indices[{t}]")
            if not self.include_last_offset:
                off = F.pad(off, (0, 1), value=ids.numel())
            outs.append(self._one_table(t, ids, off, psw[t]))
        return outs

    def pack(
        self, indices: Sequence[torch.Tensor], offsets: Sequence[torch.Tensor],
        per_sample_weights: Sequence[torch.Tensor | None] | None = None,
    ) -> KeyedJaggedTensor:
        """Per-table (ids, offsets) lists as one KeyedJaggedTensor: device ops only (shapes are known on the
        host), so it can run inside a captured graph."""
        if not len(indices) == len(offsets) == self.num_tables:
            raise DlrmlabError(f"need {self.num_tables} index and offset tensors, got {len(indices)}, {len(offsets)}")
        extra = 0 if self.include_last_offset else 1
        bags = {int(o.numel()) - 1 + extra for o in offsets}
        if len(bags) != 1:
            raise DlrmlabError(f"every table needs the same batch size; offsets give {sorted(bags)}")
        lengths = [int(i.numel()) for i in indices]
        idt = indices[0].dtype
        local = [o.to(idt) if self.include_last_offset else F.pad(o.to(idt), (0, 1), value=n)
                 for o, n in zip(offsets, lengths, strict=True)]  # fmt: skip
        starts = [0, *np.cumsum(lengths).tolist()]
        glob = [o[:-1] + s for o, s in zip(local, starts, strict=False)] + [local[-1][-1:] + starts[-2]]
        w = None
        if per_sample_weights is not None and any(p is not None for p in per_sample_weights):
            if any(p is None for p in per_sample_weights):
                raise DlrmlabError("per_sample_weights must be given for all tables or none")
            w = torch.cat(list(per_sample_weights))
        vals = torch.cat([i.to(idt) for i in indices])
        return KeyedJaggedTensor(self.keys, vals, torch.cat(glob).to(torch.int64), lengths, w, local)

    def _one_table(self, t: int, ids: torch.Tensor, off: torch.Tensor, w: torch.Tensor | None) -> torch.Tensor:
        table = self.table(t)
        if self.kind == "torch":
            out = F.embedding_bag(ids, table, off, mode=self.mode, per_sample_weights=w, include_last_offset=True)
            return out if out.dtype == torch.float32 else out.float()
        return self._paper(t, ids, off, w)

    def _paper(self, t: int, ids: torch.Tensor, off: torch.Tensor, w: torch.Tensor | None) -> torch.Tensor:
        """One paper-family launch into this module's preallocated output for table ``t``: no allocation
        and no Numba deallocation (whose cuMemFree would synchronize) per call, so it is capturable."""
        b = off.numel() - 1
        out, out_nb = self._output(b, key=("paper", t))
        cfg = self._cached(("papercfg", w is not None), lambda: PaperConfig.from_knobs(
            dtype_name(self.weight.dtype), Combine(self.mode, w is not None, False),
            **variants.knobs_for(self.impl, {})["paper"]))  # fmt: skip
        table_nb = self._cached(("table", t), lambda: numba_view(self.table(t).reshape(-1)))
        psw = numba_view(w) if w is not None else self._cached(("nopsw",), lambda: numba_view(
            torch.zeros(1, dtype=torch.float32, device=self.weight.device)))  # fmt: skip
        launch.paper(cfg, table_nb, self.embedding_dim, numba_view(ids), numba_view(off), psw, -1, out_nb,
                     self._stream())  # fmt: skip
        return out

    def _fast(self, sparse: KeyedJaggedTensor) -> list[torch.Tensor]:
        b = sparse.stride
        out, out_nb = self._output(self.num_tables * b)
        _, toff_nb = self._table_offsets(b)
        psw = None if sparse.weights is None else numba_view(sparse.weights)
        jagged = (numba_view(sparse.values), numba_view(sparse.offsets), toff_nb, psw)
        cfg = self._fast_config(sparse.values.numel() / max(self.num_tables * b, 1), psw is not None)
        fused.fused_forward(self._packed(), jagged, mode=self.mode, out=out_nb, stream=self._stream(), config=cfg)
        return list(out.view(self.num_tables, b, self.embedding_dim).unbind(0))

    def _fast_config(self, pooling_mean: float, weighted: bool) -> Any:
        """The fast kernel's configuration for this shape, chosen once (the choice reads the tuning cache
        from disk); None lets :func:`dlrmlab.fused.fused_forward` choose per call."""

        def make():
            return fused.configure_here(self.embedding_dim, self.table_dtype, pooling_mean,
                                        combine=Combine(self.mode, weighted, False),
                                        bounds_check=self.bounds_check)[0]  # fmt: skip

        return self._cached(("fastcfg", round(pooling_mean, 3), weighted), make)

    # --- buffers made once, outside forward's steady state --------------------------------------------------

    def _cached(self, key: tuple, make: Any) -> Any:
        """Per-module cache keyed also by the tables' address, so ``.to(device)`` invalidates it."""
        full = (self.weight.device, self.weight.data_ptr(), *key)
        if full not in self._cache:
            self._cache[full] = make()
        return self._cache[full]

    def _output(self, rows: int, key: tuple = ("fast",)) -> tuple[torch.Tensor, Any]:
        def make():
            device = self.weight.device if self._placed is None else ("cpu" if backend.SIMULATOR else "cuda")
            t = torch.empty((rows, self.embedding_dim), dtype=torch.float32, device=device)
            return t, numba_view(t)

        return self._cached((*key, "out", rows), make)

    def _table_offsets(self, b: int) -> tuple[torch.Tensor, Any]:
        def make():
            t = torch.arange(0, (self.num_tables + 1) * b, b, dtype=torch.int64, device=self.weight.device)
            return t, numba_view(t)

        return self._cached(("toff", b), make)

    def _packed(self) -> Any:
        def make():
            base = torch.tensor(self.row_starts[:-1], dtype=torch.int64, device=self.weight.device)
            base = base * int(self.weight.shape[1])  # elements (bytes, for quantized rows) per row
            tables = fused.PackedTables(numba_view(self.weight.view(-1)), numba_view(base), self.embedding_sizes,
                                       self.embedding_dim, self.table_dtype)  # fmt: skip
            return tables, base  # keep ``base`` alive: the Numba view does not own it

        return self._cached(("packed",), make)[0]

    def _stream(self) -> Any:
        if backend.SIMULATOR:
            return 0
        ptr = torch.cuda.current_stream(self.weight.device).cuda_stream
        return self._cached(("stream", ptr), lambda: cuda.external_stream(ptr))

    def clear_buffers(self) -> None:
        """Drop the per-batch-size outputs and views (they are remade on the next call)."""
        self._cache.clear()


def _placed_tables(ebc: EmbeddingBagCollection, placement: Any, impl: str, dtype: Any, weight: Any, seed: int) -> Any:
    """``None`` for tables in HBM (``placement="device"``), else their pinned host home."""
    p = Placement.parse(placement)
    if p.kind == "device":
        return None
    from dlrmlab.dlrm.placed import PlacedTables  # import cycle: dlrm.placed builds on this module

    name, execution = resolve(impl)
    return PlacedTables(ebc.embedding_sizes, ebc.embedding_dim, dtype_name(dtype), p, ebc.mode, name, execution,
                        weight, seed)
