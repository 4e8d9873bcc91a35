"""Hotness analysis of an index stream: how much of the traffic the hottest rows take.

This is what decides whether L2 pinning or an access-policy window can pay: a hot set of K rows of
D fp32 columns occupies K * D * 4 bytes of L2 and serves ``top_coverage(ids, K)`` of the lookups.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dlrmlab.datasets import read_trace
from dlrmlab.errors import DlrmlabError

DEFAULT_KS = (1000, 5000, 60000)


def _ids(ids: np.ndarray) -> np.ndarray:
    ids = np.asarray(ids)
    if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
        raise DlrmlabError("ids must be a 1-D integer array")
    if ids.size and ids.min() < 0:
        raise DlrmlabError("ids must be non-negative")
    return ids


def counts(ids: np.ndarray, rows: int | None = None) -> np.ndarray:
    """Access count per row (length ``rows``, default max id + 1)."""
    ids = _ids(ids)
    n = int(ids.max()) + 1 if rows is None and ids.size else int(rows or 0)
    if ids.size and ids.max() >= n:
        raise DlrmlabError(f"id {int(ids.max())} out of range for {n} rows")
    return np.bincount(ids, minlength=n)


#: Ids at most this many times as large as their count are counted per row (``np.bincount``: one pass, a
#: few MB for a paper batch) rather than hashed or sorted (``np.unique``: about 1 s per million ids).
DENSE_RANGE = 8


def _id_counts(ids: np.ndarray) -> np.ndarray:
    """The access count of every id that occurs (in no particular order)."""
    if ids.size and int(ids.max()) < DENSE_RANGE * ids.size:
        c = np.bincount(ids)
        return c[c > 0]
    return np.unique(ids, return_counts=True)[1]


def distinct(ids: np.ndarray) -> int:
    return int(_id_counts(_ids(ids)).size)


def coverage_curve(ids: np.ndarray) -> np.ndarray:
    """``curve[k-1]`` = fraction of accesses taken by the hottest ``k`` rows (k = 1..distinct)."""
    ids = _ids(ids)
    if ids.size == 0:
        return np.zeros(0)
    c = np.sort(_id_counts(ids))[::-1]
    return np.cumsum(c) / ids.size


def top_coverage(ids: np.ndarray, ks: Iterable[int] = DEFAULT_KS) -> dict[int, float]:
    """Fraction of accesses taken by the hottest K rows, for each K."""
    curve = coverage_curve(ids)
    out = {}
    for k in ks:
        k = int(k)
        if k <= 0:
            raise DlrmlabError(f"K must be positive, got {k}")
        out[k] = float(curve[min(k, curve.size) - 1]) if curve.size else 0.0
    return out


@dataclass(frozen=True)
class Ranking:
    """Rows ranked by access frequency, hottest first (ties keep row order).

    ``order[new] = old``: permute a table with ``table[order]``.
    ``remap[old] = new``: remap ids with ``remap[ids]``; then ``table[order][remap[i]] == table[i]``.
    """

    order: np.ndarray
    remap: np.ndarray
    #: access counts in ranked order (hottest first)
    ranked_counts: np.ndarray


def frequency_ranking(ids: np.ndarray, rows: int) -> Ranking:
    c = counts(ids, rows)
    order = np.argsort(-c, kind="stable").astype(np.int64)
    remap = np.empty_like(order)
    remap[order] = np.arange(order.size, dtype=np.int64)
    return Ranking(order=order, remap=remap, ranked_counts=c[order])


def hot_set(ids: np.ndarray, k: int, rows: int | None = None) -> np.ndarray:
    """The ``k`` most frequently accessed row ids, hottest first (only rows that were accessed)."""
    if int(k) <= 0:
        raise DlrmlabError(f"hot-set size must be positive, got {k}")
    c = counts(ids, rows)
    if rows is not None and k > rows:
        raise DlrmlabError(f"hot set of {k} rows is larger than the table ({rows} rows)")
    order = np.argsort(-c, kind="stable")[: int(k)]
    return order[c[order] > 0].astype(np.int64)


def read_hot_rows(path: str | Path, rows: int | None = None) -> np.ndarray:
    """Read a hot-row file in the artifact's format (one row id per line)."""
    hot = read_trace(path)
    if rows is not None and hot.size and hot.max() >= rows:
        raise DlrmlabError(f"{path}: hot row {int(hot.max())} is out of range for {rows} rows")
    if rows is not None and hot.size > rows:
        raise DlrmlabError(f"{path}: {hot.size} hot rows is more than the table's {rows}")
    return hot


def describe(ids: np.ndarray, ks: Iterable[int] = DEFAULT_KS) -> dict:
    """Summary statistics of an id stream, as ``dlrmlab workload describe`` prints them."""
    ids = _ids(ids)
    return {
        "ids": int(ids.size),
        "distinct": distinct(ids),
        "max_id": int(ids.max()) if ids.size else None,
        "top_coverage": {str(k): round(v, 6) for k, v in top_coverage(ids, ks).items()},
    }

