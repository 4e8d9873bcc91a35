"""The CUDA L2 access-policy window (what the paper did not do): persisting L2 lines for the hot rows.

A window covers one contiguous byte range; hot rows are scattered. Ranking a table's rows by frequency
(permute the table once, remap the ids) makes the hot set its first rows, so one window per table covers
it. The persisting carve-out (``cudaLimitPersistingL2CacheSize``) is shared by all windows, so the budget
is split across tables by global frequency per byte: the hottest rows of all tables win, wherever they
live.

:func:`persisting_l2` is the only way dlrmlab changes L2 state: it validates first, then sets the limit,
and on every exit path (exceptions included) clears the windows it set, resets persisting lines and
restores the previous limit.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from dlrmlab import backend, cudart
from dlrmlab.cudart import device_properties
from dlrmlab.errors import DlrmlabError


def l2_limits() -> dict:
    """``persisting_l2_max_bytes`` and ``access_policy_max_window_bytes`` of the GPU."""
    if backend.SIMULATOR:
        raise DlrmlabError("L2 persistence needs a CUDA GPU (simulator mode has no L2)")

    p = device_properties()
    if p["persisting_l2_max_bytes"] <= 0 or p["access_policy_max_window_bytes"] <= 0:
        raise DlrmlabError(f"{p['name']} does not support L2 persistence (needs compute capability >= 8.0)")
    return p


def split_budget(counts: Sequence[np.ndarray], row_bytes: Sequence[int], budget_bytes: int) -> list[int]:
    """Rows of each (frequency-ranked) table to put in its window, within ``budget_bytes`` in total.

    ``counts[t]`` are table t's access counts sorted hottest first. Rows are taken across all tables in
    order of accesses per byte until the budget is spent.
    """
    if budget_bytes < 0:
        raise DlrmlabError(f"L2 budget must be >= 0, got {budget_bytes}")
    dens = np.concatenate([np.asarray(c, np.float64) / rb for c, rb in zip(counts, row_bytes, strict=True)])
    table = np.concatenate([np.full(len(c), t) for t, c in enumerate(counts)])
    size = np.concatenate([np.full(len(c), rb) for c, rb in zip(counts, row_bytes, strict=True)])
    order = np.argsort(-dens, kind="stable")
    keep = order[np.cumsum(size[order]) <= budget_bytes]
    keep = keep[dens[keep] > 0]
    return [int(n) for n in np.bincount(table[keep], minlength=len(counts))]


@dataclass
class PersistingL2:
    """Handle of an active :func:`persisting_l2` context: set windows through it."""

    limit_bytes: int
    max_window: int
    _streams: list = field(default_factory=list)

    def set_window(self, stream, base_ptr: int, num_bytes: int, hit_ratio: float = 1.0) -> None:
        """Window for kernels launched on ``stream`` from now on (hits persist, misses stream)."""
        if not 0 <= num_bytes <= self.max_window:
            raise DlrmlabError(f"window of {num_bytes} bytes is over the device maximum {self.max_window}")
        if not 0.0 <= hit_ratio <= 1.0:
            raise DlrmlabError(f"hitRatio must be in [0, 1], got {hit_ratio}")
        cudart.set_access_policy_window(stream, base_ptr, num_bytes, hit_ratio)
        if stream not in self._streams:
            self._streams.append(stream)


@contextlib.contextmanager
def persisting_l2(limit_bytes: int) -> Iterator[PersistingL2]:
    """Set the persisting-L2 carve-out for the block; restore everything on exit."""
    p = l2_limits()
    if not 0 < limit_bytes <= p["persisting_l2_max_bytes"]:
        raise DlrmlabError(
            f"persisting L2 limit must be in 1..{p['persisting_l2_max_bytes']} bytes, got {limit_bytes}"
        )
    previous = cudart.get_persisting_l2_limit()
    handle = PersistingL2(int(limit_bytes), p["access_policy_max_window_bytes"])
    cudart.set_persisting_l2_limit(int(limit_bytes))
    try:
        yield handle
    finally:
        errors = []
        for s in handle._streams:
            try:
                cudart.set_access_policy_window(s, 0, 0, 0.0)
            except Exception as e:  # keep restoring; report after
                errors.append(e)
        for step in (cudart.reset_persisting_l2, lambda: cudart.set_persisting_l2_limit(previous)):
            try:
                step()
            except Exception as e:
                errors.append(e)
        if errors:
            raise errors[0]
