"""Report tables: timing rows joined with Nsight Compute profiles (the committed H100 tables are checked in
tests/data/)."""

from __future__ import annotations

import pandas as pd
import pytest

from dlrmlab.bench import report
from dlrmlab.errors import DlrmlabError


def _rows() -> pd.DataFrame:
    """Two repeats of torch and baseline on two datasets, a cold-L2 row and an untimed row (both left out)."""
    rows = [
        # variant, dataset, median_ms, host_ms, kernel_ms, speedup, cold_l2, timing_valid
        ("torch", "random", 2.0, 0.5, 1.8, 1.0, False, True),
        ("torch", "random", 2.2, 0.5, 2.0, 1.0, False, True),
        ("baseline", "random", 1.0, 2.0, 0.9, 2.0, False, True),
        ("baseline", "random", 1.2, 2.0, 1.1, 1.8, False, True),
        ("baseline", "random", 9.0, 9.0, 9.0, 0.1, True, True),
        ("torch", "high", 4.0, 1.0, 3.0, 1.0, False, True),
        ("baseline", "high", 2.0, 0.5, 1.5, 2.0, False, True),
        ("baseline", "high", 7.0, 0.5, 7.0, 0.5, False, False),
    ]
    cols = ["variant", "dataset", "median_ms", "host_ms", "kernel_ms", "speedup_vs_torch", "cold_l2", "timing_valid"]
    return pd.DataFrame(rows, columns=cols)


def _profiles() -> pd.DataFrame:
    return pd.DataFrame({
        "variant": ["baseline", "baseline"], "dataset": ["random", "random"], "registers": [40.0, 45.0],
        "theoretical_occupancy": [0.75, 0.625], "achieved_occupancy": [0.5, 0.5], "l2_hit_rate": [0.1, 0.2],
        "stall_long_scoreboard_share": [0.6, 0.64], "stall_wait_share": [0.1, 0.09], "stall_selected_share": [0.9, 0.9],
    })  # fmt: skip


def test_variant_table_medians_ratios_and_host_share():
    t = report.variant_table(_rows()).set_index(["variant", "dataset"])
    assert len(t) == 4 and not t.index.duplicated().any()
    base = t.loc[("baseline", "random")]  # the cold-L2 row is left out
    assert base["median_ms"] == pytest.approx(1.1) and base["speedup_vs_torch"] == pytest.approx(1.9)
    assert base["host_share"] == 1.0  # host time over stage time, at most 1
    assert base["kernel_speedup_vs_torch"] == pytest.approx(1.9 / 1.0)
    high = t.loc[("baseline", "high")]  # the untimed row is left out
    assert high["median_ms"] == 2.0 and high["host_share"] == pytest.approx(0.25)
    assert (t.xs("torch", level="variant")["kernel_speedup_vs_torch"] == 1.0).all()


def test_variant_table_joins_the_last_profile_of_each_variant_and_dataset():
    t = report.variant_table(_rows(), _profiles()).set_index(["variant", "dataset"])
    base = t.loc[("baseline", "random")]
    assert base["registers"] == 45 and base["theoretical_occupancy"] == pytest.approx(0.625)
    assert base["top_stalls"] == "long_scoreboard 64%, wait 9%"
    assert t.loc[("baseline", "high")][["registers", "top_stalls"]].isna().all()  # no profile: left empty
    assert t.loc[("torch", "random")][["registers", "l2_hit_rate"]].isna().all()


def test_top_stalls_and_bad_rows():
    row = pd.Series({"stall_wait_share": 0.2, "stall_selected_share": 0.5, "stall_long_scoreboard_share": 0.3})
    assert report.top_stalls(row, 2) == "long_scoreboard 30%, wait 20%"
    with pytest.raises(DlrmlabError):
        report.variant_table(pd.DataFrame({"variant": ["a"]}))
