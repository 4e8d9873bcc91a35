"""Public API in PyTorch's terms: ``embedding_bag`` over one table, ``embedding_bags`` over several.

Inputs may be NumPy arrays (copied to the GPU), Numba device arrays, or anything with
``__cuda_array_interface__`` such as torch CUDA tensors and CuPy arrays (used in place, zero-copy).
Everything is validated on the host before any launch; the kernel is chosen by ``variant`` (see
:data:`KERNEL_VARIANTS`) and keyword overrides (``max_registers``, ``prefetch``, ``prefetch_distance``,
``block``, ``grid``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dlrmlab import backend, launch, occupancy, reference
from dlrmlab.backend import cuda
from dlrmlab.errors import DlrmlabError
from dlrmlab.kernels import paper
from dlrmlab.prefetch import make_prefetch

#: Kernel-level variants of the paper family, as default configurations.
KERNEL_VARIANTS: dict[str, dict] = {
    "baseline": {},
    "optmt": {"max_registers": 42},  # the paper's -maxrregcount 42; `dlrmlab tune` finds the GPU's best
    "rpf": {"prefetch": "register", "prefetch_distance": 2},
    "rpf_l1": {"prefetch": "l1", "prefetch_distance": 2},
    "rpf_shared": {"prefetch": "shared", "prefetch_distance": 2},
    "optmt_rpf": {"max_registers": 42, "prefetch": "register", "prefetch_distance": 2},
}

_DTYPES = {np.dtype(np.float32): "float32", np.dtype(np.float16): "float16"}


def paper_config(
    variant: str = "baseline", *, dtype: str = "float32", mode: str = "sum", weighted: bool = False,
    padded: bool = False, **overrides: Any,
) -> tuple[paper.PaperConfig, int]:
    """Kernel configuration and grid for a variant name plus overrides (validated, nothing launched)."""
    if variant not in KERNEL_VARIANTS:
        raise DlrmlabError(f"unknown kernel variant {variant!r}; valid: {', '.join(KERNEL_VARIANTS)}")
    p = {**KERNEL_VARIANTS[variant], **{k: v for k, v in overrides.items() if v is not None}}
    unknown = set(p) - {"max_registers", "prefetch", "prefetch_distance", "block", "grid"}
    if unknown:
        raise DlrmlabError(f"unknown kernel parameters: {', '.join(sorted(unknown))}")
    grid = int(p.get("grid", paper.TORCH_GRID))
    if grid <= 0:
        raise DlrmlabError(f"grid must be positive, got {grid}")
    cfg = paper.PaperConfig(
        dtype=dtype,
        mode=mode,
        weighted=weighted,
        padded=padded,
        prefetch=make_prefetch(p.get("prefetch", "none"), p.get("prefetch_distance", 2)),
        max_registers=occupancy.check_register_cap(p.get("max_registers")),
        block=tuple(p.get("block", paper.TORCH_BLOCK)),
    )
    return cfg, launch.grid(grid)


# --- conversions -----------------------------------------------------------------------------------------


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


def to_device(x: Any, stream=0, name: str = "array") -> Any:
    """A Numba device array for ``x``: zero-copy for device arrays, a copy for host arrays."""
    if x is None:
        return None
    if _is_torch(x):
        x = x.detach()  # e.g. nn.EmbeddingBag(...).weight, which requires grad
    if not backend.SIMULATOR and cuda.is_cuda_array(x):
        return cuda.as_cuda_array(x)
    if backend.SIMULATOR and hasattr(x, "copy_to_host"):
        return x
    if _is_torch(x):
        if x.dtype.is_floating_point and str(x.dtype) == "torch.bfloat16":
            x = x.view(__import__("torch").int16)
        if x.is_cuda:
            return cuda.as_cuda_array(x)
        x = x.numpy()
    arr = np.ascontiguousarray(x)
    if arr.dtype == object:
        raise DlrmlabError(f"{name}: cannot convert {type(x).__name__} to an array")
    return cuda.to_device(arr, stream=stream)


def as_stream(stream: Any) -> Any:
    """Numba stream for None (default stream), a Numba stream, a torch stream or a raw handle."""
    if stream is None or stream == 0:
        return cuda.default_stream()
    if hasattr(stream, "cuda_stream"):  # torch.cuda.Stream
        return cuda.external_stream(int(stream.cuda_stream))
    if isinstance(stream, int):
        return cuda.external_stream(stream)
    return stream


def _host_view(x: Any) -> np.ndarray:
    if isinstance(x, np.ndarray):
        return x
    if _is_torch(x):
        return x.detach().cpu().numpy()
    if hasattr(x, "copy_to_host"):
        return x.copy_to_host()
    if hasattr(x, "get"):  # CuPy
        return x.get()
    return np.asarray(x)


def _table_dtype(weight: Any, weight_dtype: str | None) -> str:
    if weight_dtype is not None:
        if weight_dtype not in ("float32", "float16", "bfloat16"):
            raise DlrmlabError(f"weight_dtype must be float32, float16 or bfloat16, got {weight_dtype!r}")
        return weight_dtype
    if _is_torch(weight) and str(weight.dtype) == "torch.bfloat16":
        return "bfloat16"
    dt = np.dtype(getattr(weight, "dtype", np.float32).__str__().replace("torch.", ""))
    if dt not in _DTYPES:
        raise DlrmlabError(
            f"weight dtype {dt} not supported: float32, float16, or bfloat16 (as uint16 with weight_dtype)"
        )
    return _DTYPES[dt]


# --- the API ---------------------------------------------------------------------------------------------


def embedding_bag(
    input: Any,
    weight: Any,
    offsets: Any = None,
    mode: str = "mean",
    per_sample_weights: Any = None,
    include_last_offset: bool = False,
    padding_idx: int | None = None,
    *,
    variant: str = "baseline",
    stream: Any = None,
    weight_dtype: str | None = None,
    validate: bool = True,
    **kernel_params: Any,
) -> Any:
    """Pooled embeddings of shape (bags, dim), fp32, as ``torch.nn.functional.embedding_bag`` computes.

    Returns a torch tensor when ``weight`` is one, else a Numba device array. ``validate`` checks ids and
    offsets on the host first (a copy for device inputs); turn it off only for inputs already checked.
    """
    shape = getattr(weight, "shape", None)
    if shape is None or len(shape) != 2:
        raise DlrmlabError("weight must be 2-D (num_embeddings, embedding_dim)")
    rows, dim = int(shape[0]), int(shape[1])
    dtype = _table_dtype(weight, weight_dtype)
    if mode not in ("sum", "mean"):
        raise DlrmlabError(f"mode must be 'sum' or 'mean', got {mode!r}")
    if padding_idx is not None:
        if not -rows <= padding_idx < rows:
            raise DlrmlabError(f"padding_idx {padding_idx} out of range for {rows} rows")
        padding_idx %= rows
    ishape = getattr(input, "shape", None)
    if ishape is None or len(ishape) not in (1, 2):
        raise DlrmlabError("input must be 1-D (with offsets) or 2-D")
    host_input = None
    if len(ishape) == 2:
        if offsets is not None:
            raise DlrmlabError("offsets must be None when input is 2-D")
        b, ln = int(ishape[0]), int(ishape[1])
        offsets = np.arange(0, b * ln + 1, max(ln, 1), dtype=np.int64)[: b + 1] if ln else np.zeros(b + 1)
        offsets = offsets.astype(np.int64)
        include_last_offset = True
        host_input = _host_view(input).reshape(-1)
        input = host_input
        if per_sample_weights is not None:
            per_sample_weights = _host_view(per_sample_weights).reshape(-1)
    elif offsets is None:
        raise DlrmlabError("offsets are required when input is 1-D")
    if per_sample_weights is not None and mode != "sum":
        raise DlrmlabError("per_sample_weights is only supported for mode='sum' (as in torch)")
    cfg, grid = paper_config(
        variant, dtype=dtype, mode=mode, weighted=per_sample_weights is not None,
        padded=padding_idx is not None, **kernel_params,
    )

    n_ids = int(ishape[0]) if len(ishape) == 1 else int(np.prod(ishape))
    if validate or not include_last_offset:
        host_off = reference.normalize_offsets(n_ids, _host_view(offsets), include_last_offset)
        if validate:
            ids_h = host_input if host_input is not None else _host_view(input)
            if not np.issubdtype(ids_h.dtype, np.integer):
                raise DlrmlabError(f"input must hold integer ids, got {ids_h.dtype}")
            reference.check_ids(ids_h[: host_off[-1]], rows)
            if per_sample_weights is not None and tuple(per_sample_weights.shape) != (n_ids,):
                raise DlrmlabError("per_sample_weights must have the same shape as input")
        offsets = host_off.astype(np.dtype(str(getattr(input, "dtype", "int64")).replace("torch.", "")))

    s = as_stream(stream)
    w = to_device(weight, s, "weight")
    w_flat = w.reshape(rows * dim) if rows * dim else w
    if dtype == "bfloat16" and w_flat.dtype != np.uint16:
        w_flat = w_flat.view(np.uint16)
    ids = to_device(input, s, "input")
    off = to_device(offsets, s, "offsets")
    psw = to_device(per_sample_weights, s, "per_sample_weights")
    if psw is None:
        psw = cuda.device_array(1, np.float32, stream=s)
    out = cuda.device_array((off.shape[0] - 1, dim), np.float32, stream=s)
    paper.launch(cfg, w_flat, dim, ids, off, psw, -1 if padding_idx is None else padding_idx, out, grid, s)
    if _is_torch(weight):
        import torch

        return torch.as_tensor(out, device=weight.device) if weight.is_cuda else torch.from_numpy(
            out.copy_to_host(stream=s)
        )
    return out


def embedding_bags(
    inputs: list[Any],
    weights: list[Any],
    offsets: list[Any],
    mode: str = "sum",
    per_sample_weights: list[Any] | None = None,
    include_last_offset: bool = True,
    **kwargs: Any,
) -> list[Any]:
    """Several tables, one :func:`embedding_bag` each (the per-table launches PyTorch users make)."""
    if not len(inputs) == len(weights) == len(offsets):
        raise DlrmlabError("inputs, weights and offsets need one entry per table")
    psw = per_sample_weights or [None] * len(inputs)
    return [
        embedding_bag(i, w, o, mode, p, include_last_offset, **kwargs)
        for i, w, o, p in zip(inputs, weights, offsets, psw, strict=True)
    ]
