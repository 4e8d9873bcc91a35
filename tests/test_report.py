"""Report tables from the committed H100 results (timings joined with ncu profiles)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from dlrmlab.bench import report
from dlrmlab.errors import DlrmlabError

H100 = Path(__file__).parent.parent / "results" / "h100"


def test_variant_table_joins_profiles():
    rows = pd.read_csv(H100 / "reproduce.csv")
    prof = pd.read_csv(H100 / "profile.csv")
    t = report.variant_table(rows, prof)
    assert not t.duplicated(["variant", "dataset"]).any()
    torch = t[t["variant"] == "torch"]
    assert (torch["speedup_vs_torch"] == 1.0).all()
    assert t["host_share"].between(0, 1).all()
    base = t[(t["variant"] == "baseline") & (t["dataset"] == "random")].iloc[0]
    assert base["registers"] == 45 and base["theoretical_occupancy"] == pytest.approx(0.625)
    assert base["top_stalls"].startswith("long_scoreboard")


def test_top_stalls_and_bad_rows():
    row = pd.Series({"stall_wait_share": 0.2, "stall_selected_share": 0.5, "stall_long_scoreboard_share": 0.3})
    assert report.top_stalls(row, 2) == "long_scoreboard 30%, wait 20%"
    with pytest.raises(DlrmlabError):
        report.variant_table(pd.DataFrame({"variant": ["a"]}))
