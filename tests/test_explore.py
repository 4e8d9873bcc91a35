"""dlrmlab.explore: the explore notebook's function and the claim notebooks' helpers."""

from __future__ import annotations

import json

import pytest

from dlrmlab import explore
from dlrmlab.errors import DlrmlabError


def test_variant_params_pass_only_the_knobs_a_variant_takes():
    assert explore.variant_params("baseline", 32, 4, 1000) == {"max_registers": 32}
    assert explore.variant_params("rpf", 0, 4, 1000) == {"prefetch_distance": 4}
    assert explore.variant_params("combined", 40, 3, 500) == {"max_registers": 40, "prefetch_distance": 3,
                                                               "hot_rows": 500}
    assert explore.variant_params("fast", None, 2, 5) == {}


def test_in_flight_follows_the_occupancy_calculator():
    base = explore.in_flight("baseline", 45, 2)
    assert base["warps_per_sm"] == 40 and base["rows_in_flight"] == 1
    assert base["bytes_in_flight_per_sm"] == 40 * 128
    rpf = explore.in_flight("rpf", 32, 2)
    assert rpf["warps_per_sm"] == 64 and rpf["bytes_in_flight_per_sm"] == 64 * 128 * 3
    assert explore.in_flight("fast", 64, 2)["bytes_in_flight_per_sm"] == 32 * 512 * 8


def test_l2_hit_rates_pinning_raises_the_hit_rate_on_skewed_data():
    t = explore.l2_hit_rates("high", 15_000)
    assert len(t) == 2 and t["hit_rate"].iloc[1] > t["hit_rate"].iloc[0]
    assert t["prefill_dram_bytes"].iloc[1] > 0


def test_explore_draws_three_panels():
    fig = explore.explore("optmt", max_registers=32, dataset="high")
    assert len(fig.axes) == 4  # three panels, one with a twin axis
    with pytest.raises(DlrmlabError, match="unknown variant"):
        explore.explore("torch")


def test_committed_claim(tmp_path):
    text, png = explore.committed_claim("optmt", tmp_path)
    assert "No committed report" in text and png is None
    manifest = {"preset": "paper", "environment": {"gpu": "NVIDIA H100 80GB HBM3 (sm_90)", "date": "2026-11-26 16:00"},
                "claims": {"optmt": {"section": "## 5. OptMT\n\n![OptMT](optmt.png)\n\nText.", "date": "2026-11-26",
                                     "files": ["optmt.csv", "optmt.png", "optmt.svg"]}}}  # fmt: skip
    (tmp_path / "reproduce.json").write_text(json.dumps(manifest))
    text, png = explore.committed_claim("optmt", tmp_path)
    assert "NVIDIA H100 80GB HBM3, 2026-11-26" in text and "![" not in text and "Text." in text
    assert png == tmp_path / "optmt.png"
    assert "no section" in explore.committed_claim("rpf", tmp_path)[0]
