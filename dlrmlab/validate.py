"""Checks every public entry point runs before it allocates or launches anything.

One module, called from the CLI (shape options), :func:`dlrmlab.api.embedding_bag`, the torch module
(:class:`dlrmlab.dlrm.embedding.EmbeddingBagCollection`), the fast path (:class:`dlrmlab.fused.PackedTables`,
:func:`dlrmlab.fused.fused_forward`), the benchmark case and the NumPy reference. Every error is a
:class:`DlrmlabError` that names the argument and the value.

* memory: :func:`check_memory` compares an estimate of a request (host and device bytes: tables, ids,
  outputs) with what is free (host: psutil, else ``os.sysconf``, and a cgroup limit when one is set; device:
  ``cuda.current_context().get_memory_info()``) and refuses with both sizes. In the simulator "device"
  arrays live in host memory, so both count against the host.
* ids (:func:`ids`): negative or >= rows, with how many and the first (value and position);
* offsets (:func:`offsets`): not starting at 0, decreasing, past the end;
* :func:`per_sample_weights`: length and dtype; :func:`integer_array`; :func:`contiguous`; :func:`aligned`.

Content checks read the arrays on the host (a device array is copied there first). Trusted hot loops skip
them with ``validate=False`` where the entry point offers it; where there are levels, :class:`Validation`.
"""

from __future__ import annotations

import argparse
import math
import os
import warnings
from contextvars import ContextVar
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np

from dlrmlab.datasets import SYNTHETIC_PREFIX, canonical_name
from dlrmlab.errors import DlrmlabError

# --- numbers -----------------------------------------------------------------------------------------------


def integer(name: str, value: Any, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` as an int, or a :class:`DlrmlabError` naming ``name``: bools, strings, NaN, infinities and
    fractional numbers are refused (``2.0`` and ``1e6`` are integers; ``2.5`` is not)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer, float, np.floating)):
        raise DlrmlabError(f"{name} must be an integer, got {value!r}")
    if isinstance(value, (float, np.floating)) and (not math.isfinite(value) or value != int(value)):
        raise DlrmlabError(f"{name} must be an integer, got {value!r}")
    v = int(value)
    if minimum is not None and v < minimum:
        what = {1: "positive", 0: "non-negative"}.get(minimum, f">= {minimum}")
        raise DlrmlabError(f"{name} must be {what}, got {value!r}")
    if maximum is not None and v > maximum:
        raise DlrmlabError(f"{name} must be at most {maximum:,}, got {value!r}")
    return v


def seconds(name: str, value: Any, maximum: float = 24 * 3600.0) -> float:
    """A duration in seconds: a finite real number in [0, ``maximum``] (NaN would never end a wait)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer, float, np.floating)):
        raise DlrmlabError(f"{name} must be a number of seconds, got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise DlrmlabError(f"{name} must be a finite number of seconds, got {value!r}")
    if v < 0:
        raise DlrmlabError(f"{name} must be non-negative, got {value:g}")
    if v > maximum:
        raise DlrmlabError(f"{name} must be at most {maximum:g} seconds, got {value:g}")
    return v


#: Upper bounds of counts given on the command line or to the API (memory checks bound them further).
MAX_REPEATS, MAX_BATCHES, MAX_IDS, SEED_MAX = 10**6, 10**6, 2**40, 2**63 - 1


def bench_numbers(*, seed: Any = 0, n_batches: Any = None, repeats: Any = None, warmup_s: Any = None,
                  **others: Any) -> tuple:
    """The numbers of a measurement request, checked and in order (``None`` stays ``None``: the default):
    ``seed`` >= 0, counts (``n_batches``, ``repeats`` and the keyword ``others``) >= 1, ``warmup_s`` finite
    seconds."""
    out = [integer("seed", seed, 0, SEED_MAX)]
    for name, value, limit in (("n_batches", n_batches, MAX_BATCHES), ("repeats", repeats, MAX_REPEATS)):
        out.append(None if value is None else integer(name, value, 1, limit))
    out.append(None if warmup_s is None else seconds("warmup_s", warmup_s))
    out += [integer(name, value, 1, MAX_REPEATS) for name, value in others.items()]
    return tuple(out)


def arg_int(text: str) -> int:
    """An ``argparse`` ``type=`` for an integer flag: ``2.5``, ``nan`` and ``1e3`` are not integers (the parser
    names the flag; exit status 2). Ranges are checked after parsing (:data:`dlrmlab.cli.FLAG_RANGES`)."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None


def arg_seconds(text: str) -> float:
    """An ``argparse`` ``type=`` for a duration flag: a finite number (``nan`` and ``inf`` never end a wait)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds, got {text!r}")
    return value

class Validation(StrEnum):
    """How much of a request is checked on the host before a launch: nothing (trusted hot loops); what needs no
    read of the arrays (dtypes, shapes, counts, memory: no sync, so capturable in a graph); or also ids and
    offsets, read on the host (a device copy and a sync)."""

    OFF, SHAPES, FULL = "off", "shapes", "full"

    @classmethod
    def parse(cls, value: bool | str) -> Validation:
        """A user's ``validate=``: True is :attr:`SHAPES`, False :attr:`OFF`, or a level by name."""
        if isinstance(value, bool):
            return cls.SHAPES if value else cls.OFF
        if value not in tuple(cls):
            raise DlrmlabError(f"validate must be True, False or one of {', '.join(map(repr, (v.value for v in cls)))}"
                               f", got {value!r}")
        return cls(value)


# --- memory ------------------------------------------------------------------------------------------------


def fmt_bytes(n: float) -> str:
    """``1536`` -> ``"1.5 KiB"``."""
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"  # pragma: no cover


def _cgroup_free() -> int | None:
    """Bytes left under a cgroup v2 memory limit (containers), or None without one."""
    try:
        root = Path("/sys/fs/cgroup")
        limit = (root / "memory.max").read_text().strip()
        if limit == "max":
            return None
        return max(0, int(limit) - int((root / "memory.current").read_text().strip()))
    except (OSError, ValueError):
        return None


def available_host_bytes() -> int | None:
    """Host memory free for a new allocation (None: unknown)."""
    free = None
    try:
        import psutil  # psutil: optional

        free = int(psutil.virtual_memory().available)
    except Exception:
        try:
            free = int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
        except (AttributeError, ValueError, OSError):
            free = None
    group = _cgroup_free()
    if group is not None:
        free = group if free is None else min(free, group)
    return free


def available_device_bytes() -> int | None:
    """Free memory of the current GPU (None in the simulator, where device arrays are host memory)."""
    from dlrmlab import backend  # numba (backend): the CLI's parser imports validate

    if backend.SIMULATOR:
        return None
    free, _total = backend.cuda.current_context().get_memory_info()
    return int(free)


#: How a refused request can be made smaller, in the caller's words: the API's argument names by default; the
#: command line sets its flags (``--batch``, ...) for the duration of a command.
SHRINK_HINT: ContextVar[str] = ContextVar(
    "SHRINK_HINT", default="make it smaller (fewer or smaller tables, a smaller batch, embedding dim or pooling)")


def check_memory(what: str, host: float = 0, device: float = 0) -> None:
    """Refuse ``what`` when its estimated ``host`` or ``device`` bytes exceed what is free, naming both."""
    from dlrmlab import backend  # numba (backend): the CLI's parser imports validate

    if backend.SIMULATOR:  # simulated device arrays are NumPy arrays
        host, device = host + device, 0
    if host > 0:
        free = available_host_bytes()
        if free is not None and host > free:
            where = "host memory (the simulator's device arrays included)" if backend.SIMULATOR else "host memory"
            raise DlrmlabError(f"{what} needs about {fmt_bytes(host)} of {where}, but only {fmt_bytes(free)} is "
                               f"free; {SHRINK_HINT.get()}")
    if device > 0:
        free = available_device_bytes()
        if free is not None and device > free:
            raise DlrmlabError(f"{what} needs about {fmt_bytes(device)} of GPU memory, but only {fmt_bytes(free)} "
                               f"is free; {SHRINK_HINT.get()}")


def stream_bytes(stage: Any, dataset: str | None) -> int:
    """Host memory a synthetic stream keeps per table size (its CDF and rank-to-row permutation)."""
    if dataset is None:
        return 0

    try:
        name = canonical_name(dataset)
    except DlrmlabError:
        return 0
    if not (name.startswith(SYNTHETIC_PREFIX) or name.startswith("zipf:")):
        return 0
    return sum(5 * 8 * r for r in set(stage.embedding_sizes))  # arange, weights, cumsum, permutation


def batch_bytes(stage: Any, weighted: bool = False) -> int:
    """Host bytes of one batch of ``stage``: ids (per table and jagged), offsets, weights."""
    idx = np.dtype(stage.index_dtype).itemsize
    lookups = stage.lookups_per_batch()
    per_id = 2 * idx + (8 if weighted else 0)  # per-table and jagged copies; weights likewise
    return int(lookups * per_id + 2 * stage.num_tables * (stage.batch_size + 1) * 8)


def stage_bytes(stage: Any, n_batches: int = 1, *, weighted: bool = False, dataset: str | None = None,
                tables: bool = True, references: bool = True) -> tuple[int, int]:
    """``(host, device)`` bytes a benchmark case of ``stage`` needs at least: tables (and the fp32 draw of
    the largest one), ``n_batches`` batches, their reference outputs, one output per table; a synthetic
    stream's tables."""
    rows_total = sum(stage.embedding_sizes)
    dim = stage.embedding_dim
    out = stage.num_tables * stage.batch_size * dim * 4
    host = stream_bytes(stage, dataset) + n_batches * batch_bytes(stage, weighted)
    device = n_batches * batch_bytes(stage, weighted) + out
    if tables:
        host += rows_total * stage.row_bytes + max(stage.embedding_sizes) * dim * 4
        device += rows_total * stage.row_bytes
    if references:
        biggest_gather = stage.batch_size * stage.pooling.mean * dim * 8  # the reference widens to float64
        host += n_batches * out + int(biggest_gather)
    return int(host), int(device)


def check_stage(stage: Any, n_batches: int = 1, *, weighted: bool = False, dataset: str | None = None,
                tables: bool = True, what: str | None = None) -> None:
    """:func:`check_memory` for a benchmark case of ``stage`` (before anything is generated)."""
    host, device = stage_bytes(stage, n_batches, weighted=weighted, dataset=dataset, tables=tables)
    d = stage.describe()
    rows = f"{d['rows']:,}" if isinstance(d["rows"], int) else f"{min(d['rows']):,}-{max(d['rows']):,}"
    what = what or (f"a case of {d['tables']} table(s) x {rows} rows x {d['dim']} wide, batch {d['batch']}, "
                    f"pooling {d['pooling']}, {n_batches} batch(es)")
    check_memory(what, host, device)
    check_simulator_size(stage, what, host + device)


#: Embedding elements (lookups x dim) Numba's CUDA simulator pools per second on one core, roughly (it runs
#: every CUDA thread as a Python thread): measured on the tiny preset, rounded up so estimates err low.
SIMULATOR_ELEMENTS_PER_S = 50_000
#: Above this estimate for one pass over one batch the simulator refuses; above a minute it warns.
SIMULATOR_REFUSE_S, SIMULATOR_WARN_S = 3600.0, 60.0


class SizeWarning(UserWarning):
    """A request that will run, but slowly (the simulator at a large shape)."""


def simulator_seconds(stage: Any) -> float:
    """Estimated seconds one kernel pass over one batch of ``stage`` takes in the simulator."""
    return stage.lookups_per_batch() * stage.embedding_dim / SIMULATOR_ELEMENTS_PER_S


def fmt_seconds(s: float) -> str:
    """``5400`` -> ``"1.5 h"``."""
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if s >= size:
            return f"{s / size:.1f} {unit}"
    return f"{s:.0f} s"


def check_simulator_size(stage: Any, what: str, nbytes: float) -> None:
    """In the simulator, refuse a case whose one batch pass would take over an hour (a ``paper``-sized case
    takes hours), and warn above a minute, with the estimates of time and memory."""
    check_simulator_work(stage.lookups_per_batch() * stage.embedding_dim, what, nbytes)


def check_simulator_work(elements: float, what: str, nbytes: float) -> None:
    """:func:`check_simulator_size` for a launch pooling ``elements`` (lookups x dim) embedding elements."""
    from dlrmlab import backend

    if not backend.SIMULATOR:
        return
    est = elements / SIMULATOR_ELEMENTS_PER_S
    if est <= SIMULATOR_WARN_S:
        return
    text = (f"{what} would take about {fmt_seconds(est)} per batch and kernel in Numba's CUDA simulator (no "
            f"GPU here: one Python thread per CUDA thread) and about {fmt_bytes(nbytes)} of host memory")
    if est > SIMULATOR_REFUSE_S:
        raise DlrmlabError(f"{text}; use the tiny preset or a smaller shape here, or run it on a GPU")
    warnings.warn(f"{text}; it runs, slowly", SizeWarning, stacklevel=3)


# --- arrays ------------------------------------------------------------------------------------------------


def _dtype(x: Any) -> np.dtype | None:
    dt = getattr(x, "dtype", None)
    if dt is None:
        return None
    text = str(dt).replace("torch.", "")
    try:
        return np.dtype(text)
    except TypeError:
        return None  # e.g. torch.bfloat16


def integer_array(x: Any, name: str, what: str = "integers") -> None:
    """``x`` holds integers (by its dtype; nothing is read)."""
    dt = _dtype(x)
    if dt is None or not np.issubdtype(dt, np.integer):
        raise DlrmlabError(f"{name} must hold {what}, got dtype {getattr(x, 'dtype', type(x).__name__)}")


def contiguous(x: Any, name: str) -> None:
    """A device array ``x`` is C-contiguous (a kernel addresses it as one flat buffer, in place). Host arrays
    (NumPy, CPU tensors) pass: they are copied to the device contiguously anyway."""
    if hasattr(x, "is_contiguous") and callable(x.is_contiguous):  # torch
        ok = x.is_contiguous() or not x.is_cuda
    elif hasattr(x, "is_c_contiguous"):  # Numba device arrays
        ok = x.is_c_contiguous()
    else:
        return
    if not ok:
        strides = x.stride() if callable(getattr(x, "stride", None)) else getattr(x, "strides", ())
        raise DlrmlabError(f"{name} must be C-contiguous (shape {tuple(x.shape)}, strides {tuple(strides)}); "
                           "pass a contiguous copy")


def aligned(x: Any, nbytes: int = 16) -> bool:
    """Whether ``x``'s first element sits on an ``nbytes`` boundary (device arrays; host arrays always)."""
    ptr = getattr(getattr(x, "device_ctypes_pointer", None), "value", None)
    return ptr is None or ptr % nbytes == 0


def ids(values: Any, rows: int, name: str = "input") -> None:
    """Every id in [0, rows); otherwise how many are out of range, and the first (value and position)."""
    v = np.asarray(values)
    if not v.size:
        return
    lo, hi = v.min(), v.max()
    if lo >= 0 and hi < rows:
        return
    bad = (v < 0) | (v >= rows)
    first = int(np.flatnonzero(bad.reshape(-1))[0])
    n_neg, n_big = int((v < 0).sum()), int((v >= rows).sum())
    parts = ([f"{n_neg:,} negative"] if n_neg else []) + ([f"{n_big:,} >= {rows:,}"] if n_big else [])
    raise DlrmlabError(
        f"{name}: {int(bad.sum()):,} id(s) out of range for a table of {rows:,} rows ({', '.join(parts)}); "
        f"the first is {int(v.reshape(-1)[first])} at position {first}"
    )


def offsets(values: Any, n_ids: int, include_last_offset: bool, name: str = "offsets") -> np.ndarray:
    """Validate torch-style offsets; return the ``include_last_offset=True`` form (B + 1 entries, int64)."""
    off = np.asarray(values)
    if off.ndim != 1 or not np.issubdtype(off.dtype, np.integer):
        raise DlrmlabError(f"{name} must be a 1-D integer array, got dtype {off.dtype} and shape {off.shape}")
    off = off.astype(np.int64, copy=False)
    if include_last_offset:
        if off.size < 1:
            raise DlrmlabError(f"{name} with include_last_offset=True needs at least one entry, got none")
        full = off
    else:
        full = np.append(off, n_ids)
    if full[0] != 0:
        raise DlrmlabError(f"{name}[0] must be 0, got {int(full[0])}")
    step = np.diff(full)
    if (step < 0).any():
        i = int(np.flatnonzero(step < 0)[0])
        raise DlrmlabError(f"{name} must be non-decreasing: {name}[{i + 1}] = {int(full[i + 1])} < "
                           f"{name}[{i}] = {int(full[i])}")
    if full[-1] > n_ids:
        raise DlrmlabError(f"{name} point past the end of input: the last is {int(full[-1])}, input has "
                           f"{n_ids} id(s)")
    return full


def per_sample_weights(w: Any, n_ids: int, name: str = "per_sample_weights") -> None:
    """One floating-point weight per id."""
    if w is None:
        return
    shape = tuple(getattr(w, "shape", ()))
    if shape != (n_ids,):
        raise DlrmlabError(f"{name} must have the same shape as input (one weight per id: ({n_ids},)), got {shape}")
    dt = _dtype(w)
    if dt is None or not np.issubdtype(dt, np.floating):
        raise DlrmlabError(f"{name} must be floating point, got dtype {getattr(w, 'dtype', None)}")


def host_copy(x: Any) -> np.ndarray:
    """``x`` as a NumPy array (device arrays copied to the host) for content checks."""
    if isinstance(x, np.ndarray):
        return x
    if type(x).__module__.startswith("torch"):
        return x.detach().cpu().numpy()
    if hasattr(x, "copy_to_host"):
        return x.copy_to_host()
    if hasattr(x, "get"):  # CuPy
        return x.get()
    return np.asarray(x)
