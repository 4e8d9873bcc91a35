"""The baseline: ``torch.nn.functional.embedding_bag``, one call per table, as PyTorch users write it.

On a GPU it reads the case's own device arrays (zero-copy through ``__cuda_array_interface__``) and runs
on the case's stream (``torch.cuda.ExternalStream``), so it is timed exactly like every Numba variant. In
simulator mode it runs on the CPU from the host arrays, so CI still checks its results.

torch is imported when the variant is prepared, not before.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from contextlib import nullcontext
from functools import lru_cache, partial
from typing import Any, NamedTuple

import numpy as np

from dlrmlab import backend, cudart, quant
from dlrmlab.peers import PeerUnavailable
from dlrmlab.prepared import Prepared, event_pairs

#: Nsight Compute filter for PyTorch's forward kernels (EmbeddingBag_updateOutputKernel_sum_mean / _max).
KERNEL_REGEX = "EmbeddingBag"
#: The peer takes no knobs: it runs torch's one way.
KNOBS: frozenset[str] = frozenset()


@lru_cache(maxsize=1)
def unavailable() -> str | None:
    """Why the torch peer cannot run here (torch does not import, or has no CUDA on a GPU machine), or None."""
    try:
        import torch  # heavy and optional: only asked here whether it imports
    except Exception:
        return "PyTorch is not installed (torch does not import)"
    return None if backend.SIMULATOR or torch.cuda.is_available() else "this PyTorch has no CUDA on a GPU machine"


def _as_cuda(torch, arr: Any, device) -> Any:
    """Zero-copy torch view of a Numba device array (bf16 storage is uint16: viewed as int16 first)."""
    if arr.dtype == np.uint16:
        arr = arr.view(np.int16)  # every torch build maps int16 in __cuda_array_interface__
    t = torch.as_tensor(arr, device=device)
    if t.data_ptr() != int(arr.device_ctypes_pointer.value or 0):
        warnings.warn("torch.as_tensor copied a Numba device array instead of viewing it", stacklevel=3)
    return t


def _as_cpu(torch, arr: np.ndarray) -> Any:
    if arr.dtype == np.uint16:
        arr = arr.view(np.int16)
    return torch.from_numpy(np.ascontiguousarray(arr))


class _Sources(NamedTuple):
    """What torch reads, and where it runs: the case's arrays as ``to_torch`` sees them, a stream, a device."""

    to_torch: Callable[[Any], Any]
    tables: list
    batches: list
    stream: Any  # torch.cuda.ExternalStream on a GPU, None on the CPU
    device: Any  # None on the CPU


def _sources(torch, case, on_gpu: bool) -> _Sources:
    """On a GPU the case's own device arrays and stream (timed like every Numba variant), else its host arrays."""
    if on_gpu:
        device = torch.device("cuda", backend.cuda.get_current_device().id)
        stream = torch.cuda.ExternalStream(cudart.stream_ptr(case.stream), device=device)
        return _Sources(partial(_as_cuda, torch, device=device), case.dev_tables, case.dev_batches, stream, device)
    tables = [np.ascontiguousarray(t).reshape(-1) for t in case.host_tables]
    return _Sources(partial(_as_cpu, torch), tables, case.host_batches, None, None)


def _weights(torch, case, src: _Sources) -> list:
    """One ``(rows, dim)`` weight tensor per table, viewing the case's flat tables (bf16 through int16)."""
    weights = []
    for t, rows in zip(src.tables, case.stage.embedding_sizes, strict=True):
        w = src.to_torch(t)
        if case.dtype == "bfloat16":
            w = w.view(torch.bfloat16)
        weights.append(w.view(int(rows), case.dim))
    return weights


def _inputs(case, src: _Sources, on_gpu: bool, wdtype) -> list[list[tuple]]:
    """Per batch, per table: ``(indices, offsets, per_sample_weights or None)`` as torch tensors."""
    inputs = []
    for b in src.batches:
        per_table = []
        for tb in b.tables:
            psw = (tb.psw if case.weighted else None) if on_gpu else tb.per_sample_weights
            # torch wants per_sample_weights in the table dtype: converted once, here
            psw_t = src.to_torch(psw).to(wdtype) if psw is not None else None
            per_table.append((src.to_torch(tb.indices), src.to_torch(tb.offsets), psw_t))
        inputs.append(per_table)
    return inputs


def prepare(case, knobs: dict[str, dict]) -> Prepared:
    """Views of the case's tables and batches as torch tensors, and closures calling embedding_bag. The table
    has checked :func:`unavailable` first (torch imports, and has CUDA on a GPU)."""
    import torch  # heavy and optional: imported when the variant is prepared

    F = torch.nn.functional
    if quant.is_quantized(case.dtype):
        raise PeerUnavailable(f"torch's embedding_bag reads float tables, not {case.dtype} rows")
    wdtype = getattr(torch, case.dtype)  # torch.float32, torch.float16 or torch.bfloat16
    mode = case.mode
    on_gpu = not backend.SIMULATOR

    src = _sources(torch, case, on_gpu)
    stream = src.stream
    weights = _weights(torch, case, src)
    inputs = _inputs(case, src, on_gpu, wdtype)  # per batch: per table (indices, offsets, psw or None)
    if on_gpu:
        torch.cuda.synchronize(src.device)  # the dtype conversions above ran on torch's current stream

    def ctx():
        return torch.cuda.stream(stream) if stream is not None else nullcontext()

    def call(w, inp):
        idx, off, psw = inp
        return F.embedding_bag(idx, w, off, mode=mode, per_sample_weights=psw, include_last_offset=True)

    def run(i: int) -> None:
        batch = inputs[i]
        with ctx():
            for w, inp in zip(weights, batch, strict=True):
                call(w, inp)

    def result(i: int) -> list[np.ndarray]:
        batch = inputs[i]
        with ctx():
            outs = [call(w, inp) for w, inp in zip(weights, batch, strict=True)]
        case.stream.synchronize()
        return [o.float().cpu().numpy() for o in outs]

    def per_kernel(i: int):
        """One event pair per embedding_bag call (torch may launch more than one kernel per call)."""
        with ctx():
            return event_pairs(case.stream, (partial(call, w, inp) for w, inp in zip(weights, inputs[i], strict=True)))

    return Prepared(run=run, result=result, params={}, per_kernel=per_kernel)

