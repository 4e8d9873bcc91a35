"""Results on disk: append, load, refuse mismatched columns without touching the file, bad directories."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest
from helpers import ROOT

from dlrmlab.bench.results import append_results, check_columns, check_results_dir, load_results
from dlrmlab.errors import DlrmlabError


def _rows(n: int = 2, **extra) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "variant": ["a", "b"][:n],
            "median_ms": [1.5, 2.5][:n],
            "params": [json.dumps({"k": 3, "nested": [1]}), "{}"][:n],
            "param_k": [3, None][:n],
            **extra,
        }
    )


def test_append_then_load(tmp_path):
    p = append_results(_rows(), "bench", tmp_path / "res")  # the directory is created
    assert p == tmp_path / "res" / "bench.csv"
    assert "param_k" not in pd.read_csv(p).columns  # derived columns are not stored
    append_results(_rows(1), "bench", tmp_path / "res")
    df = load_results(tmp_path / "res" / "bench.csv")
    assert list(df["variant"]) == ["a", "b", "a"]
    assert list(df["param_k"].fillna(-1)) == [3, -1, 3]  # re-expanded from params
    assert "param_nested" not in df.columns  # only scalars are flattened
    assert "param_k" not in load_results(p, params=False).columns


def test_column_order_follows_the_file(tmp_path):
    append_results(_rows(), "bench", tmp_path)
    append_results(_rows()[["median_ms", "params", "variant"]], "bench", tmp_path)
    df = load_results(tmp_path / "bench.csv", params=False)
    assert list(df["variant"]) == ["a", "b", "a", "b"] and list(df["median_ms"]) == [1.5, 2.5, 1.5, 2.5]


def test_mismatched_columns_refused_and_file_untouched(tmp_path):
    p = append_results(_rows(), "bench", tmp_path)
    before = p.read_bytes()
    with pytest.raises(DlrmlabError, match=r"only in the file: \['median_ms'\]; only in the new rows: \['new_col'\]"):
        append_results(_rows().drop(columns="median_ms").assign(new_col=1), "bench", tmp_path)
    assert p.read_bytes() == before
    assert sorted(x.name for x in tmp_path.iterdir()) == ["bench.csv"]  # no temp file left behind
    with pytest.raises(DlrmlabError, match="columns differ"):
        check_columns(["variant", "x"], "bench", tmp_path)
    check_columns(["variant", "median_ms", "params", "param_z"], "bench", tmp_path)  # compatible
    check_columns(["anything"], "other", tmp_path)  # no file yet: fine


def test_unwritable_results_dir(tmp_path):
    # chmod does not stop root (CI runs as root): a path below a regular file can never be a directory
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("x")
    for bad in (blocker, blocker / "results"):
        with pytest.raises(DlrmlabError, match="cannot be created|not a directory"):
            check_results_dir(bad)
        with pytest.raises(DlrmlabError):
            append_results(_rows(), "bench", bad)
    assert blocker.read_text() == "x"


def test_load_directory_concatenates(tmp_path):
    append_results(_rows(), "bench", tmp_path)
    append_results(pd.DataFrame({"variant": ["a"], "stage_ms": [1.0]}), "bench_runs", tmp_path)
    df = load_results(tmp_path)
    assert len(df) == 3 and sorted(set(df["source"])) == ["bench", "bench_runs"]
    assert len(load_results(tmp_path, "bench_runs")) == 1


def test_load_errors(tmp_path):
    with pytest.raises(DlrmlabError, match="no result CSVs"):
        load_results(tmp_path)
    with pytest.raises(DlrmlabError, match="no results at"):
        load_results(tmp_path / "missing.csv")
    with pytest.raises(DlrmlabError, match="no results named"):
        load_results(tmp_path, "bench")
    with pytest.raises(DlrmlabError, match="bad results name"):
        append_results(_rows(), "../escape", tmp_path)


def test_old_files_upgrade_without_the_modules_that_write_them(tmp_path):
    """The upgrades are a declared table: a process that imported only the results store still appends to
    an older bench file (no timing_mode) and an older profile file (no params, no dram_read_bytes)."""
    old_bench = pd.DataFrame({"variant": ["a"], "dataset": ["random"], "n_batches": [4], "cold_l2": [True]})
    old_bench.to_csv(tmp_path / "bench.csv", index=False)
    old_profile = pd.DataFrame({"variant": ["a"], "dataset": ["random"], "kernel_regex": ["k"],
                                "dram_throughput_pct": [50.0]})  # fmt: skip
    old_profile.to_csv(tmp_path / "profile.csv", index=False)
    code = (
        "import sys, pandas as pd\n"
        "from dlrmlab.bench import results\n"
        "d = sys.argv[1]\n"
        "results.append_results(results.upgrade(pd.read_csv(d + '/bench.csv')), 'bench', d)\n"
        "results.append_results(results.upgrade(pd.read_csv(d + '/profile.csv')), 'profile', d)\n"
        "assert not [m for m in sys.modules if m.startswith(('dlrmlab.bench.comparison', 'dlrmlab.bench.ncu'))]\n"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True, cwd=ROOT)
    bench = pd.read_csv(tmp_path / "bench.csv")
    assert list(bench["timing_mode"]) == ["cold_l2", "cold_l2"] and list(bench["trace_wraps"]) == [0, 0]
    profile = pd.read_csv(tmp_path / "profile.csv")
    assert len(profile) == 2 and list(profile.columns[2:4]) == ["params", "kernel_regex"]
