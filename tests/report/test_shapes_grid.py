"""The shape grid: its points, the per-point summary (best cuEmbed layout, ratios, the layout chosen) and
the heatmap, from rows shaped as the harness writes them."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from dlrmlab.bench import shapes


def test_grid_has_every_width_batch_and_pooling():
    st = shapes.grid_stages()
    assert len(st) == 12 and {s.embedding_dim for s in st} == {32, 64, 128, 256}
    assert {(s.batch_size, s.pooling.mean) for s in st} == {(512, 150), (2048, 150), (16384, 20)}
    assert all(s.num_tables == 12 and s.embedding_sizes[0] == 500_000 for s in st)


def _rows() -> pd.DataFrame:
    rows = []
    for ds, (torch, fixed, csr, fast, layout) in {"random": (1.0, 0.50, 0.60, 0.40, "plain"),
                                                   "zipf:1.1": (0.9, 0.20, 0.25, 0.25, "split-hot")}.items():
        for v, ms, p in (("torch", torch, {}), ("cuembed_graph", fixed, {"layout": "fixed"}),
                         ("cuembed_graph", csr, {"layout": "csr"}),
                         ("fast_graph", fast, {"layout": layout, "hot_share": 0.9, "config_source": "rule"})):
            rows.append({"variant": v, "dataset": ds, "dim": 64, "batch": 512, "pooling": 150, "median_ms": ms,
                         "correct": True, "params": json.dumps(p), "effective_gbps": 1.0})
    return pd.DataFrame(rows)


def test_summary_takes_cuembeds_best_layout_and_records_the_choice():
    s = shapes.summary(_rows()).set_index("dataset")
    assert s.loc["random", "cuembed_layout"] == "fixed" and s.loc["random", "vs_cuembed"] == pytest.approx(1.25)
    assert s.loc["random", "vs_torch"] == pytest.approx(2.5)
    assert s.loc["zipf:1.1", "layout"] == "split-hot" and s.loc["zipf:1.1", "vs_cuembed"] == pytest.approx(0.8)
    assert set(s["config_source"]) == {"rule"}


def test_summary_skips_incorrect_rows():
    rows = _rows()
    rows.loc[rows["variant"] == "fast_graph", "correct"] = False
    assert shapes.summary(rows).empty


def test_heatmap_counts_the_points_behind():
    fig = shapes.heatmap(shapes.summary(_rows()), stamp="test")
    assert "ahead of cuEmbed at 1 of 2 points" in fig._suptitle.get_text()
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert "1.25x" in texts and "0.80x" in texts and "2.50x" in texts
    assert np.isfinite([float(t[:-1]) for t in texts if t.endswith("x")]).all()


def test_the_report_shows_the_committed_grid_without_a_gpu():
    from dlrmlab import backend
    from dlrmlab.explore import claim_context
    from dlrmlab.report.claims import CLAIMS, COMMITTED_GRID
    from dlrmlab.reproduce import run_claim

    if not backend.SIMULATOR or not COMMITTED_GRID.exists():
        pytest.skip("runs the grid on a GPU; needs the committed H100 grid otherwise")
    res, _ = run_claim(CLAIMS["shapes"], claim_context())
    assert res.status == "ok" and "committed results, not this machine" in res.ours
    assert {"layout", "config_source", "vs_cuembed"} <= set(res.data.columns) and res.figure is not None


def test_the_shape_picker_answers_from_the_ids_alone():
    from dlrmlab import explore

    c = explore.shape_choice(32, 64, 10, "zipf:1.1", tables=2, rows=1000)
    assert c["layout"] in ("plain", "split-hot") and c["config_source"] in ("rule", "shipped", "user-cache")
    assert c["threads"] == c["lanes"] * c["split"] * c["bags_per_block"]


def _sweep() -> tuple[pd.DataFrame, pd.DataFrame]:
    """A tiny sweep: three shapes, each with a plain and a split-hot candidate (times made up), and their shares.
    At the two wide shapes split-hot wins; the narrow short-bag shape has plain winning."""
    cands = {  # (dim, batch, pooling, dataset, share): {(variant, split, bags, unroll): ms}
        (128, 512, 150, "zipf:1.1", 0.9): {("fast_graph+window", 1, 4, 8): 1.0, ("fast_graph", 4, 1, 10): 1.2},
        (128, 2048, 150, "zipf:1.1", 0.8): {("fast_graph+window", 1, 4, 8): 2.0, ("fast_graph", 4, 1, 10): 2.2},
        (32, 16384, 20, "zipf:1.1", 0.9): {("fast_graph+window", 1, 16, 8): 3.3, ("fast_graph", 1, 8, 5): 3.0},
    }
    rows, shares = [], []
    for (dim, batch, pooling, ds, share), c in cands.items():
        lanes = min(32, dim // 4)
        for (v, split, bags, unroll), ms in c.items():
            p = {"split": split, "bags_per_block": bags, "unroll": unroll, "lanes": lanes, "split_hot": "+" in v}
            rows.append({"variant": v, "dataset": ds, "dim": dim, "batch": batch, "pooling": pooling,
                         "median_ms": ms, "correct": True, "params": json.dumps(p)})
        shares.append({"dim": dim, "batch": batch, "pooling": pooling, "dataset": ds, "hot_share": share})
    return pd.DataFrame(rows), pd.DataFrame(shares)


def test_served_regret_scores_the_layout_and_the_knobs_together():
    from dlrmlab import device

    r = shapes.served_regret(*_sweep(), device.H100_LIMITS).set_index(["dim", "batch"])
    assert r.loc[(128, 512), "rule"] == "split-hot 1x/128t/8" and r.loc[(128, 512), "regret"] == 1.0
    assert r.loc[(32, 16384), "rule"] == "plain 1x/64t/5" and r.loc[(32, 16384), "regret"] == 1.0
    assert "KiB" in r.loc[(32, 16384), "why"]


def test_nearest_entry_and_the_rule_are_scored_on_the_held_out_shape():
    from dlrmlab import device

    rows, shares = _sweep()
    r = shapes.nearest_vs_rule(rows, shares, device.H100_LIMITS).set_index(["dim", "batch"])
    # the two wide shapes are each other's nearest (two octaves of batch + 4 x 0.1 of share), and agree
    assert r.loc[(128, 512), "nearest"] == "128/2048/150/Zipf 1.1 (synthetic)"
    assert r.loc[(128, 512), "nearest_regret"] == 1.0 and r.loc[(128, 2048), "distance"] == pytest.approx(2.4)
    # the short-bag shape's nearest wants split-hot 1x/128t/8 at 32 lanes x 4 bags: measured here as 8 x 16
    assert r.loc[(32, 16384), "nearest_choice"] == "split-hot 1x/128t/8"
    assert r.loc[(32, 16384), "nearest_regret"] == pytest.approx(1.1) and r.loc[(32, 16384), "rule_regret"] == 1.0
    s = shapes.compare_summary(r.reset_index()).set_index("rule")
    assert s.loc["derived rule", "found_best"] == 3 and s.loc["nearest entry", "found_best"] == 2
    assert s.loc["nearest entry", "geomean_regret"] == pytest.approx(1.1 ** (1 / 3))
    # a choice the sweep did not measure at the held-out shape is not scored
    rows = rows[~((rows["dim"] == 32) & (rows["variant"] == "fast_graph+window"))]
    r = shapes.nearest_vs_rule(rows, shares, device.H100_LIMITS)
    assert r["nearest_regret"].isna().sum() == 1 and shapes.compare_summary(r)["compared"].iloc[0] == 2
