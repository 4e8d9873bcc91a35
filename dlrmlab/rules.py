"""The rules the fused path configures itself with, where no tuned entry exists: pure functions of the
shape, the ids' hotness and the GPU's properties.

* :func:`choose_layout` — plain tables, or the split-hot layout behind a persisting L2 window. The split
  layout pays off when the hottest rows that fit the persisting carve-out take most lookups: then a window
  keeps them in L2 across batches. On the H100 (``results/h100/shape_sweep.csv``) the window won where that
  share was above about :data:`SPLIT_HOT_SHARE` and lost (by up to 1.6x, the medium trace at width 256)
  below it.
* :func:`derive_knobs` — rows in flight, lane groups per bag, bags per block, staged ids and the register
  cap from the row width, pooling and the GPU (registers and threads per SM, memory bandwidth per SM). Its
  constants come from the H100 sweep over widths 32-256, batches 512-16384 and pooling 20-150.

Both are data-free and cheap: the harness, the API and the DLRM module call them per stage, and every
result row records what they chose and why.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dlrmlab.config import table_dtype

#: Split-hot when the carve-out's rows take at least this share of a batch's lookups (see module doc).
SPLIT_HOT_SHARE = 0.75
#: Re-decide a layout only when the share moved by more than this (no flapping around the threshold).
HYSTERESIS = 0.05
#: 16-byte vectors each lane keeps in flight: plain rows mostly miss L2 and want more; split-hot rows hit.
VECTORS_IN_FLIGHT = {False: 10, True: 8}
#: Threads per block: 128 won or tied at every width of the sweep, for both layouts.
BLOCK_THREADS = 128
#: A lane group should get at least this many rows in flight's worth of a bag's ids (else split less).
IDS_PER_GROUP_FACTOR = 3
#: Shared memory a block's staged ids may take (occupancy is register-limited only below this).
STAGED_BYTES = 12 * 1024
#: The H100 the constants were measured on: bytes per second of HBM per SM.
_H100_BW_PER_SM = 3.35e12 / 132


@dataclass(frozen=True)
class LayoutChoice:
    """Which row layout serves a stage, and why (recorded in result rows)."""

    layout: str  # "plain" or "split-hot"
    hot_share: float
    hot_rows: int
    reason: str

    @property
    def split_hot(self) -> bool:
        return self.layout == "split-hot"

    def params(self) -> dict:
        return {"layout": self.layout, "hot_share": round(self.hot_share, 4), "layout_reason": self.reason}


def hot_share(table_ids: Sequence[np.ndarray], carveout_rows: int) -> float:
    """Share of the lookups in ``table_ids`` (one id array per table) that the ``carveout_rows`` most
    frequent (table, row) pairs take: what a window over the split-hot region could keep in L2."""
    return share_of_counts([np.unique(np.asarray(t), return_counts=True)[1] for t in table_ids], carveout_rows)


def share_of_counts(counts: Sequence[np.ndarray], carveout_rows: int) -> float:
    """:func:`hot_share` from per-table access counts (e.g. a frequency ranking's ``ranked_counts``)."""
    counts = [np.asarray(c) for c in counts if np.asarray(c).size]
    if not counts or carveout_rows <= 0:
        return 0.0
    c = np.concatenate(counts)
    c = c[c > 0]
    k = min(int(carveout_rows), c.size)
    top = np.partition(c, c.size - k)[c.size - k :] if k < c.size else c
    return float(top.sum() / c.sum())


def choose_layout(table_ids: Sequence[np.ndarray], row_bytes: int, persisting_l2_bytes: int,
                  previous: LayoutChoice | None = None, counts: Sequence[np.ndarray] | None = None) -> LayoutChoice:
    """Plain or split-hot for a batch's ids (a sample is enough), given the GPU's persisting-L2 carve-out;
    pass per-table access ``counts`` instead of ids when a ranking already has them.

    With ``previous``, the layout changes only when the share crossed the threshold by more than
    :data:`HYSTERESIS`, so a server re-deciding per batch does not flip on noise."""
    k = int(persisting_l2_bytes) // max(int(row_bytes), 1)
    share = share_of_counts(counts, k) if counts is not None else hot_share(table_ids, k)
    if k == 0:
        return LayoutChoice("plain", 0.0, 0, "this GPU has no persisting L2 carve-out")
    threshold = SPLIT_HOT_SHARE
    if previous is not None:
        threshold += HYSTERESIS if previous.layout == "plain" else -HYSTERESIS
    layout = "split-hot" if share >= threshold else "plain"
    cmp = ">=" if layout == "split-hot" else "<"
    return LayoutChoice(layout, share, k, f"the {k:,} hottest rows that fit the persisting L2 carve-out take "
                                           f"{share:.0%} of lookups ({cmp} {threshold:.0%})")


def bandwidth_factor(limits: dict) -> float:
    """HBM bandwidth per SM relative to the H100's (Little's law: more bandwidth, more bytes in flight)."""
    clock, bits, sms = limits.get("mem_clock_khz"), limits.get("mem_bus_bits"), limits.get("sms")
    if not (clock and bits and sms):
        return 1.0
    bw = 2 * clock * 1e3 * bits / 8  # double data rate
    return float(np.clip(bw / sms / _H100_BW_PER_SM, 0.5, 2.0))


def register_cap(limits: dict) -> int:
    """Registers per thread that keep half the SM's threads resident (64 on Hopper and Ampere)."""
    cap = limits["regs_per_sm"] // max(limits["threads_per_sm"] // 2, 1)
    return int(max(32, min(128, cap // 8 * 8)))


def derive_knobs(dim: int, dtype: str, pooling_mean: float, split_hot: bool, limits: dict) -> dict:
    """The fused kernel's knobs for a shape on a GPU without a tuned entry (see the module doc)."""
    vec = table_dtype(dtype).vector if dim % table_dtype(dtype).vector == 0 else 1
    lanes = 1
    while lanes < min(-(-dim // vec), 32):
        lanes *= 2
    vectors = -(-dim // (vec * lanes))
    unroll = int(np.clip(round(VECTORS_IN_FLIGHT[split_hot] * bandwidth_factor(limits) / vectors), 2, 16))
    unroll = min(unroll, max(1, int(np.ceil(pooling_mean))))  # short bags: no slots that re-read a row
    split = 1
    if not split_hot:
        while split < 4 and pooling_mean / (2 * split) >= IDS_PER_GROUP_FACTOR * unroll:
            split *= 2
    bags = max(1, BLOCK_THREADS // (lanes * split))
    # a bag's ids staged in one go up to 160; at most ~12 KB of staged ids and weights per block
    chunk = int(min(160, max(32, -(-int(np.ceil(pooling_mean)) // 32) * 32), max(32, STAGED_BYTES // (bags * 12))))
    chunk -= chunk % 32 if chunk > 32 else 0
    return {"unroll": unroll, "split": split, "bags_per_block": bags, "chunk": chunk,
            "max_registers": register_cap(limits)}
