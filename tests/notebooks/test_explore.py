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


@pytest.fixture
def shown(monkeypatch):
    """What the notebook helpers display, in order (IPython's display replaced by a list)."""
    IPython_display = pytest.importorskip("IPython.display")
    out = []
    monkeypatch.setattr(IPython_display, "display", lambda obj: out.append(obj))
    return out


def test_show_claim_shows_verdict_figure_and_table(shown, monkeypatch):
    import pandas as pd

    from dlrmlab.report.claims import CLAIMS

    data = pd.DataFrame({"dataset": ["random"], "speedup": [1.5], "extra": [0]})
    res = type("R", (), {"ours": "1.50x", "reproduced": "yes", "text": "Why.", "error": "", "figure": "FIG",
                         "data": data, "key_columns": ["dataset", "speedup"]})()  # fmt: skip
    monkeypatch.setattr(explore, "run_claim", lambda claim, ctx: (res, 2.0))
    assert explore.show_claim("optmt", ctx=None) is res
    verdict, figure, table = shown
    assert CLAIMS["optmt"].paper in verdict.data and "**Here:** 1.50x" in verdict.data and "(2 s)" in verdict.data
    assert figure == "FIG" and list(table.columns) == ["dataset", "speedup"]


def test_show_committed_claim_shows_text_then_figure(shown, tmp_path):
    explore.show_committed_claim("optmt", tmp_path)  # no report: the note only
    assert len(shown) == 1 and "No committed report" in shown[0].data
    manifest = {"claims": {"optmt": {"section": "Text.", "files": ["optmt.png"]}}}
    (tmp_path / "reproduce.json").write_text(json.dumps(manifest))
    (tmp_path / "optmt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 16)
    shown.clear()
    explore.show_committed_claim("optmt", tmp_path)
    assert "Text." in shown[0].data and shown[1].filename == str(tmp_path / "optmt.png")
