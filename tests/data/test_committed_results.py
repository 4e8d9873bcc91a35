"""Data checks: the results committed under results/ (H100 and H200 measurements) still read as the code expects.

These check files, not code: a new measurement may change a number here without any code being wrong.
They carry the ``data`` marker and run by default; ``-m "not data"`` leaves them out."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from helpers import ROOT

from dlrmlab import l2model, tuned
from dlrmlab.bench import comparison, report, results, schema

pytestmark = pytest.mark.data

RESULTS = ROOT / "results"
H100 = RESULTS / "h100"


def _need(path):
    if not path.exists():
        pytest.skip(f"no committed {path.relative_to(ROOT)}")
    return path


def test_h100_variant_table_joins_profiles():
    """The committed H100 rows and ncu profiles join into one row per (variant, dataset), with the
    baseline's profile as measured: 45 registers, 62.5% theoretical occupancy, long-scoreboard stalls."""
    rows = pd.read_csv(_need(H100 / "reproduce.csv"))
    prof = pd.read_csv(_need(H100 / "profile.csv"))
    t = report.variant_table(rows, prof)
    assert not t.duplicated(["variant", "dataset"]).any()
    torch = t[t["variant"] == "torch"]
    assert (torch["speedup_vs_torch"] == 1.0).all()
    assert t["host_share"].between(0, 1).all()
    base = t[(t["variant"] == "baseline") & (t["dataset"] == "random")].iloc[0]
    assert base["registers"] == 45 and base["theoretical_occupancy"] == pytest.approx(0.625)
    assert base["top_stalls"].startswith("long_scoreboard")


def test_schema_matches_committed_results():
    """Changing the row columns would make every later append to the committed results fail."""
    files = sorted(RESULTS.glob("*/reproduce.csv"))
    if not files:
        pytest.skip("no committed results")
    for f in files:
        assert set(pd.read_csv(f, nrows=0).columns) == set(comparison.expected_columns()), f
        runs = f.with_name("reproduce_runs.csv")
        if runs.exists():
            assert set(pd.read_csv(runs, nrows=0).columns) == set(schema.RUN_COLUMNS), runs


def test_committed_results_have_the_columns():
    """Every committed benchmark rows table has the dropped-ids columns and is already upgraded."""
    for csv in sorted(RESULTS.rglob("*.csv")):
        cols = list(pd.read_csv(csv, nrows=0).columns)
        if "n_batches" in cols and "cold_l2" in cols:  # a benchmark rows table
            assert {"dropped_ids", "trace_wraps"} <= set(cols), csv
            assert results.upgrade(pd.DataFrame(columns=cols)).columns.tolist() == cols, csv


def test_the_committed_profile_has_what_the_l2_model_comparison_needs():
    ncu = pd.read_csv(_need(H100 / "profile.csv"))
    assert {"variant", "dataset", "l2_hit_rate", "l1_hit_rate", "preset", "seed"} <= set(ncu.columns)
    assert any(l2model._has_policy(v) for v in ncu["variant"])


@pytest.mark.torch
def test_the_dlrm_headline_table_is_the_one_the_rows_give():
    """results/README.md's DLRM table and h100/dlrm_best.md are what the committed rows give (ratios against the
    strongest all-PyTorch form of each run, no number typed by hand)."""
    from dlrmlab.dlrm.measure import best_markdown

    table = best_markdown(pd.read_csv(_need(H100 / "dlrm.csv")))
    assert (_need(H100 / "dlrm_best.md")).read_text() == table
    readme = (RESULTS / "README.md").read_text()
    shown = readme.split("<!-- dlrm_best.md (begin) -->\n")[1].split("<!-- dlrm_best.md (end) -->")[0]
    assert shown == table


def test_quantized_newest_run_matches_the_readme_table():
    """The quantized figure's run (the newest in the file) is the README's: every format, one run, and the
    ratios the README's table quotes."""
    from dlrmlab.bench.quantized import latest_run

    rows = latest_run(pd.read_csv(_need(H100 / "quantized.csv")))
    ours = rows[rows["variant"] == "fast_graph"].set_index("format")["speedup_vs_fp32"]
    assert rows["run_id"].nunique() == 1 and rows["correct"].all()
    assert ours.round(2).to_dict() == {"float32": 1.0, "float16": 1.99, "int8": 2.49, "int4": 2.82, "fp8": 2.31}


def test_shipped_h200_entries_are_the_fastest_of_their_committed_sweep():
    """Each shipped H200 entry (plain rows, split-hot rows) is the candidate with the lowest geometric mean
    over the datasets of ``results/h200/tune_fast.csv``."""
    sweep = pd.read_csv(_need(RESULTS / "h200" / "tune_fast.csv"))
    knobs = ["unroll", "bags_per_block", "split", "chunk", "max_registers"]
    params = sweep["params"].map(json.loads)
    for k in knobs:
        sweep[k] = params.map(lambda p, k=k: p[k])
    for variant, split_hot in (("fast_graph", False), ("fast_graph+window", True)):
        runs = sweep[sweep["variant"] == variant]
        geo = runs.groupby(knobs)["median_ms"].apply(lambda ms: float(np.exp(np.log(ms).mean())))
        best = dict(zip(knobs, geo.idxmin(), strict=True))
        entry = tuned.fast_entry("h200", 128, "float32", 150, user_cache={}, split_hot=split_hot)
        assert entry.source == "shipped" and {k: entry.params[k] for k in knobs} == best, variant
