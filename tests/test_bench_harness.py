"""The harness end to end on the tiny preset: correctness gate, interleaved timing, rows and runs."""

from __future__ import annotations

import json
import math
from itertools import pairwise

import numpy as np
import pytest

from dlrmlab import backend
from dlrmlab.backend import cuda
from dlrmlab.bench import harness, timing
from dlrmlab.bench.case import BenchCase
from dlrmlab.bench.registry import Prepared, register_variant, unregister_variant
from dlrmlab.errors import DlrmlabError

FAST = {"repeats": 3, "warmup_s": 0.0}  # also keeps the GPU run of these tests short
REQUIRED = {"variant", "dataset", "preset", "device", "median_ms", "speedup_vs_torch"}


def prepare_numpy(case, scale: float = 1.0, crash: bool = False):
    """A 'variant' that computes on the host: exercises the harness without a kernel."""
    state = {}

    def run(i):
        if crash:
            raise RuntimeError("boom")
        state["out"] = [r * scale for r in case.reference(i)]

    def result(i):
        run(i)
        return state["out"]

    return Prepared(run, result, {"scale": scale, "crash": crash})


@cuda.jit
def _bag_sum(w, dim, idx, off, out):
    bag = cuda.blockIdx.x
    f = cuda.threadIdx.x
    if f < dim:
        acc = np.float32(0.0)
        for j in range(off[bag], off[bag + 1]):
            acc += w[idx[j] * dim + f]
        out[bag, f] = acc


def prepare_kernel(case):
    """A small Numba kernel per table, on the case's stream, with per-launch events."""
    outs = [cuda.device_array((case.stage.batch_size, case.dim), np.float32) for _ in case.dev_tables]

    def launch(i, t):
        tb = case.dev_batches[i].tables[t]
        launch_config = (case.stage.batch_size, case.dim, case.stream)
        _bag_sum[launch_config](case.dev_tables[t], case.dim, tb.indices, tb.offsets, outs[t])

    def run(i):
        for t in range(case.num_tables):
            launch(i, t)

    def per_kernel(i):
        pairs = []
        for t in range(case.num_tables):
            s, e = timing.make_event(), timing.make_event()
            s.record(case.stream)
            launch(i, t)
            e.record(case.stream)
            pairs.append((s, e))
        return pairs

    def result(i):
        run(i)
        case.stream.synchronize()
        return [o.copy_to_host() for o in outs]

    return Prepared(run, result, {"block": case.dim}, "_bag_sum", per_kernel)


@pytest.fixture(scope="module", autouse=True)
def test_variants():
    register_variant("_np", prepare_numpy, "host numpy, test only")
    register_variant("_kern", prepare_kernel, "naive kernel, test only")
    yield
    unregister_variant("_np")
    unregister_variant("_kern")


@pytest.fixture(scope="module")
def case():
    return BenchCase.create("tiny", "random", n_batches=3)


@pytest.mark.parametrize("v", [1, 2, 3, 4])
@pytest.mark.parametrize("n", [1, 2, 3, 4, 6])
def test_schedule_rotates_batches(v, n):
    plan = harness.schedule(v, 4 * n * v, n)
    assert [(r, k) for r, k, _ in plan] == [(r, k) for r in range(4 * n * v) for k in range(v)]
    for k in range(v):
        assert {b for _, kk, b in plan if kk == k} == set(range(n))  # every variant sees every batch
    if n >= 3:
        assert all(a[2] != b[2] for a, b in pairwise(plan))  # no run inherits its predecessor's batch


def test_schedule_single_variant_is_plain_rotation():
    assert [b for _, _, b in harness.schedule(1, 9, 4)] == [i % 4 for i in range(9)]
    assert [b for _, _, b in harness.schedule(2, 3, 3)] == [0, 1, 2, 0, 1, 2]


def test_summarize():
    s = timing.summarize([3.0, 1.0, 2.0])
    assert (s["median"], s["min"], s["max"], s["n"]) == (2.0, 1.0, 3.0, 3)
    assert math.isnan(timing.summarize([])["median"])


@pytest.mark.torch
def test_compare_end_to_end(case):
    res = harness.compare(case, ["torch", "_np", ("_np", {"scale": 1.5}), "_kern"], kernel_repeats=2, **FAST)
    rows = res.rows
    assert REQUIRED <= set(rows.columns)
    assert set(harness.ROW_COLUMNS) <= set(rows.columns)
    assert list(rows["variant"]) == ["torch", "_np", "_np", "_kern"]
    assert (rows["timing_valid"] == (not backend.SIMULATOR)).all()
    assert (rows["device"] == ("simulator" if backend.SIMULATOR else rows["gpu_name"])).all()
    assert rows["run_id"].nunique() == 1 and (rows["repeat"] == 0).all()
    assert list(rows["correct"]) == [True, True, False, True]

    good = rows[rows["correct"]]
    assert (good["n_runs"] == 3).all() and good["median_ms"].notna().all()
    assert (good["min_ms"] <= good["median_ms"]).all() and (good["median_ms"] <= good["max_ms"]).all()
    assert good["speedup_vs_torch"].notna().all()
    assert rows.loc[0, "speedup_vs_torch"] == 1.0
    assert good["effective_gbps"].gt(0).all() and good["copy_gbps"].gt(0).all()
    assert (good["bytes_requested"] == case.stage.bytes_per_batch()).all()

    bad = rows.iloc[2]  # the wrong one: refused, not timed
    assert bad["max_rel_err"] > 0.4 and "tolerance" in bad["error"]
    assert bad["n_runs"] == 0 and math.isnan(bad["median_ms"]) and math.isnan(bad["speedup_vs_torch"])
    assert json.loads(bad["params"]) == {"crash": False, "scale": 1.5} and bad["param_scale"] == 1.5

    torch_row, kern_row = rows.iloc[0], rows.iloc[3]
    assert torch_row["kernel_launches"] == kern_row["kernel_launches"] == case.num_tables
    assert kern_row["kernel_n_runs"] == 2 and kern_row["kernel_ms"] >= 0
    assert math.isnan(rows.iloc[1]["kernel_ms"])  # no per_kernel: no kernel time

    runs = res.runs
    assert list(runs.columns[: len(harness.RUN_COLUMNS)]) == harness.RUN_COLUMNS
    assert len(runs) == 3 * 3  # incorrect variant not timed
    assert set(runs["variant"]) == {"torch", "_np", "_kern"}
    assert set(runs["batch"]) <= {0, 1, 2} and runs["stage_ms"].ge(0).all()


def test_crashing_variant_is_reported_not_fatal(case):
    res = harness.compare(case, [("_np", {"crash": True}), "_np"], **FAST)
    assert list(res.rows["correct"]) == [False, True]
    assert "RuntimeError: boom" in res.rows.iloc[0]["error"]
    assert math.isnan(res.rows.iloc[1]["speedup_vs_torch"])  # no torch in this comparison


def test_cold_l2_and_simulator_defaults(case, monkeypatch):
    flushes = []
    real = timing.L2Flusher.flush
    monkeypatch.setattr(timing.L2Flusher, "flush", lambda self: (flushes.append(1), real(self)))
    res = harness.compare(case, "_np", cold_l2=True, repeats=2, warmup_s=0.0)
    assert bool(res.rows.iloc[0]["cold_l2"]) and len(flushes) == 1 + 2  # one to compile, one per timed run
    if backend.SIMULATOR:
        assert timing.default_repeats(None, None) == (timing.SIM_REPEATS, timing.SIM_WARMUP_S)


def test_unknown_variant_fails_before_running(case):
    with pytest.raises(DlrmlabError, match="unknown variant 'nope'; valid: .*_np"):
        harness.compare(case, ["_np", "nope"])


def test_run_bench_sweep_writes_results(tmp_path):
    from dlrmlab.bench.results import load_results

    res = harness.run_bench(
        ["_np"], ["random", "zipf:1.1"], "tiny", n_batches=2, repeat_runs=2, include_torch=False,
        out=tmp_path, **FAST,
    )  # fmt: skip
    rows = res.rows
    assert len(rows) == 4 and rows["run_id"].nunique() == 1
    assert sorted(zip(rows["dataset"], rows["repeat"], strict=True)) == [
        ("random", 0), ("random", 1), ("zipf:1.1", 0), ("zipf:1.1", 1)
    ]  # fmt: skip
    back = load_results(tmp_path, "bench")
    assert len(back) == 4 and "param_scale" in back.columns
    assert len(load_results(tmp_path, "bench_runs")) == len(res.runs) == 4 * 3


def test_run_bench_checks_everything_first(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(DlrmlabError, match="unknown dataset"):
        harness.run_bench(["_np"], ["random", "bogus"], "tiny", include_torch=False)
    with pytest.raises(DlrmlabError, match="cannot be created"):
        harness.run_bench(["_np"], ["random"], "tiny", include_torch=False, out=blocker / "res")
    (tmp_path / "res").mkdir()
    (tmp_path / "res" / "bench.csv").write_text("a,b\n1,2\n")
    with pytest.raises(DlrmlabError, match="columns differ"):
        harness.run_bench(["_np"], ["random"], "tiny", include_torch=False, out=tmp_path / "res")


def test_format_table_makes_no_speed_claims_in_simulator(case):
    res = harness.compare(case, ["_np", ("_np", {"scale": 2.0})], **FAST)
    text = harness.format_table(res.rows)
    assert "INCORRECT" in text
    if backend.SIMULATOR:
        assert harness.SIMULATOR_NOTICE in text and "speedup" not in text and "ms" not in text
