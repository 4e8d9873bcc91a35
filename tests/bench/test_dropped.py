"""Nothing silently dropped: trace ids >= rows and repeated traces are counted in the case
and in every result row (``dropped_ids``, ``trace_wraps``); older results files gain the columns (0 for
generated datasets, empty for traces) and keep appending."""

from __future__ import annotations

import warnings

import pandas as pd
import pytest

from dlrmlab.bench import results, schema, sweep
from dlrmlab.bench.case import BenchCase
from dlrmlab.datasets import TraceWarning


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
        res = sweep.run_bench([host_variant], [trace, "random"], "tiny", n_batches=2, repeats=1, warmup_s=0,
                                include_torch=False, out=tmp_path)  # fmt: skip
    rows = res.rows.set_index("dataset")
    assert list(rows.columns[rows.columns.get_loc("n_batches") + 1:][:2]) == ["dropped_ids", "trace_wraps"]
    assert rows.loc[trace.replace("trace:", "trace:"), "dropped_ids"] > 0
    assert rows.loc["random", ["dropped_ids", "trace_wraps"]].tolist() == [0, 0]
    on_disk = pd.read_csv(tmp_path / "bench.csv")
    assert {"dropped_ids", "trace_wraps"} <= set(on_disk.columns)
    assert "dropped_ids" in schema.COLUMN_DOCS and "trace_wraps" in schema.COLUMN_DOCS


def test_with_trace_columns_upgrades_old_rows():
    old = pd.DataFrame({"dataset": ["random", "trace:low"], "n_batches": [4, 4], "cold_l2": [False, False]})
    up = schema.with_trace_columns(old)
    assert list(up.columns) == ["dataset", "n_batches", "dropped_ids", "trace_wraps", "cold_l2"]
    assert up["dropped_ids"].tolist()[0] == 0 and pd.isna(up["dropped_ids"].tolist()[1])
    assert schema.with_trace_columns(up) is up
    runs = pd.DataFrame({"dataset": ["random"], "cold_l2": [False], "round": [0]})  # a runs table: no n_batches
    assert schema.with_trace_columns(runs) is runs


def test_old_results_file_is_upgraded_then_appended(tmp_path, host_variant):
    res = sweep.run_bench([host_variant], ["random"], "tiny", n_batches=1, repeats=1, warmup_s=0,
                            include_torch=False)  # fmt: skip
    old = res.rows.drop(columns=["dropped_ids", "trace_wraps", "timing_mode", "serving_block"])
    results.append_results(old, "bench", tmp_path)  # a file from before both upgrades
    sweep.run_bench([host_variant], ["random"], "tiny", n_batches=1, repeats=1, warmup_s=0, include_torch=False,
                      out=tmp_path)  # fmt: skip
    df = pd.read_csv(tmp_path / "bench.csv")
    assert len(df) == 2 and df["dropped_ids"].tolist() == [0, 0]
    assert df["timing_mode"].tolist() == ["interleaved", "serving"]
