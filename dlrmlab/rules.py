"""The rules the fused path configures itself with, where no tuned entry exists: pure functions of the
shape, the ids' hotness and the GPU's properties.

* :func:`choose_layout` — plain tables, or the split-hot layout behind a persisting L2 window. The split
  layout pays off when the hottest rows that fit the persisting carve-out take most lookups: then a window
  keeps them in L2 across batches. In the H100 sweep (``results/h100/shape_sweep.csv``: widths 32-256,
  batches 512-16384, random ids, the medium trace, Zipf 1.1; the best of each layout's candidates) the
  window won by 2-15% at 8 of the 11 points whose share of the batches' lookups was at least
  :data:`SPLIT_HOT_SHARE`, lost by 5-15% at the other 3 (width 256 at batch 2048, widths 32 and 64 at
  pooling 20), and lost by up to 32% at most points below it (the medium trace at width 256, share 18%).
  Two of those three are short bags of narrow rows, which stay plain (:data:`MIN_BAG_BYTES`).
* :func:`derive_knobs` — rows in flight, lane groups per bag, bags per block, staged ids and the register
  cap from the row width, pooling and the GPU (registers and threads per SM, memory bandwidth per SM). Its
  constants come from the same sweep: over its 66 (point, layout) pairs the rule's configuration took 1.03x
  the best candidate's time (geometric mean; at most 1.17x), where the fixed untuned default took 1.21x
  (plain) and 1.09x (split-hot), at most 1.66x (``dlrmlab.bench.shapes.rule_regret``). Quantized rows hold
  many sums per lane (16 for int8, 32 for int4), so their register cap and rows in flight are chosen together
  (:func:`quantized_registers`), and their staged ids are sized so that shared memory does not cut the blocks
  per SM (:func:`chunk_for`): with the float rules an int8 stage ran at 44% occupancy, limited by shared
  memory, with DRAM at 61% of peak (``results/h100/profile_int8_random.csv``); with these rules, 126 registers
  under the cap of 128 keep 25% of an SM's threads and DRAM reaches 72-74% (the same file's later rows), and
  int8 runs 2.49x faster than fp32 (``results/h100/quantized.csv``); caps of 96 and 168 were slower.

Both together, scored at the 31 sweep points whose hot share the grid run recorded (the layout from the
share and the bags' bytes, then the knobs; ``dlrmlab.bench.shapes.served_regret``): 1.026x the best measured
configuration of either layout (geometric mean; 1.035x before the short-bag rules), at most 1.23x (width 32,
batch 512, the medium trace: share 68%, below the threshold, where split-hot was 23% faster).

**Why a derived rule and not a nearest-entry table.** Leave one shape out over the same 31 points
(``dlrmlab.bench.shapes.nearest_vs_rule``): serving each shape the best configuration of its nearest measured
neighbour (octaves of row bytes, batch and pooling, plus 4 x the hot shares' difference) took 1.059x the
held-out shape's best (geometric mean over the 30 points where both choices were measured; worst 1.47x; the
best at 11), the derived rule 1.026x (worst 1.23x; the best at 19). The rule's constants were read off the
whole sweep, not refitted without each shape, so its score is optimistic; the gap (and the neighbour's
1.47x, a layout carried across a share boundary) is why dlrmlab ships a rule plus tuned entries, not a grid.

Both are data-free and cheap: the harness, the API and the DLRM module call them per stage, and every
result row records what they chose and why.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dlrmlab import quant

#: Split-hot when the carve-out's rows take at least this share of a batch's lookups (see module doc).
SPLIT_HOT_SHARE = 0.75
#: Split-hot only when a bag reads at least this many bytes (pooling x row bytes). At pooling 20 on Zipf 1.1
#: (shares 84-88%) plain rows were 18% faster at width 32 (2.5 KiB bags: 0.100 vs 0.118 ms) and 7% at width 64
#: (5 KiB: 0.163 vs 0.174 ms), while split-hot won by 2.5% at width 128 (10 KiB: 0.289 vs 0.296 ms) and at
#: every point of pooling 150 but one (bags of 19-150 KiB); 8 KiB lies between.
MIN_BAG_BYTES = 8 * 1024
#: Re-decide a layout only when the share moved by more than this (no flapping around the threshold).
HYSTERESIS = 0.05
#: 16-byte vectors each lane keeps in flight: plain rows mostly miss L2 and want more; split-hot rows hit.
VECTORS_IN_FLIGHT = {False: 10, True: 8}
#: Threads per block: 128 won or tied at every width of the sweep, for both layouts.
BLOCK_THREADS = 128
#: A lane group should get at least this many rows in flight's worth of a bag's ids (else split less).
IDS_PER_GROUP_FACTOR = 3
#: Plain rows of bags this short (one 32-id staged chunk) get half the rows in flight in half-size blocks. At
#: pooling 20, 5 rows in 64-thread blocks took 0.91x-1.04x the time of 10 rows in 128-thread blocks (geometric
#: mean 0.98x over widths 32-128 and the three id sets; 0.91x at width 32 on Zipf 1.1, 1.04x at 64 on random).
SHORT_BAG_IDS = 32
#: Shared memory a block's staged ids may take (occupancy is register-limited only below this).
STAGED_BYTES = 12 * 1024
#: The H100 the constants were measured on: bytes per second of HBM per SM.
_H100_BW_PER_SM = 3.35e12 / 132
#: Registers a thread of the fused kernel needs besides its rows in flight and its sums (ids, offsets, loops),
#: and per row in flight besides its 16-byte vectors (scale, bias, the 64-bit row address). Read off ptxas
#: (sm_90, ``occupancy.ptxas_resources``): at width 128 an int8 lane spills at 8 rows in flight under a cap of
#: 96 and at 12 under 128, not at 4 and 8; an int4 lane at 8 under 96, not at 4 (96) or 8 (128).
BASE_REGISTERS, REGISTERS_PER_ROW = 28, 4
#: Static shared memory a kernel may declare (CUDA's limit without an opt-in).
STATIC_SMEM = 48 * 1024
#: Register caps the rule weighs for quantized rows, whose packed rows in flight share registers with many sums.
QUANTIZED_CAPS = (64, 96, 128)


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


def sampled_share(table_ids: Sequence[np.ndarray], carveout_rows: int, max_ids: int, seed: int = 0) -> float:
    """:func:`hot_share` estimated from at most ``max_ids`` of a batch's ids (the same random fraction ``f`` of
    every table's): the top ``k * f`` rows of the sample stand for the top ``k`` of the batch. Exact when the
    batch has at most ``max_ids`` ids; an estimate otherwise (on uniform ids it reads high, as a sample's rows
    repeat less), which is enough to tell a skewed batch from a flat one."""
    n = sum(int(np.asarray(t).size) for t in table_ids)
    if n <= max_ids:
        return hot_share(table_ids, carveout_rows)
    f, rng = max_ids / n, np.random.default_rng(seed)
    sample = [np.asarray(t)[rng.random(np.asarray(t).size) < f] for t in table_ids]
    return hot_share(sample, max(1, round(carveout_rows * f)))


def choose_layout(table_ids: Sequence[np.ndarray], row_bytes: int, persisting_l2_bytes: int,
                  previous: LayoutChoice | None = None, counts: Sequence[np.ndarray] | None = None,
                  pooling_mean: float | None = None) -> LayoutChoice:
    """Plain or split-hot for a batch's ids (a sample is enough), given the GPU's persisting-L2 carve-out;
    pass per-table access ``counts`` instead of ids when a ranking already has them, and the bags' mean
    length as ``pooling_mean`` (short bags of narrow rows stay plain: :data:`MIN_BAG_BYTES`).

    With ``previous``, the layout changes only when the share crossed the threshold by more than
    :data:`HYSTERESIS`, so a server re-deciding per batch does not flip on noise."""
    k = int(persisting_l2_bytes) // max(int(row_bytes), 1)
    share = share_of_counts(counts, k) if counts is not None else hot_share(table_ids, k)
    return decide_layout(share, k, row_bytes, pooling_mean, previous)


def decide_layout(share: float, carveout_rows: int, row_bytes: int, pooling_mean: float | None = None,
                  previous: LayoutChoice | None = None) -> LayoutChoice:
    """:func:`choose_layout` from a hot share already measured (``carveout_rows``: the rows the carve-out
    holds). The bag-size test is a fact of the shape, so it takes no hysteresis."""
    k = int(carveout_rows)
    if k <= 0:
        return LayoutChoice("plain", 0.0, 0, "this GPU has no persisting L2 carve-out")
    if pooling_mean is not None and pooling_mean * row_bytes < MIN_BAG_BYTES:
        return LayoutChoice("plain", share, k, f"bags of {pooling_mean:g} ids x {row_bytes} B read "
                                               f"{pooling_mean * row_bytes / 1024:.1f} KiB each (< "
                                               f"{MIN_BAG_BYTES // 1024} KiB): the window does not pay back")
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


def quantized_registers(vectors: int, sums: int, target: int, limits: dict) -> tuple[int, int]:
    """(register cap, rows in flight) for quantized rows: the pair that keeps the most rows in flight per SM.

    A lane holds a row in flight as ``4 * vectors`` words of codes plus its scale, bias and address, and keeps
    ``sums`` fp32 sums (16 for an int8 row slice, 32 for int4): at the float rows' cap of 64 registers an int4
    lane fits one row in flight, so a higher cap with fewer threads keeps more bytes in flight. Rows in flight
    never exceed ``target`` (what float rows of that width get); a cap that fits fewer than 2 is not taken."""
    held = 4 * vectors + REGISTERS_PER_ROW
    best = (0, register_cap(limits), 2)
    for cap in QUANTIZED_CAPS:
        fit = (cap - BASE_REGISTERS - sums) // held
        if fit < 2:
            continue
        unroll = min(target, fit)
        threads = min(limits["threads_per_sm"], limits["regs_per_sm"] // cap)
        best = max(best, (threads * unroll, -cap, unroll))
    return (-best[1] if best[0] else best[1]), best[2]


def chunk_for(pooling_mean: float, groups: int, parts_bytes: int, limits: dict, block_threads: int, cap: int) -> int:
    """Ids staged per lane group and pass: a whole bag up to 160, in shared memory that does not cut the
    blocks per SM below what the register cap allows (8-byte row offsets per id, beside the split's sums)."""
    blocks = max(1, min(limits["threads_per_sm"], limits["regs_per_sm"] // cap) // block_threads)
    per_block = min(limits.get("smem_per_sm", 233472) // blocks - limits.get("smem_reserved_per_block", 1024),
                    STATIC_SMEM - 8 * groups)  # a kernel's static shared arrays: 48 KiB, the split's counts too
    budget = per_block - parts_bytes
    fit = max(32, budget // (8 * groups) // 32 * 32)
    return int(min(160, max(32, -(-int(np.ceil(pooling_mean)) // 32) * 32), fit))


def derive_knobs(dim: int, dtype: str, pooling_mean: float, split_hot: bool, limits: dict) -> dict:
    """The fused kernel's knobs for a shape on a GPU without a tuned entry (see the module doc)."""
    vec = quant.vector_values(dtype) if dim % quant.vector_values(dtype) == 0 else 1
    lanes = 1
    while lanes < min(-(-dim // vec), 32):
        lanes *= 2
    vectors = -(-dim // (vec * lanes))
    unroll = int(np.clip(round(VECTORS_IN_FLIGHT[split_hot] * bandwidth_factor(limits) / vectors), 2, 16))
    threads, cap = BLOCK_THREADS, register_cap(limits)
    quantized = quant.is_quantized(dtype)
    sums = vectors * vec + int(quantized and quant.row_format(dtype).has_bias)
    if quantized:
        cap, unroll = quantized_registers(vectors, sums, unroll, limits)
    if not split_hot and pooling_mean <= SHORT_BAG_IDS:
        unroll, threads = max(2, -(-unroll // 2)), BLOCK_THREADS // 2
    unroll = min(unroll, max(1, int(np.ceil(pooling_mean))))  # short bags: no slots that re-read a row
    split = 1
    if not split_hot:
        while split < 4 and pooling_mean / (2 * split) >= IDS_PER_GROUP_FACTOR * unroll:
            split *= 2
    bags = max(1, threads // (lanes * split))
    if quantized:
        part_bytes = lanes * sums * 4 if split > 1 else 0  # one lane group's sums, when bags are split
        # narrow rows make many groups: fewer bags until the smallest chunk's ids, counts and sums fit
        while bags > 1 and bags * split * (32 * 8 + 8 + part_bytes) > STATIC_SMEM:
            bags //= 2
        chunk = chunk_for(pooling_mean, bags * split, bags * split * part_bytes, limits, bags * split * lanes, cap)
    else:  # a bag's ids staged in one go up to 160; at most ~12 KB of staged ids and weights per block
        chunk = int(min(160, max(32, -(-int(np.ceil(pooling_mean)) // 32) * 32), max(32, STAGED_BYTES // (bags * 12))))
        chunk -= chunk % 32 if chunk > 32 else 0
    return {"unroll": unroll, "split": split, "bags_per_block": bags, "chunk": chunk, "max_registers": cap}
