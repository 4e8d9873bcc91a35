"""dlrmlab.teach: the instrumented kernels record the addresses the real kernels' layouts load."""

from __future__ import annotations

import numpy as np
import pytest

from dlrmlab import teach
from dlrmlab.errors import DlrmlabError


@pytest.fixture(scope="module")
def batch():
    return teach.tiny_batch(bags=16, pooling=3, rows=512, seed=1)


@pytest.mark.parametrize("layout", list(teach.LAYOUTS))
@pytest.mark.parametrize("dim", [128, 24])
def test_every_element_of_every_looked_up_row_is_loaded_once(batch, layout, dim):
    idx, off = batch
    loads = teach.record_loads(layout, idx, off, dim=dim, warps=8)
    elems = []
    for e, b in zip(loads["element"], loads["bytes"], strict=True):
        elems.extend(range(e, e + b // 4))
    want = sorted(int(i) * dim + c for i in idx for c in range(dim))
    assert sorted(elems) == want


def test_coalescing_counts_fp32_dim128(batch):
    idx, off = batch
    s = teach.transaction_summary(teach.record_all(idx, off, dim=128, warps=8)).set_index("layout")
    assert s.loc["per-feature", "bytes_per_request"] == 128
    assert s.loc["per-feature", "sectors_per_request"] == 4
    assert s.loc["per-feature", "lines_per_request"] == 1
    assert s.loc["vector16", "bytes_per_request"] == 512
    assert s.loc["vector16", "sectors_per_request"] == 16
    assert s.loc["vector16", "instructions"] * 4 == s.loc["per-feature", "instructions"]
    assert s.loc["per-feature", "efficiency"] == 1.0 and s.loc["vector16", "efficiency"] == 1.0
    assert s.loc["thread-per-bag", "efficiency"] < 0.2
    # one warp instruction: 16 bags' distinct rows, one 4-byte column each (one sector per row)
    r = teach.warp_requests(teach.record_loads("thread-per-bag", idx, off, 128, warps=8))
    first = r.iloc[0]
    assert first["lanes"] == 16 and first["sectors"] == first["rows"]


def test_half_precision_vectors_hold_eight_values(batch):
    idx, off = batch
    loads = teach.record_loads("vector16", idx, off, dim=128, element_bytes=2, warps=8)
    assert set(loads["bytes"]) == {16}
    assert teach.lanes_for(128, 8) == 16


def test_refusals(batch):
    idx, off = batch
    with pytest.raises(DlrmlabError, match="unknown layout"):
        teach.record_loads("diagonal", idx, off)
    with pytest.raises(DlrmlabError, match="element_bytes"):
        teach.record_loads("vector16", idx, off, element_bytes=8)


def test_figures(batch):
    idx, off = batch
    loads = teach.record_all(idx, off, dim=64, warps=8)
    assert len(teach.plot_warp_request(loads, dim=64).axes) == 3
    assert len(teach.plot_transactions(teach.transaction_summary(loads)).axes) == 2
    assert np.isfinite(teach.transaction_summary(loads)["efficiency"]).all()


def test_littles_law():
    need = teach.littles_law(3000, 500, sms=100)
    assert need["bytes_in_flight"] == pytest.approx(1.5e6)
    assert need["bytes_in_flight_per_sm"] == pytest.approx(15_000)
    got = teach.achievable_gbps([0, 7_500, 15_000, 30_000], 500, 3000, sms=100)
    assert list(got) == pytest.approx([0, 1500, 3000, 3000])


def test_in_flight_table_reads_littles_law_backwards():
    import pandas as pd

    prof = pd.DataFrame({
        "variant": ["baseline", "fast"], "dataset": "random", "kernel": ["embedding_bag_paper", "embedding_bag_fused"],
        "tables": 12, "batch": 2048, "pooling": 150, "dim": 128, "dtype": "float32", "registers": [45, 64],
        "theoretical_occupancy": [0.625, 0.5], "achieved_occupancy": [0.5, 0.5], "gpu_time_us": [100.0, 600.0],
        "dram_throughput_pct": [50.0, 90.0], "stall_long_scoreboard_share": [0.6, 0.8],
    })  # fmt: skip
    t = teach.in_flight_table(prof, latency_ns=600, sms=132).set_index("variant")
    one_table = 2048 * 150 * 128 * 4
    assert t.loc["baseline", "achieved_gbps"] == pytest.approx(one_table / 100e3)
    assert t.loc["fast", "achieved_gbps"] == pytest.approx(12 * one_table / 600e3)
    assert t.loc["fast", "bytes_per_instruction"] == 512 and t.loc["baseline", "bytes_per_instruction"] == 128
    need = t.loc["baseline", "achieved_gbps"] * 600 / 132
    assert t.loc["baseline", "loads_in_flight_per_warp"] == pytest.approx(need / (32 * 128))
    assert teach.kernel_family("EmbeddingBag_updateOutputKernel_sum_mean") == "torch"
    assert len(teach.plot_littles_law(t.reset_index(), 600, 3350).axes) == 1
