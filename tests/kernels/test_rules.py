"""The fused path's self-configuration rules: pure functions of ids, shape and GPU properties."""

from __future__ import annotations

import numpy as np
import pytest

from dlrmlab import device, rules
from dlrmlab.fused import configure

H100 = device.H100_LIMITS


def test_hot_share_counts_the_top_rows_of_all_tables_together():
    t0 = np.array([1, 1, 1, 1, 2, 3])  # row 1 of table 0 takes 4 of 6
    t1 = np.array([7, 7, 8, 9])
    assert rules.hot_share([t0, t1], 1) == pytest.approx(4 / 10)
    assert rules.hot_share([t0, t1], 2) == pytest.approx(6 / 10)
    assert rules.hot_share([t0, t1], 100) == 1.0
    assert rules.hot_share([], 5) == 0.0 and rules.hot_share([t0], 0) == 0.0


def test_layout_follows_the_share_with_hysteresis():
    skewed = [np.repeat(np.arange(10), 100)]  # 10 rows take everything
    uniform = [np.arange(100_000)]
    hot = rules.choose_layout(skewed, row_bytes=512, persisting_l2_bytes=512 * 10)
    assert hot.split_hot and hot.hot_share == 1.0 and "100%" in hot.reason
    cold = rules.choose_layout(uniform, row_bytes=512, persisting_l2_bytes=512 * 10)
    assert not cold.split_hot and cold.params()["layout"] == "plain"
    assert rules.choose_layout(skewed, 512, 0).reason.startswith("this GPU has no persisting")
    # a share just above the threshold keeps a plain layout plain, and a split one split
    ids = [np.concatenate([np.zeros(67, int), np.arange(1, 21)])]  # share 67 / 87 = 0.77
    share = rules.hot_share(ids, 1)
    assert rules.SPLIT_HOT_SHARE <= share < rules.SPLIT_HOT_SHARE + rules.HYSTERESIS
    assert not rules.choose_layout(ids, 8, 8, previous=cold).split_hot
    assert rules.choose_layout(ids, 8, 8, previous=hot).split_hot


@pytest.mark.parametrize("dim", [16, 32, 64, 128, 256, 512])
@pytest.mark.parametrize("pooling", [1, 20, 150, 500])
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("split_hot", [False, True])
def test_derived_knobs_make_a_valid_configuration(dim, pooling, dtype, split_hot):
    k = rules.derive_knobs(dim, dtype, pooling, split_hot, H100)
    cfg = configure(dim, dtype, split_hot=split_hot, tuned_params=k)
    assert cfg.threads <= 1024 and cfg.unroll <= max(1, pooling)
    assert cfg.chunk * cfg.bags_per_block * 12 <= rules.STAGED_BYTES or cfg.chunk == 32


def test_the_rule_reproduces_the_h100_sweeps_winners():
    """At the paper's width the plain rule is the shipped entry's shape (4 lane groups, 10 rows in flight,
    128 threads); short bags get one group; wider rows fewer rows in flight."""
    assert rules.derive_knobs(128, "float32", 150, False, H100) == {
        "unroll": 10, "split": 4, "bags_per_block": 1, "chunk": 160, "max_registers": 64}
    assert rules.derive_knobs(128, "float32", 20, False, H100)["split"] == 1
    assert rules.derive_knobs(256, "float32", 150, False, H100)["unroll"] == 5
    assert rules.derive_knobs(256, "float32", 150, True, H100) == {
        "unroll": 4, "split": 1, "bags_per_block": 4, "chunk": 160, "max_registers": 64}


def test_the_gpu_moves_the_rule():
    """More bandwidth per SM: more rows in flight; fewer registers per thread budgeted: a lower cap."""
    h200 = {**H100, "mem_clock_khz": 2_619_000 * 48 // 33}  # 4.8 TB/s
    assert rules.bandwidth_factor(H100) == pytest.approx(1.0, abs=0.01)
    assert rules.derive_knobs(256, "float32", 150, False, h200)["unroll"] > 5
    l40s = {**H100, "threads_per_sm": 1536, "mem_clock_khz": None}
    assert rules.register_cap(l40s) == 80 and rules.bandwidth_factor(l40s) == 1.0


@pytest.mark.parametrize("dim", [16, 32, 64, 128, 256, 512])
@pytest.mark.parametrize("pooling", [1, 20, 150, 500])
@pytest.mark.parametrize("dtype", ["int8", "int4", "fp8"])
def test_quantized_knobs_fit_registers_and_shared_memory(dim, pooling, dtype):
    """Quantized rows: the rows in flight and the sums fit the chosen register cap (no spills by the rule's
    count), and staged ids plus the split's sums leave the blocks per SM that the cap allows."""
    k = rules.derive_knobs(dim, dtype, pooling, False, H100)
    cfg = configure(dim, dtype, tuned_params=k)
    assert k["max_registers"] in rules.QUANTIZED_CAPS and cfg.threads <= 1024
    per_row = 4 * cfg.vectors + rules.REGISTERS_PER_ROW
    assert cfg.unroll * per_row + cfg.accumulators + rules.BASE_REGISTERS <= k["max_registers"] or cfg.unroll <= 2
    parts = cfg.threads * cfg.accumulators * 4 if cfg.split > 1 else 0
    blocks = min(H100["threads_per_sm"], H100["regs_per_sm"] // k["max_registers"]) // cfg.threads
    smem = cfg.bags_per_block * cfg.split * cfg.chunk * 8 + parts + H100["smem_reserved_per_block"]
    assert smem * blocks <= H100["smem_per_sm"] or cfg.chunk == 32
    assert smem - H100["smem_reserved_per_block"] <= rules.STATIC_SMEM or cfg.chunk == 32


def test_int4_rows_take_a_higher_register_cap_than_floats():
    """An int4 lane's 33 sums leave no room for two rows in flight at 64 registers; the rule takes a higher cap."""
    fp32, int4 = rules.derive_knobs(128, "float32", 150, False, H100), rules.derive_knobs(128, "int4", 150, False, H100)
    assert fp32["max_registers"] == 64 and int4["max_registers"] > 64 and int4["unroll"] >= 8
    assert rules.quantized_registers(1, 33, 10, H100) == (128, 8)
    assert rules.quantized_registers(1, 17, 10, H100) == (128, 10)


def test_short_bags_of_narrow_rows_stay_plain_whatever_the_share():
    """Bags under MIN_BAG_BYTES stay plain (no hysteresis: a fact of the shape); at or above it the share decides."""
    short = rules.decide_layout(0.9, 1000, row_bytes=128, pooling_mean=20)  # 2.5 KiB bags
    assert not short.split_hot and "2.5 KiB" in short.reason and short.hot_share == 0.9
    assert rules.decide_layout(0.9, 1000, row_bytes=512, pooling_mean=20).split_hot  # 10 KiB bags
    assert rules.decide_layout(0.9, 1000, row_bytes=128, pooling_mean=None).split_hot  # pooling unknown
    split = rules.decide_layout(0.9, 1000, 512, 20)
    assert not rules.decide_layout(0.9, 1000, 128, 20, previous=split).split_hot
    ids = [np.repeat(np.arange(10), 100)]
    assert not rules.choose_layout(ids, 8, 80, pooling_mean=20).split_hot
    assert rules.choose_layout(ids, 8, 80, pooling_mean=2048).split_hot


def test_short_plain_bags_get_half_the_rows_in_half_size_blocks():
    """The H100 sweep's winners at pooling 20: 5 rows in flight in 64-thread blocks (1x8x5 at width 32,
    1x4x5 at 64, 1x2x5 at 128); split-hot rows keep their knobs."""
    for dim, bags in ((32, 8), (64, 4), (128, 2)):
        k = rules.derive_knobs(dim, "float32", 20, False, H100)
        assert (k["split"], k["bags_per_block"], k["unroll"]) == (1, bags, 5)
    assert rules.derive_knobs(32, "float32", 20, True, H100)["bags_per_block"] == 16
    assert rules.derive_knobs(32, "float32", 1, False, H100)["unroll"] == 1
