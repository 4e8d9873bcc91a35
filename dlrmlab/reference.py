"""NumPy reference embedding-bag with ``torch.nn.functional.embedding_bag``'s semantics.

Every kernel in dlrmlab is checked against this. It accumulates in float64 and returns float32, so it is
at least as accurate as any fp32-accumulating kernel.
"""

from __future__ import annotations

import numpy as np

from dlrmlab import quant, validate
from dlrmlab.errors import DlrmlabError

MODES = ("sum", "mean", "max")


def embedding_bag(
    input: np.ndarray,
    weight: np.ndarray,
    offsets: np.ndarray | None = None,
    mode: str = "mean",
    per_sample_weights: np.ndarray | None = None,
    include_last_offset: bool = False,
    padding_idx: int | None = None,
    weight_format: str | None = None,
) -> np.ndarray:
    """Pooled embeddings, shape (bags, dim), float32.

    ``input`` is 1-D with ``offsets`` (CSR) or 2-D (one bag per row, fixed size). ``weight`` is a 2-D
    float array (any float dtype). Empty bags give zeros. Entries equal to ``padding_idx`` are left out
    of their bag (and of a mean's count). ``per_sample_weights`` needs ``mode='sum'``, as in torch.
    ``weight_format`` (``int8``, ``int4``, ``fp8``): ``weight`` is quantized uint8 rows in that format
    (:mod:`dlrmlab.quant`, FBGEMM's bytes), dequantized first.
    """
    ids = np.asarray(input)
    if not np.issubdtype(ids.dtype, np.integer):
        raise DlrmlabError(f"input must hold integer ids, got {ids.dtype}")
    weight = np.asarray(weight)
    if weight.ndim != 2:
        raise DlrmlabError("weight must be 2-D (num_embeddings, embedding_dim)")
    if mode not in MODES:
        raise DlrmlabError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if ids.ndim == 2:
        if offsets is not None:
            raise DlrmlabError("offsets must be None when input is 2-D")
        b, ln = ids.shape
        offsets = np.arange(0, b * ln + 1, ln, dtype=np.int64) if ln else np.zeros(b + 1, np.int64)
        include_last_offset = True
        if per_sample_weights is not None:
            per_sample_weights = np.asarray(per_sample_weights).reshape(-1)
        ids = ids.reshape(-1)
    elif ids.ndim == 1:
        if offsets is None:
            raise DlrmlabError("offsets are required when input is 1-D")
    else:
        raise DlrmlabError("input must be 1-D (with offsets) or 2-D")
    full = validate.offsets(offsets, ids.size, include_last_offset)
    n_rows, dim = weight.shape
    if weight_format is not None:
        dim = quant.dim_from_row_bytes(weight_format, dim)  # a row's bytes -> its values
    validate.ids(ids, n_rows)
    if per_sample_weights is not None:
        if mode != "sum":
            raise DlrmlabError("per_sample_weights is only supported for mode='sum' (as in torch)")
        per_sample_weights = np.asarray(per_sample_weights)
        validate.per_sample_weights(per_sample_weights, ids.size)
    if padding_idx is not None:
        if not -n_rows <= padding_idx < n_rows:
            raise DlrmlabError(f"padding_idx {padding_idx} out of range for {n_rows} rows")
        padding_idx %= n_rows

    bags = full.size - 1
    ids = ids[: full[-1]]
    lengths = np.diff(full)
    bag_of = np.repeat(np.arange(bags), lengths)
    keep = np.ones(ids.size, bool) if padding_idx is None else ids != padding_idx
    vals = weight[ids[keep]]
    vals = (vals if weight_format is None else quant.dequantize(vals, weight_format, dim)).astype(np.float64)
    if per_sample_weights is not None:
        vals *= per_sample_weights[: full[-1]][keep].astype(np.float64)[:, None]
    bag_of = bag_of[keep]
    out = np.zeros((bags, dim), np.float64)
    if vals.shape[0]:
        starts = np.flatnonzero(np.r_[True, bag_of[1:] != bag_of[:-1]])
        ufunc = np.maximum if mode == "max" else np.add
        out[bag_of[starts]] = ufunc.reduceat(vals, starts, axis=0)
    if mode == "mean":
        count = np.bincount(bag_of, minlength=bags)
        out /= np.maximum(count, 1)[:, None]
    return out.astype(np.float32)
