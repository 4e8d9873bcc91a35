"""Public API in PyTorch's terms: ``embedding_bag`` over one table, ``embedding_bags`` over several.

Inputs may be NumPy arrays (copied to the GPU), Numba device arrays, or anything with
``__cuda_array_interface__`` such as torch CUDA tensors and CuPy arrays (used in place, zero-copy).
Everything is validated on the host before any launch. ``variant`` is a name from :mod:`dlrmlab.variants`
that runs one table on its own (the paper family and ``fast``); keyword knobs override its defaults
(``max_registers``, ``prefetch``, ``prefetch_distance``, ``block``, ``grid`` for the paper family;
``unroll``, ``bags_per_block``, ``chunk``, ``max_registers``, ``vector`` for ``fast``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dlrmlab import backend, launch, quant, variants
from dlrmlab import validate as checks
from dlrmlab.backend import cuda
from dlrmlab.config import TABLE_DTYPES, Combine
from dlrmlab.errors import DlrmlabError
from dlrmlab.fused import PackedTables, configure_here, fused_forward, quantized_rows
from dlrmlab.kernels.fused import FastConfig
from dlrmlab.kernels.paper import PaperConfig


def single_table_variants() -> list[str]:
    """Variants ``embedding_bag`` runs: those of one kernel family, with nothing around their launches."""
    return [n for n in variants.names() if variants.get(n).kind in ("paper", "fast") and variants.get(n).standalone]


def kernel_config(
    variant: str, dim: int, dtype: str, combine: Combine, pooling_mean: float = 1.0, **params: Any
) -> PaperConfig | FastConfig:
    """The kernel configuration for a variant name plus knobs (validated, nothing launched)."""
    if variant not in single_table_variants():
        variants.get(variant)  # unknown names: the table's own error, listing every variant
        raise DlrmlabError(
            f"variant {variant!r} runs a whole stage (a peer, pinning, an L2 window or graph replay): use "
            f"dlrmlab.bench or dlrmlab.dlrm; embedding_bag runs {', '.join(single_table_variants())}"
        )
    knobs = variants.knobs_for(variant, params)
    if knobs.get("window") or knobs.get("layout", {}).get("layout", "auto") != "auto":
        raise DlrmlabError(f"variant {variant!r}: embedding_bag reads one table's rows as they are; the layout and "
                           "L2-window knobs apply to a whole stage (dlrmlab.bench, dlrmlab.dlrm)")
    if "paper" in knobs:
        return PaperConfig.from_knobs(dtype, combine, **knobs["paper"])
    return configure_here(dim, dtype, pooling_mean, combine=combine, **knobs["fast"])[0]


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


def _table_dtype(weight: Any, weight_dtype: str | None) -> str:
    if weight_dtype is not None:
        if weight_dtype not in TABLE_DTYPES:
            valid = ", ".join([*TABLE_DTYPES, *quant.FORMATS])
            raise DlrmlabError(f"weight_dtype must be one of {valid}, got {weight_dtype!r}")
        return weight_dtype
    if _is_torch(weight) and str(weight.dtype) == "torch.bfloat16":
        return "bfloat16"
    dt = str(np.dtype(getattr(weight, "dtype", np.float32).__str__().replace("torch.", "")))
    if dt not in ("float32", "float16"):
        raise DlrmlabError(
            f"weight dtype {dt} not supported: float32, float16, or bfloat16 (as uint16 with weight_dtype)"
        )
    return dt


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
    variant: str | None = None,
    stream: Any = None,
    weight_dtype: str | None = None,
    validate: bool = True,
    out: Any = None,
    **kernel_params: Any,
) -> Any:
    """Pooled embeddings of shape (bags, dim), fp32, as ``torch.nn.functional.embedding_bag`` computes.

    Returns a torch tensor when ``weight`` is one, else a Numba device array. ``validate`` (see
    :mod:`dlrmlab.validate`) checks, before anything is allocated or launched: dtypes, shapes and
    contiguity, the memory the call needs against what is free, ids (negative or >= rows: how many, the
    first), offsets and per_sample_weights; ids and offsets are read on the host (a copy for device
    inputs). Turn it off only for inputs already checked (a trusted hot loop).
    ``out``: a preallocated (bags, dim) float32 device array to fill (no allocation per call, so the call
    can be captured in a CUDA graph). ``variant`` defaults to ``baseline`` (``fast`` for quantized rows).

    Quantized tables (``weight_dtype`` ``"int8"``, ``"int4"`` or ``"fp8"``, :mod:`dlrmlab.quant`; the ``fast``
    kernel reads them): ``weight`` is either uint8 rows already in that format (FBGEMM's fused row-wise
    bytes, e.g. from ``torch.ops.fbgemm.FloatToFused8BitRowwiseQuantized`` or :func:`dlrmlab.quant.quantize`;
    the dim is inferred from the row width), or float32/float16 rows, quantized on the fly (every call:
    quantize once and pass the rows when you call it more than once).
    """
    for name, x in (("weight", weight), ("input", input), ("offsets", offsets),
                    ("per_sample_weights", per_sample_weights), ("out", out)):
        _array_like(x, name, optional=name not in ("weight", "input"))
    shape = getattr(weight, "shape", None)
    if shape is None or len(shape) != 2:
        raise DlrmlabError(f"weight must be 2-D (num_embeddings, embedding_dim), got shape {shape}")
    torch_weight = weight if _is_torch(weight) else None
    if weight_dtype is not None and quant.is_quantized(weight_dtype):
        variant = variant or "fast"
        if variant not in ("fast",) and variant in single_table_variants():
            raise DlrmlabError(f"quantized tables ({weight_dtype}) are read by the fast kernel only: use "
                               f"variant='fast', not {variant!r}")
        dim, (weight,) = quantized_rows([weight], weight_dtype)  # host rows padded to 16 bytes
        shape = (weight.shape[0], dim)
    rows, dim = int(shape[0]), int(shape[1])
    variant = variant or "baseline"
    dtype = weight_dtype if weight_dtype in quant.FORMATS else _table_dtype(weight, weight_dtype)
    combine = Combine(mode, per_sample_weights is not None, padding_idx is not None)
    if padding_idx is not None:
        padding_idx = checks.integer("padding_idx", padding_idx)
        if not -rows <= padding_idx < rows:
            raise DlrmlabError(f"padding_idx {padding_idx} out of range for {rows} rows")
        padding_idx %= rows
    input, offsets, per_sample_weights, include_last_offset, host_input = _as_csr(
        input, offsets, per_sample_weights, include_last_offset)
    n_ids = int(input.shape[0])
    n_bags = int(getattr(offsets, "shape", (1,))[0]) - (1 if include_last_offset else 0)
    cfg = kernel_config(variant, dim, dtype, combine, n_ids / max(n_bags, 1), **kernel_params)
    if validate:
        _check_call(weight, input, offsets, per_sample_weights, out, (rows, dim, n_ids, n_bags))
    if validate or not include_last_offset:
        host_off = checks.offsets(checks.host_copy(offsets), n_ids, include_last_offset)
        if validate:
            ids_h = host_input if host_input is not None else checks.host_copy(input)
            checks.ids(ids_h[: host_off[-1]], rows)
        offsets = host_off.astype(np.dtype(str(getattr(input, "dtype", "int64")).replace("torch.", "")))

    s = as_stream(stream)
    out = _launch(cfg, weight, (rows, dim, dtype), input, offsets, per_sample_weights, padding_idx, out, s)
    weight = torch_weight if torch_weight is not None else weight
    if _is_torch(weight):
        import torch  # torch: optional and slow to import

        return torch.as_tensor(out, device=weight.device) if weight.is_cuda else torch.from_numpy(
            out.copy_to_host(stream=s)
        )
    return out


def _check_call(weight: Any, input: Any, offsets: Any, psw: Any, out: Any, sizes: tuple[int, int, int, int]) -> None:
    """Dtypes, contiguity, and the memory (and simulator time) a call needs, before anything is allocated."""
    rows, dim, n_ids, n_bags = sizes
    checks.integer_array(input, "input", "integer ids")
    checks.integer_array(offsets, "offsets")
    checks.per_sample_weights(psw, n_ids)
    checks.contiguous(weight, "weight")
    host_side = sum(int(x.nbytes) for x in (weight, input, offsets, psw) if isinstance(x, np.ndarray))
    what = f"embedding_bag over a {rows:,} x {dim:,} table ({n_ids:,} ids, {n_bags:,} bags)"
    device = host_side + (max(n_bags, 0) * dim * 4 if out is None else 0)
    checks.check_memory(what, device=device)
    checks.check_simulator_work(n_ids * dim, what, device)


def _array_like(x: Any, name: str, optional: bool) -> None:
    """``x`` is an array (NumPy, torch, a device array: it has a shape and a dtype), as torch's functional
    ``embedding_bag`` requires; Python lists and scalars are refused with what to pass instead."""
    if x is None and optional:
        return
    if not (hasattr(x, "shape") and hasattr(x, "dtype")):
        raise DlrmlabError(f"{name} must be an array (a NumPy array, a torch tensor or a device array), got "
                           f"{type(x).__name__}" + (f"; e.g. numpy.asarray({name}, dtype=numpy.int64)"
                                                    if isinstance(x, (list, tuple)) and name != "weight" else ""))
    if len(x.shape) == 0:
        raise DlrmlabError(f"{name} must be an array, got a scalar ({x!r})")


def _as_csr(input: Any, offsets: Any, psw: Any, include_last_offset: bool) -> tuple:
    """A 2-D input (one bag per row) as 1-D ids with offsets, torch's way; ``host_input`` when it was read."""
    ishape = getattr(input, "shape", None)
    if ishape is None or len(ishape) not in (1, 2):
        raise DlrmlabError("input must be 1-D (with offsets) or 2-D")
    if len(ishape) == 1:
        if offsets is None:
            raise DlrmlabError("offsets are required when input is 1-D")
        return input, offsets, psw, include_last_offset, None
    if offsets is not None:
        raise DlrmlabError("offsets must be None when input is 2-D")
    b, ln = int(ishape[0]), int(ishape[1])
    offsets = np.arange(0, b * ln + 1, max(ln, 1), dtype=np.int64)[: b + 1] if ln else np.zeros(b + 1, np.int64)
    host_input = checks.host_copy(input).reshape(-1)
    psw = checks.host_copy(psw).reshape(-1) if psw is not None else None
    return host_input, offsets.astype(np.int64), psw, True, host_input


def _launch(cfg: Any, weight: Any, table: tuple, input: Any, offsets: Any, psw: Any, padding_idx: int | None,
            out: Any, s: Any) -> Any:
    """Device views of the (validated) inputs, the output, and the one launch of ``cfg``'s kernel."""
    rows, dim, dtype = table
    w = to_device(weight, s, "weight")
    width = int(w.shape[1]) if len(w.shape) == 2 else dim  # quantized rows: their padded byte stride
    w_flat = w.reshape(rows * width) if rows * width else w
    if dtype == "bfloat16" and w_flat.dtype != np.uint16:
        w_flat = w_flat.view(np.uint16)
    ids, off = to_device(input, s, "input"), to_device(offsets, s, "offsets")
    psw = to_device(psw, s, "per_sample_weights")
    if out is None:
        out = cuda.device_array((off.shape[0] - 1, dim), np.float32, stream=s)
    else:
        out = to_device(out, s, "out")
        if tuple(out.shape) != (off.shape[0] - 1, dim) or out.dtype != np.float32:
            raise DlrmlabError(f"out must be float32 of shape {(off.shape[0] - 1, dim)}, got {out.dtype} "
                               f"{tuple(out.shape)}")
    if isinstance(cfg, FastConfig):  # the table as a one-table packed buffer, zero-copy
        one = PackedTables(w_flat, cuda.to_device(np.zeros(1, np.int64), s), (rows,), dim, dtype)
        table_offsets = cuda.to_device(np.array([0, off.shape[0] - 1], np.int64), s)
        fused_forward(one, (ids, off, table_offsets, psw), cfg.combine.mode, padding_idx, out, s, config=cfg)
    else:
        psw = psw if psw is not None else cuda.device_array(1, np.float32, stream=s)
        launch.paper(cfg, w_flat, dim, ids, off, psw, -1 if padding_idx is None else padding_idx, out, s)
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
