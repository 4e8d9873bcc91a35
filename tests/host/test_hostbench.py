"""The host-table measurement's pieces (simulator, tiny): a serving run's row and its bound, the LRU
prediction against the cache itself, trace spreading, and the command's refusals."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dlrmlab import cli, hostbench
from dlrmlab.hbmcache import HbmCache, segments
from dlrmlab.placement import Placement, host_tables
from dlrmlab.workload import JaggedBatch, TableBatch, preset

DIM = 4


def _batches(rng, rows, n, bags=2, pooling=4):
    out = []
    for _ in range(n):
        tables = []
        for r in rows:
            ids = (rng.zipf(1.2, bags * pooling) - 1) % r
            tables.append(TableBatch(ids.astype(np.int64), np.arange(0, bags * pooling + 1, pooling)))
        out.append(JaggedBatch.from_tables(tables))
    return out


def _rates() -> pd.DataFrame:
    return pd.DataFrame([{"measure": "host_gather", "row_bytes": 16, "gbps": 10.0},
                         {"measure": "host_gather", "row_bytes": 64, "gbps": 30.0},
                         {"measure": "hbm_gather", "row_bytes": 16, "gbps": 1.0},
                         {"measure": "hbm_fused", "row_bytes": 16, "gbps": 1000.0},
                         {"measure": "host_fused", "row_bytes": 16, "gbps": 25.0}])


def test_cached_run_row_and_its_bound():
    rng = np.random.default_rng(0)
    rows = (40, 30)
    stage = preset("tiny", tables=2, rows=40, sparse_feature_size=DIM, batch_size=2)
    batches = _batches(rng, rows, 3)
    p = Placement.parse("cached:20%:lru:per-table:2-way")
    with host_tables(rows, DIM, fill=[rng.standard_normal((r, DIM)).astype(np.float32) for r in rows]) as ht:
        res = hostbench.run_cached(ht, batches, p, warmup=1)
    assert res["max_abs_err"] < 1e-5
    assert res["lookups"] == sum(b.indices.size for b in batches[1:])
    assert res["plan_gpu_ms"] >= 0 and res["fill_gpu_ms"] >= 0
    row = hostbench.result_row(stage, "zipf", "none", p, hostbench._complete(res), 2, 2, _rates(), None, {})
    want = max(res["lookups"] * 16 / 1000.0, res["misses"] * 16 / 10.0) / 1e6 / 2  # pipelined: overlapped
    assert row["bound_ms"] == pytest.approx(want)
    assert row["share_of_bound"] == pytest.approx(want / row["ms_per_batch"])


def test_bound_from_given_link_rates():
    """Host rows at the best zero-copy rate of their size (distinct rows only: repeats may hit L2); cached
    misses at the fill (gather) rate, lookups at the HBM rate, summed when serial, overlapped when pipelined."""
    r = hostbench.bound_rates(_rates(), 16)
    assert r == {"hbm": 1000.0, "fill": 10.0, "zero_copy": 25.0}
    assert hostbench.bound_rates(_rates(), 64)["fill"] == 30.0  # the gather measured at that row size
    host = {"placement": "host", "timed_batches": 2, "lookups": 1_000_000, "unique_rows": 400_000}
    assert hostbench.bound_ms(host, 16, r) == pytest.approx(400_000 * 16 / 25.0 / 1e6 / 2)
    cached = {"placement": "cached", "timed_batches": 2, "lookups": 1_000_000, "misses": 50_000, "pipelined": False}
    assert hostbench.bound_ms(cached, 16, r) == pytest.approx((1_000_000 * 16 / 1000 + 50_000 * 16 / 10) / 2e6)
    assert hostbench.bound_ms({**cached, "pipelined": True}, 16, r) == pytest.approx(50_000 * 16 / 10 / 2e6)
    every_row_once = {**host, "unique_rows": host["lookups"]}  # no reuse: every lookup over the link
    assert hostbench.bound_ms(every_row_once, 16, r) == pytest.approx(1_000_000 * 16 / 25.0 / 2e6)
    no_fused = hostbench.bound_rates(_rates()[_rates()["measure"] != "host_fused"], 16)
    assert no_fused["zero_copy"] == 10.0  # only the gather measured: its rate


def test_lru_prediction_equals_the_cache_when_nothing_is_locked():
    """One set, fewer distinct rows a batch than ways: the cache is plain LRU, as the L2 model's core."""
    rng = np.random.default_rng(1)
    rows, ways = 200, 16
    batches = [JaggedBatch.from_tables([TableBatch((rng.zipf(1.3, 12) - 1) % rows, np.array([0, 12]))])
               for _ in range(8)]
    with host_tables((rows,), DIM) as ht:
        cache = HbmCache(ht, Placement("cached", budget=ways / rows, ways=ways, pipelined=False), max_ids=12)
        assert cache.geometry.slots == ways
        stats = [cache.plan_arrays(b.indices, segments(b.offsets, b.table_offsets), lock_previous=False)[1]
                 for b in batches]
    timed = stats[2:]
    measured = 1 - sum(s.misses for s in timed) / sum(s.lookups for s in timed)
    pred = hostbench.predicted_hit_rates(batches, 2, rows, 16, ways, ways)
    assert pred["predicted_hit_rate_lru"] == pytest.approx(measured)
    assert pred["skew_curve_hit_rate"] >= measured  # the hottest rows, known in advance, do at least as well
    assert pred["predicted_hit_rate_lfu"] <= pred["skew_curve_hit_rate"]  # less the hot rows' first fetches


def test_trace_ids_are_spread_bijectively():
    ids = np.arange(500_000)
    out = hostbench.spread(ids, 15_000_000, 3)
    assert np.unique(out).size == ids.size and out.max() < 15_000_000


@pytest.mark.parametrize("argv", [["--budgets", "150%"], ["--budgets", ""], ["--batches", "0"],
                                  ["--dataset", "nonsense"], ["--dataset", "trace:/no/such.txt"], ["--rows", "-1"]])
def test_host_tables_command_refuses_bad_options(argv, capsys, tmp_path):
    assert cli.main(["host-tables", "--out", str(tmp_path), *argv]) == 2
    assert capsys.readouterr().err.startswith("dlrmlab: error:")


def test_host_tables_larger_than_host_memory_are_refused_naming_both_sizes(capsys, tmp_path):
    assert cli.main(["host-tables", "--out", str(tmp_path), "--rows", "100000000000", "--dataset", "random"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dlrmlab: error: 3 host table(s) of 300,000,000,000 rows")
    assert "of host memory, more than" in err
    assert not list(tmp_path.glob("*/host_tables.csv"))


def test_report_section_and_figure_from_tidy_rows(tmp_path):
    from dlrmlab import hostreport
    from dlrmlab.bench.results import append_results

    stage = preset("tiny", tables=2, rows=1000, sparse_feature_size=DIM, batch_size=4)
    env = {"device": "h100", "gpu_name": "NVIDIA H100", "command": "dlrmlab host-tables"}
    rows = []
    for spec, misses in (("cached:1%:per-table", 900), ("cached:10%:per-table", 300), ("cached:10%", 300),
                         ("host", None)):
        p = Placement.parse(spec)
        res = hostbench._complete({"seconds": 0.01, "max_abs_err": 0.0, "lookups": 1000, "unique_rows": 700,
                                   "misses": misses, "hit_rate": None if misses is None else 1 - misses / 1000,
                                   "cache_rows": None if misses is None else 10,
                                   "plan_gpu_ms": None if misses is None else 0.5})
        rows.append(hostbench.result_row(stage, "zipf:1.05", "none", p, res, 1, 2, _rates(), None, env))
    append_results(pd.DataFrame(rows), "host_tables", tmp_path)  # through CSV, as the command writes them
    runs = pd.read_csv(tmp_path / "host_tables.csv")
    text = hostreport.section(runs, _rates())
    assert "NVIDIA H100; 2 tables of 1,000 rows x 4 float32" in text
    assert "| cached:10%:lru:shared:32-way:pipelined |" in text and "| host |" in text
    assert len(hostreport.headline(runs)) == 3  # the per-table LRU sweep and host
    assert "of the bound (cached:" in text and ("target met" in text or "target missed" in text)
    assert len(hostreport.figure(runs).axes[0].lines) == 3  # cached, bound, host


@pytest.mark.gpu
def test_host_tables_command_end_to_end_on_the_gpu(tmp_path):
    argv = ["host-tables", "--out", str(tmp_path), "--tables", "2", "--rows", "200000", "--batch", "256",
            "--pooling", "20", "--budgets", "5%,20%", "--dataset", "random,zipf:1.05", "--warmup", "1",
            "--batches", "2"]
    assert cli.main(argv) == 0
    out = next(tmp_path.glob("*/host_tables.csv")).parent
    runs, link = pd.read_csv(out / "host_tables.csv"), pd.read_csv(out / "host_link.csv")
    assert len(runs) == 2 * 6 and (runs["max_abs_err"] < 1e-3).all()
    assert (link["gbps"] > 0).all() and set(link["measure"]) >= {"bulk_h2d", "host_gather", "hbm_gather", "hbm_fused"}
    assert (out / "host_tables.md").is_file()


def test_a_default_trace_that_is_not_here_is_left_out_with_a_warning(monkeypatch, capsys, tmp_path):
    from dlrmlab import host_command
    from dlrmlab.errors import DlrmlabError

    monkeypatch.setattr(host_command, "trace_path", lambda spec: tmp_path / "missing.txt")
    assert host_command._datasets(None) == ["random", "zipf:1.05"]
    assert capsys.readouterr().err.startswith("dlrmlab: warning: trace:medium is not on this machine")
    with pytest.raises(DlrmlabError, match="no such trace file"):
        host_command._datasets("random,trace:medium")  # asked for by name: refused
