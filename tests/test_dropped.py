"""Nothing silently dropped (issue 12, item 4): trace ids >= rows and repeated traces are counted in the case
and in every result row (``dropped_ids``, ``trace_wraps``); older results files gain the columns (0 for
generated datasets, empty for traces) and keep appending."""

from __future__ import annotations

import warnings
from pathlib import Path

import pandas as pd
import pytest

from dlrmlab import variants
from dlrmlab.bench import harness, results
from dlrmlab.bench.case import BenchCase
from dlrmlab.datasets import TraceWarning
from dlrmlab.variants import Prepared, Variant

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def host_variant(monkeypatch):
    monkeypatch.setitem(variants.VARIANTS, "_drop_host",
                        Variant("_drop_host", "test only", lambda case, knobs: Prepared(
                            lambda i: None, lambda i: case.reference(i))))  # fmt: skip
    return "_drop_host"


@pytest.fixture
def trace(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("1\n5000\n2\n3\n")  # one id of four >= rows of the tiny tables; far fewer ids than a batch
    return f"trace:{path}"


def test_case_counts_dropped_ids_and_wraps(trace):
    with pytest.warns(TraceWarning):
        case = BenchCase.create("tiny", trace, n_batches=2)
    ids = 2 * 3 * 8 * 5  # batches x tables x bags x pooling
    assert case.dropped_ids > 0 and case.trace_wraps > 0
    assert case.dropped_ids == pytest.approx(ids / 3, abs=2)  # one id in four is dropped: a third of those kept
    assert case.trace_wraps == pytest.approx((ids + case.dropped_ids) / 4, abs=1)
    d = case.describe()
    assert (d["dropped_ids"], d["trace_wraps"]) == (case.dropped_ids, case.trace_wraps)
    plain = BenchCase.create("tiny", "random", n_batches=1)
    assert (plain.dropped_ids, plain.trace_wraps) == (0, 0)


def test_result_rows_carry_the_counts(trace, tmp_path, host_variant):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TraceWarning)
        res = harness.run_bench([host_variant], [trace, "random"], "tiny", n_batches=2, repeats=1, warmup_s=0,
                                include_torch=False, out=tmp_path)  # fmt: skip
    rows = res.rows.set_index("dataset")
    assert list(rows.columns[rows.columns.get_loc("n_batches") + 1:][:2]) == ["dropped_ids", "trace_wraps"]
    assert rows.loc[trace.replace("trace:", "trace:"), "dropped_ids"] > 0
    assert rows.loc["random", ["dropped_ids", "trace_wraps"]].tolist() == [0, 0]
    on_disk = pd.read_csv(tmp_path / "bench.csv")
    assert {"dropped_ids", "trace_wraps"} <= set(on_disk.columns)
    assert "dropped_ids" in harness.COLUMN_DOCS and "trace_wraps" in harness.COLUMN_DOCS


def test_with_trace_columns_upgrades_old_rows():
    old = pd.DataFrame({"dataset": ["random", "trace:low"], "n_batches": [4, 4], "cold_l2": [False, False]})
    up = harness.with_trace_columns(old)
    assert list(up.columns) == ["dataset", "n_batches", "dropped_ids", "trace_wraps", "cold_l2"]
    assert up["dropped_ids"].tolist()[0] == 0 and pd.isna(up["dropped_ids"].tolist()[1])
    assert harness.with_trace_columns(up) is up
    runs = pd.DataFrame({"dataset": ["random"], "cold_l2": [False], "round": [0]})  # a runs table: no n_batches
    assert harness.with_trace_columns(runs) is runs


def test_old_results_file_is_upgraded_then_appended(tmp_path, host_variant):
    res = harness.run_bench([host_variant], ["random"], "tiny", n_batches=1, repeats=1, warmup_s=0,
                            include_torch=False)  # fmt: skip
    old = res.rows.drop(columns=["dropped_ids", "trace_wraps", "timing_mode", "serving_block"])
    results.append_results(old, "bench", tmp_path)  # a file from before both upgrades
    harness.run_bench([host_variant], ["random"], "tiny", n_batches=1, repeats=1, warmup_s=0, include_torch=False,
                      out=tmp_path)  # fmt: skip
    df = pd.read_csv(tmp_path / "bench.csv")
    assert len(df) == 2 and df["dropped_ids"].tolist() == [0, 0]
    assert df["timing_mode"].tolist() == ["interleaved", "serving"]


def test_committed_results_have_the_columns():
    for csv in sorted((ROOT / "results").rglob("*.csv")):
        cols = list(pd.read_csv(csv, nrows=0).columns)
        if "n_batches" in cols and "cold_l2" in cols:  # a benchmark rows table
            assert {"dropped_ids", "trace_wraps"} <= set(cols), csv
            assert results.upgrade(pd.DataFrame(columns=cols)).columns.tolist() == cols, csv
