"""NVIDIA cuEmbed as a benchmark peer: variants ``cuembed`` and ``cuembed_graph``.

cuEmbed (github.com/NVIDIA/cuEmbed, Apache-2.0) is a header-only CUDA library of embedding lookups, the
fastest public one we know of. dlrmlab does not ship any of it. The user names a copy of it (the directory
that holds ``cuembed/include/embedding_lookup.cuh``) in ``DLRMLAB_CUEMBED_DIR`` or as the ``cuembed_dir``
knob; dlrmlab compiles its own small C shim (``cuembed_shim.cu``, beside this file) against those headers
with ``nvcc`` at run time, caches the shared library, and calls ``cuembed::EmbeddingForward`` through
ctypes on the case's device arrays and stream::

    nvcc -O3 -std=c++17 -shared -Xcompiler -fPIC -gencode arch=compute_90,code=sm_90 \\
         -DDLRMLAB_CUEMBED_TABLES=1 -DDLRMLAB_CUEMBED_INDICES=2 -I $DLRMLAB_CUEMBED_DIR -o lib....so cuembed_shim.cu

One library per (table dtype, index dtype), keyed by a hash of the shim, every cuEmbed header, the nvcc
version, the GPU architecture and the flags, under ``$DLRMLAB_CACHE_DIR/cuembed`` (default
``~/.cache/dlrmlab/cuembed``); built into a temporary file and renamed, so concurrent builds never leave
a half-written library.

What cuEmbed supports, and so these variants: sum and mean (weights with sum, as torch), float32 and
float16 tables (float16 sums are kept in float32 and written as float16), int32 and int64 ids with offsets
of the same type, CSR bags (``layout="csr"``, the default: the case's own ``include_last_offset`` offsets,
as every other variant gets them) or fixed hotness (``layout="fixed"``: no offsets, ids of a bag staged in
shared memory; needs bags of one length; ``"auto"`` picks it when the case's bags allow). Refused up
front, naming the variant and the knob: ``mode="max"``, bfloat16 tables, ``layout="fixed"`` on bags of
mixed lengths, rows cuEmbed cannot split into loads.

When nvcc, the directory or a GPU is missing, the variants raise :class:`~dlrmlab.peers.PeerUnavailable`
with the reason (:func:`available` says it without raising); the harness records a skipped row.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path
from typing import Any

import numpy as np

from dlrmlab import backend, cudart
from dlrmlab.backend import cuda
from dlrmlab.errors import DlrmlabError
from dlrmlab.graph import captured
from dlrmlab.peers import PeerUnavailable
from dlrmlab.prepared import Prepared, event_pairs

#: Environment variable naming the cuEmbed directory (the folder that holds ``cuembed/``).
ENV_DIR = "DLRMLAB_CUEMBED_DIR"
#: cuEmbed's forward-lookup header, relative to that directory.
HEADER = Path("cuembed") / "include" / "embedding_lookup.cuh"
#: dlrmlab's C shim over ``cuembed::EmbeddingForward`` (package data).
SHIM = Path(__file__).with_name("cuembed_shim.cu")
#: nvcc flags of every build (the architecture, the instantiation and the paths are added per build).
NVCC_FLAGS: tuple[str, ...] = ("-O3", "-std=c++17", "-shared", "-Xcompiler", "-fPIC")
#: The shim's ABI version (``dlrmlab_cuembed_abi()``); bumped with any change of an entry point.
ABI = 1
#: Nsight Compute filter for cuEmbed's forward kernel.
KERNEL_REGEX = "EmbeddingLookUpKernel"
LAYOUTS = ("csr", "fixed", "auto")
#: The peer's knobs: how bags are laid out, and where cuEmbed's headers are.
KNOBS = frozenset({"layout", "cuembed_dir"})

#: Table dtypes cuEmbed's forward pass supports: dtype -> (shim code, instantiation bit).
_TABLE_DTYPES = {"float32": (0, 1), "float16": (1, 2)}
#: Index dtypes: dtype -> (bytes, instantiation bit); offsets have the ids' dtype.
_INDEX_DTYPES = {"int32": (4, 1), "int64": (8, 2)}
_MODES = {"sum": 0, "mean": 1}
#: cuEmbed stages a fixed-hotness bag's ids (and weights) in under 48 KB of shared memory.
_FIXED_SMEM_BYTES = 48 * 1024
_INT32_MAX = 2**31 - 1

UNAVAILABLE = "cuEmbed peer unavailable"


# --- where things are ------------------------------------------------------------------------------------


def find_dir(directory: str | os.PathLike | None = None) -> Path:
    """The cuEmbed directory (argument, else ``$DLRMLAB_CUEMBED_DIR``), checked; PeerUnavailable if not."""
    raw = directory if directory not in (None, "") else os.environ.get(ENV_DIR, "")
    if not raw:
        raise PeerUnavailable(
            f"{UNAVAILABLE}: {ENV_DIR} not set (set it, or pass cuembed_dir=, to the directory that holds "
            f"{HEADER.as_posix()}, e.g. a clone of github.com/NVIDIA/cuEmbed)"
        )
    d = Path(raw).expanduser().resolve()
    if not (d / HEADER).is_file():
        hint = ""
        if (d / "include" / HEADER.name).is_file():
            hint = f" (that is the cuembed/ folder itself: give its parent, {d.parent})"
        raise PeerUnavailable(f"{UNAVAILABLE}: no {HEADER.as_posix()} under {d}{hint}")
    return d


def find_nvcc() -> str:
    """The nvcc to build with: on PATH, else in ``$CUDA_HOME/bin`` or ``$CUDA_PATH/bin``."""
    found = shutil.which("nvcc")
    if found:
        return found
    for var in ("CUDA_HOME", "CUDA_PATH"):
        root = os.environ.get(var)
        if root and os.access(Path(root) / "bin" / "nvcc", os.X_OK):
            return str(Path(root) / "bin" / "nvcc")
    raise PeerUnavailable(f"{UNAVAILABLE}: nvcc not found on PATH (nor in $CUDA_HOME/bin or $CUDA_PATH/bin)")


def available(directory: str | os.PathLike | None = None) -> tuple[bool, str]:
    """``(True, what will be used)`` or ``(False, why not)``: a GPU, the directory, nvcc. Builds nothing."""
    try:
        if backend.SIMULATOR:
            raise PeerUnavailable(f"{UNAVAILABLE}: no CUDA GPU (simulator mode); cuEmbed runs only on a GPU")
        d = find_dir(directory)
        nvcc = find_nvcc()
    except PeerUnavailable as e:
        return False, str(e)
    return True, f"cuEmbed from {d}, built with {nvcc}"


def unavailable(directory: str | os.PathLike | None = None) -> str | None:
    """Why the cuEmbed variants cannot run here, or None (the form of ``Variant.unavailable``)."""
    ok, why = available(directory)
    return None if ok else why


def cache_dir() -> Path:
    """``$DLRMLAB_CACHE_DIR/cuembed`` (default ``~/.cache/dlrmlab/cuembed``)."""
    root = os.environ.get("DLRMLAB_CACHE_DIR") or Path.home() / ".cache" / "dlrmlab"
    return Path(root) / "cuembed"


# --- the build -------------------------------------------------------------------------------------------


def header_files(directory: Path) -> dict[str, bytes]:
    """Every file under ``<directory>/cuembed/include``, by relative path: what the shim can include."""
    root = directory / "cuembed" / "include"
    return {
        p.relative_to(directory).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.suffix in (".cuh", ".h", ".hpp", ".inl")
    }


@lru_cache(maxsize=8)
def nvcc_version(nvcc: str) -> str:
    """``nvcc --version``'s text (part of the cache key: a new compiler builds a new library)."""
    try:
        out = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.SubprocessError) as e:
        raise PeerUnavailable(f"{UNAVAILABLE}: {nvcc} --version failed: {e}") from None
    if out.returncode != 0:
        raise PeerUnavailable(f"{UNAVAILABLE}: {nvcc} --version exited with {out.returncode}")
    return out.stdout.strip()


def gpu_arch(props: Mapping[str, Any] | None = None) -> str:
    """The GPU's compute capability as nvcc spells it: ``"90"`` on the H100 (sm_90)."""
    if props is None:
        props = cudart.device_properties()
    return f"{int(props['major'])}{int(props['minor'])}"


def instantiation_flags(table_dtype: str, index_dtype: str) -> list[str]:
    """The ``-D`` flags that make the shim instantiate cuEmbed for one (table dtype, index dtype)."""
    return [
        f"-DDLRMLAB_CUEMBED_TABLES={_TABLE_DTYPES[table_dtype][1]}",
        f"-DDLRMLAB_CUEMBED_INDICES={_INDEX_DTYPES[index_dtype][1]}",
    ]


def build_command(
    nvcc: str, source: str | os.PathLike, include_dir: str | os.PathLike, arch: str, output: str | os.PathLike,
    table_dtype: str = "float32", index_dtype: str = "int64",
) -> list[str]:  # fmt: skip
    """The nvcc command line that builds the shim into ``output``."""
    return [
        str(nvcc), *NVCC_FLAGS, "-gencode", f"arch=compute_{arch},code=sm_{arch}",
        *instantiation_flags(table_dtype, index_dtype), "-I", str(include_dir), "-o", str(output), str(source),
    ]  # fmt: skip


def cache_key(
    shim_source: bytes, headers: Mapping[str, bytes], nvcc_version: str, arch: str, flags: Sequence[str]
) -> str:
    """sha256 over everything the library depends on: shim, headers (names and contents), nvcc, arch, flags."""
    h = hashlib.sha256()

    def put(tag: str, data: bytes) -> None:
        h.update(f"{tag}:{len(data)}:".encode())
        h.update(data)

    put("abi", str(ABI).encode())
    put("shim", shim_source)
    for name in sorted(headers):
        put(f"header {name}", headers[name])
    put("nvcc", nvcc_version.encode())
    put("arch", arch.encode())
    put("flags", "\0".join(flags).encode())
    return h.hexdigest()


def headers_digest(headers: Mapping[str, bytes]) -> str:
    """A short fingerprint of the cuEmbed headers used (recorded in result rows)."""
    return cache_key(b"", headers, "", "", [])[:12]


@dataclass(frozen=True)
class Build:
    """Where a library is, or will be, and how it is made."""

    path: Path
    key: str
    command: list[str]
    directory: Path
    arch: str
    headers: str


def plan_build(
    directory: str | os.PathLike | None = None,
    table_dtype: str = "float32",
    index_dtype: str = "int64",
    *,
    arch: str | None = None,
    nvcc: str | None = None,
) -> Build:
    """The library for (table dtype, index dtype): its cached path, cache key and build command."""
    if table_dtype not in _TABLE_DTYPES:
        raise DlrmlabError(f"cuEmbed tables are float32 or float16, not {table_dtype!r}")
    if index_dtype not in _INDEX_DTYPES:
        raise DlrmlabError(f"cuEmbed ids are int32 or int64, not {index_dtype!r}")
    d = find_dir(directory)
    nvcc = nvcc or find_nvcc()
    arch = arch or gpu_arch()
    headers = header_files(d)
    flags = [*NVCC_FLAGS, f"sm_{arch}", *instantiation_flags(table_dtype, index_dtype)]
    key = cache_key(SHIM.read_bytes(), headers, nvcc_version(nvcc), arch, flags)
    path = cache_dir() / f"libdlrmlab_cuembed_{table_dtype}_{index_dtype}_sm{arch}_{key[:16]}.so"
    cmd = build_command(nvcc, SHIM, d, arch, path, table_dtype, index_dtype)
    return Build(path, key, cmd, d, arch, headers_digest(headers))


def build(
    directory: str | os.PathLike | None = None,
    table_dtype: str = "float32",
    index_dtype: str = "int64",
    *,
    arch: str | None = None,
    nvcc: str | None = None,
    force: bool = False,
    timeout_s: float = 900,
) -> Build:
    """Build the shim (unless its library is cached) and return the :class:`Build`.

    nvcc writes a temporary file beside the final one, which is then renamed over it: readers and
    concurrent builders see the old library, the new one or none, never half of one.
    """
    b = plan_build(directory, table_dtype, index_dtype, arch=arch, nvcc=nvcc)
    if b.path.is_file() and not force:
        return b
    try:
        b.path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PeerUnavailable(f"{UNAVAILABLE}: cannot create the cache directory {b.path.parent}: {e}") from None
    tmp = b.path.with_name(f".{b.path.stem}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp.so")
    cmd = [str(tmp) if a == str(b.path) else a for a in b.command]
    try:
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
        except (OSError, subprocess.SubprocessError) as e:
            raise PeerUnavailable(f"{UNAVAILABLE}: nvcc could not run: {e}") from None
        if out.returncode != 0 or not tmp.is_file():
            tail = "\n".join((out.stderr or out.stdout).strip().splitlines()[-15:])
            raise PeerUnavailable(
                f"{UNAVAILABLE}: building the shim failed (nvcc exit {out.returncode}):\n{tail}\n"
                f"command: {' '.join(cmd)}"
            )
        os.replace(tmp, b.path)
    finally:
        tmp.unlink(missing_ok=True)
    info = {
        "command": b.command, "key": b.key, "arch": b.arch, "cuembed_dir": str(b.directory),
        "cuembed_headers": b.headers, "nvcc_version": nvcc_version(b.command[0]),
    }  # fmt: skip
    meta = b.path.with_suffix(".json")
    tmp_meta = meta.with_name(f".{meta.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp_meta.write_text(json.dumps(info, indent=1) + "\n")
        os.replace(tmp_meta, meta)
    except OSError:
        tmp_meta.unlink(missing_ok=True)  # the record of how it was built is a courtesy, not a requirement
    return b


# --- the library -----------------------------------------------------------------------------------------


class Library:
    """The shim loaded with ctypes. ``forward`` returns a cudaError_t (0: success)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        try:
            self._dll = ctypes.CDLL(str(self.path))
        except OSError as e:
            raise PeerUnavailable(f"{UNAVAILABLE}: cannot load {self.path}: {e}") from None
        abi = self._dll.dlrmlab_cuembed_abi()
        if abi != ABI:
            raise PeerUnavailable(f"{UNAVAILABLE}: {self.path} has shim ABI {abi}, expected {ABI}: rebuild it")
        vp, i = ctypes.c_void_p, ctypes.c_int
        f = self._dll.dlrmlab_cuembed_forward
        f.argtypes = [i, i, vp, i, vp, vp, vp, i, i, i, vp, vp]
        f.restype = i
        self._forward = f
        self._dll.dlrmlab_cuembed_supports.argtypes = [i, i]
        self._dll.dlrmlab_cuembed_supports.restype = i
        self._dll.dlrmlab_cuembed_error_name.argtypes = [i]
        self._dll.dlrmlab_cuembed_error_name.restype = ctypes.c_char_p

    def supports(self, table_dtype: str, index_dtype: str) -> bool:
        return bool(
            self._dll.dlrmlab_cuembed_supports(_TABLE_DTYPES[table_dtype][0], _INDEX_DTYPES[index_dtype][0])
        )

    def forward(
        self, table_code: int, index_bytes: int, table: int, dim: int, indices: int, offsets: int | None,
        weights: int | None, batch: int, num_hots: int, mode: int, out: int, stream: int | None,
    ) -> int:  # fmt: skip
        """One table's lookup (raw device pointers, a cudaStream_t as an int); returns the CUDA error code."""
        return self._forward(
            table_code, index_bytes, table, dim, indices, offsets, weights, batch, num_hots, mode, out, stream
        )

    def error_name(self, code: int) -> str:
        name = self._dll.dlrmlab_cuembed_error_name(int(code))
        return name.decode() if name else f"cudaError {code}"


_LOADED: dict[Path, Library] = {}


def load(
    directory: str | os.PathLike | None = None, table_dtype: str = "float32", index_dtype: str = "int64"
) -> tuple[Library, Build]:
    """Build if needed, then load (once per library path) the shim for (table dtype, index dtype)."""
    b = build(directory, table_dtype, index_dtype)
    lib = _LOADED.get(b.path)
    if lib is None:
        lib = _LOADED[b.path] = Library(b.path)
    if not lib.supports(table_dtype, index_dtype):
        raise PeerUnavailable(f"{UNAVAILABLE}: {b.path} was not built for {table_dtype} tables, {index_dtype} ids")
    return lib, b


# --- what a case asks of cuEmbed -------------------------------------------------------------------------


def _vector_threads(dim: int, elem_bytes: int) -> int | None:
    """Threads cuEmbed gives one row (its documented load-width rule), None if it cannot split the row."""
    row = dim * elem_bytes
    if dim <= 0 or row % 4:
        return None
    load = 16 if (row % 16 == 0 and row > 64) else 8 if row % 8 == 0 else 4
    return row // load if row // load <= 1024 else None


def plan_case(case: Any, layout: str = "csr", variant: str = "cuembed") -> tuple[str, int]:
    """``(layout, num_hots)`` for ``case``: ``num_hots`` is the bag length for ``"fixed"``, else 0.

    Everything cuEmbed cannot do is refused here, before anything is built or allocated, with a message
    naming the variant and the knob.
    """
    stage = case.stage
    if case.mode not in _MODES:
        raise DlrmlabError(f"variant {variant!r}: mode={case.mode!r} is not supported by cuEmbed (sum, mean)")
    if case.dtype not in _TABLE_DTYPES:
        raise DlrmlabError(
            f"variant {variant!r}: dtype={case.dtype!r} tables are not supported by cuEmbed (float32, float16)"
        )
    if stage.index_dtype not in _INDEX_DTYPES:
        raise DlrmlabError(f"variant {variant!r}: index_dtype={stage.index_dtype!r} is not supported (int32, int64)")
    if layout not in LAYOUTS:
        raise DlrmlabError(f"variant {variant!r}: layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    elem = 4 if case.dtype == "float32" else 2
    if _vector_threads(case.dim, elem) is None:
        raise DlrmlabError(
            f"variant {variant!r}: cuEmbed cannot split rows of dim={case.dim} {case.dtype} into loads "
            f"(a row must be a multiple of 4 bytes and at most 1,024 loads)"
        )
    if stage.batch_size > _INT32_MAX:
        raise DlrmlabError(f"variant {variant!r}: batch={stage.batch_size} is over cuEmbed's int range")
    lengths: set[int] = set()
    for hb in case.host_batches:
        for tb in hb.tables:
            if int(tb.offsets[-1]) > _INT32_MAX:
                raise DlrmlabError(f"variant {variant!r}: over 2**31 ids in one table's batch (cuEmbed uses int)")
            lengths.update(int(x) for x in np.unique(np.diff(tb.offsets)))
    uniform = len(lengths) == 1 and next(iter(lengths)) > 0
    hots = next(iter(lengths)) if uniform else 0
    per_id = _INDEX_DTYPES[stage.index_dtype][0] + (elem if case.weighted else 0)
    fits = hots * per_id < _FIXED_SMEM_BYTES
    if layout == "auto":
        layout = "fixed" if uniform and fits else "csr"
    if layout == "csr":
        return "csr", 0
    if not uniform:
        raise DlrmlabError(
            f"variant {variant!r}: layout='fixed' needs every bag to have one length > 0; this case's pooling "
            f"is {stage.pooling} (bag lengths {min(lengths)}..{max(lengths)}): use layout='csr'"
        )
    if not fits:
        raise DlrmlabError(
            f"variant {variant!r}: layout='fixed' stages a bag's {hots} ids in shared memory, "
            f"{hots * per_id} bytes, over cuEmbed's 48 KB: use layout='csr'"
        )
    return "fixed", hots


# --- the variants ----------------------------------------------------------------------------------------


def _ptr(arr: Any) -> int:
    return int(arr.device_ctypes_pointer.value or 0)


def _forward_args(case: Any, layout: str, hots: int, outs: list[Any]) -> tuple[list[list[tuple]], list[Any]]:
    """Per batch, per table: ``Library.forward``'s arguments but the stream, resolved once so a run only calls.

    Also the device arrays made for them (weights in the table dtype), which must live as long as the variant.
    """
    batch, dim = case.stage.batch_size, case.dim
    table_code, index_bytes = _TABLE_DTYPES[case.dtype][0], _INDEX_DTYPES[case.stage.index_dtype][0]
    mode = _MODES[case.mode]
    keep: list[Any] = []  # device arrays only this variant made (weights in the table dtype)
    calls: list[list[tuple]] = []  # per batch, per table: forward's arguments but the stream
    for hb, db in zip(case.host_batches, case.dev_batches, strict=True):
        per_table = []
        for t, (htb, dtb) in enumerate(zip(hb.tables, db.tables, strict=True)):
            w = None
            if case.weighted:
                if case.dtype == "float32":
                    w = _ptr(dtb.psw)
                else:  # cuEmbed takes weights in the table's dtype
                    wd = cuda.to_device(np.asarray(htb.per_sample_weights, np.float16))
                    keep.append(wd)
                    w = _ptr(wd)
            off = _ptr(dtb.offsets) if layout == "csr" else None
            per_table.append((
                table_code, index_bytes, _ptr(case.dev_tables[t]), dim, _ptr(dtb.indices), off, w, batch, hots,
                mode, _ptr(outs[t]),
            ))  # fmt: skip
        calls.append(per_table)
    return calls, keep


def _prepare(case: Any, graph: bool, layout: str = "csr", cuembed_dir: str | os.PathLike | None = None) -> Prepared:
    """The cuEmbed variants: refuse what cuEmbed cannot do, build and load the shim, then closures over its calls."""
    name = "cuembed_graph" if graph else "cuembed"
    layout, hots = plan_case(case, layout, name)  # knob errors first, on any machine
    ok, why = available(cuembed_dir)
    if not ok:
        raise PeerUnavailable(why)
    lib, b = load(cuembed_dir, case.dtype, case.stage.index_dtype)

    batch, dim, stream = case.stage.batch_size, case.dim, case.stream
    out_dtype = np.float32 if case.dtype == "float32" else np.float16
    outs = [cuda.device_array((batch, dim), out_dtype) for _ in case.dev_tables]
    calls, keep = _forward_args(case, layout, hots, outs)

    def call(i: int, t: int, args: tuple, stream_handle: int) -> None:
        code = lib.forward(*args, stream_handle)
        if code:
            raise DlrmlabError(f"variant {name!r}: cuEmbed's forward failed on batch {i}, table {t}: "
                               f"{lib.error_name(code)}")  # fmt: skip

    def enqueue(i: int, stream_handle: int) -> None:
        for t, args in enumerate(calls[i]):
            call(i, t, args, stream_handle)

    handle = cudart.stream_ptr(stream)
    batches = [lambda st, i=i: enqueue(i, cudart.stream_ptr(st)) for i in range(case.n_batches)]
    with contextlib.ExitStack() as stack:  # popped into Prepared.close: the graphs, then the weights made here
        stack.callback(keep.clear)
        graphs = stack.enter_context(captured(batches, stream, outs)) if graph else []
        close = stack.pop_all().close

    def run(i: int) -> None:
        if graphs:
            graphs[i].replay()
        else:
            enqueue(i, handle)

    def result(i: int) -> list[np.ndarray]:
        run(i)
        stream.synchronize()
        return [o.copy_to_host().astype(np.float32) for o in outs]

    def per_kernel(i: int):
        """One event pair per table's EmbeddingForward call (one kernel each)."""
        return event_pairs(stream, (partial(call, i, t, a, handle) for t, a in enumerate(calls[i])))

    params = {
        "layout": layout, "graph": graph, "num_hots": hots, "arch": f"sm_{b.arch}", "cuembed_headers": b.headers,
        "cuembed_build": b.key[:12],
    }  # fmt: skip
    return Prepared(run, result, params, None if graph else per_kernel, close)


def prepare(case: Any, knobs: Mapping[str, Mapping[str, Any]], graph: bool = False) -> Prepared:
    """cuEmbed, one ``EmbeddingForward`` call per table on ``case.stream``; ``graph``: those calls captured in
    one CUDA graph per batch, replayed. Knobs (validated by the variants table): ``layout`` (``"csr"``
    default, ``"fixed"``, ``"auto"``), ``cuembed_dir`` (default ``$DLRMLAB_CUEMBED_DIR``)."""
    return _prepare(case, graph, **dict(knobs.get("cuembed", {})))
