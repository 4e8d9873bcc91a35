"""The harness end to end on the tiny preset: correctness gate, timing modes (serving loop, interleaved,
cold L2), rows and runs."""

from __future__ import annotations

import json
import math
from itertools import pairwise

import numpy as np
import pandas as pd
import pytest

from dlrmlab import backend, variants
from dlrmlab.backend import cuda
from dlrmlab.bench import comparison, schedule, schema, sweep, timing
from dlrmlab.bench import text as bench_text
from dlrmlab.bench.case import BenchCase
from dlrmlab.errors import DlrmlabError
from dlrmlab.peers import PeerUnavailable
from dlrmlab.variants import Prepared, Variant

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

    return Prepared(run, result, {"block": case.dim}, per_kernel)


def prepare_missing_peer(case):
    raise PeerUnavailable("test peer unavailable: nothing to build it with")


TEST_FAMILY = "_harness_test"


def register_variant(name, prepare, description):
    """Add a throwaway variant to the table; its parameters form one knob family of their own."""
    variants.VARIANTS[name] = Variant(
        name, description, lambda case, knobs: prepare(case, **knobs[TEST_FAMILY]), (TEST_FAMILY,)
    )


def unregister_variant(name):
    variants.VARIANTS.pop(name, None)


@pytest.fixture(scope="module", autouse=True)
def test_variants():
    variants.KNOBS[TEST_FAMILY] = frozenset({"scale", "crash", "tag"})
    register_variant("_np", prepare_numpy, "host numpy, test only")
    register_variant("_kern", prepare_kernel, "naive kernel, test only")
    register_variant("_gone", prepare_missing_peer, "a peer that cannot run here, test only")
    yield
    for name in ("_np", "_kern", "_gone"):
        unregister_variant(name)
    variants.KNOBS.pop(TEST_FAMILY, None)


@pytest.fixture(scope="module")
def case():
    return BenchCase.create("tiny", "random", n_batches=3)


@pytest.mark.parametrize("v", [1, 2, 3, 4])
@pytest.mark.parametrize("n", [1, 2, 3, 4, 6])
def test_schedule_rotates_batches(v, n):
    plan = schedule.interleaved_schedule(v, 4 * n * v, n)
    assert [(s.round, s.variant) for s in plan] == [(r, k) for r in range(4 * n * v) for k in range(v)]
    assert all(s.timed for s in plan)
    for k in range(v):
        assert {s.batch for s in plan if s.variant == k} == set(range(n))  # every variant sees every batch
    if n >= 3:
        assert all(a.batch != b.batch for a, b in pairwise(plan))  # no run inherits its predecessor's batch


def test_schedule_single_variant_is_plain_rotation():
    assert [s.batch for s in schedule.interleaved_schedule(1, 9, 4)] == [i % 4 for i in range(9)]
    assert [s.batch for s in schedule.interleaved_schedule(2, 3, 3)] == [0, 1, 2, 0, 1, 2]


@pytest.mark.parametrize("v", [1, 2, 3])
@pytest.mark.parametrize("n", [1, 3, 4])
@pytest.mark.parametrize(("repeats", "block"), [(50, 8), (7, 8), (3, 8), (10, 2), (9, 4)])
def test_serving_schedule_blocks(v, n, repeats, block):
    plan = schedule.serving_schedule(v, repeats, n, block)
    for k in range(v):
        mine = [s for s in plan if s.variant == k]
        assert sum(s.timed for s in mine) == repeats  # repeats timed runs per variant
    rounds = sorted({s.round for s in plan})
    assert rounds == list(range(-(-repeats // (block - 1))))
    sizes = []
    for r in rounds:
        blocks: dict[int, list] = {}
        for s in (s for s in plan if s.round == r):
            blocks.setdefault(s.variant, []).append(s)
        assert sorted(blocks) == list(range(v))
        # in plan order, each variant's block is contiguous: the variants' blocks are interleaved, not mixed
        order = [s.variant for s in plan if s.round == r]
        assert order == sorted(order, key=lambda k: ((k - r) % v))
        first = blocks[0]
        sizes.append(len(first))
        assert 2 <= len(first) <= block
        assert [s.timed for s in first] == [False] + [True] * (len(first) - 1)  # first batch warms, untimed
        assert [s.batch for s in first] == [(r + j) % n for j in range(len(first))]  # consecutive, rotating
        assert all([s.batch for s in b] == [s.batch for s in first] for b in blocks.values())  # same batches
    assert max(sizes) - min(sizes) <= 1  # timed runs spread evenly over the rounds


def test_serving_schedule_default_and_errors():
    plan = schedule.serving_schedule(2, 14, 4)
    assert schedule.DEFAULT_SERVING_BLOCK == 8 and len(plan) == 2 * 2 * 8
    assert [s.variant for s in plan] == [0] * 8 + [1] * 8 + [1] * 8 + [0] * 8  # order rotates each round
    assert schedule.serving_schedule(2, 0, 4) == []
    with pytest.raises(DlrmlabError, match="serving_block must be at least 2"):
        schedule.serving_schedule(1, 5, 4, 1)


def test_resolve_timing_mode():
    assert schedule.resolve_timing_mode(None) == "serving"
    assert schedule.resolve_timing_mode(None, cold_l2=True) == "cold_l2"
    assert schedule.resolve_timing_mode("cold_l2") == schedule.resolve_timing_mode("cold_l2", True) == "cold_l2"
    assert schedule.resolve_timing_mode("interleaved") == "interleaved"
    with pytest.raises(DlrmlabError, match="timing_mode must be one of serving, interleaved, cold_l2"):
        schedule.resolve_timing_mode("warm")
    with pytest.raises(DlrmlabError, match="contradicts"):
        schedule.resolve_timing_mode("serving", cold_l2=True)


def test_summarize():
    s = timing.summarize([3.0, 1.0, 2.0])
    assert (s["median"], s["min"], s["max"], s["n"]) == (2.0, 1.0, 3.0, 3)
    assert math.isnan(timing.summarize([])["median"])


@pytest.mark.torch
def test_compare_end_to_end(case):
    res = comparison.compare(case, ["torch", "_np", ("_np", {"scale": 1.5}), "_kern"], kernel_repeats=2, **FAST)
    rows = res.rows
    assert REQUIRED <= set(rows.columns)
    assert set(schema.ROW_COLUMNS) <= set(rows.columns)
    assert list(rows["variant"]) == ["torch", "_np", "_np", "_kern"]
    assert (rows["timing_valid"] == (not backend.SIMULATOR)).all()
    assert (rows["device"] == ("simulator" if backend.SIMULATOR else rows["gpu_name"])).all()
    assert rows["run_id"].nunique() == 1 and (rows["repeat"] == 0).all()
    assert list(rows["correct"]) == [True, True, False, True]
    assert (rows["timing_mode"] == "serving").all() and (rows["serving_block"] == 8).all()
    assert not rows["cold_l2"].any()

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
    assert list(runs.columns[: len(schema.RUN_COLUMNS)]) == schema.RUN_COLUMNS
    assert len(runs) == 3 * 3  # incorrect variant not timed; the untimed first batch of a block not recorded
    assert set(runs["variant"]) == {"torch", "_np", "_kern"}
    assert (runs["timing_mode"] == "serving").all()
    for _, r in runs.groupby("variant"):  # one block of 1 untimed + 3 timed batches: 1, 2, 0
        assert list(r["batch"]) == [1, 2, 0] and list(r["run"]) == [0, 1, 2] and (r["round"] == 0).all()
    assert runs["stage_ms"].ge(0).all()


def test_crashing_variant_is_reported_not_fatal(case):
    res = comparison.compare(case, [("_np", {"crash": True}), "_np"], **FAST)
    assert list(res.rows["correct"]) == [False, True]
    assert "RuntimeError: boom" in res.rows.iloc[0]["error"]
    assert math.isnan(res.rows.iloc[1]["speedup_vs_torch"])  # no torch in this comparison


def test_cold_l2_and_simulator_defaults(case, monkeypatch):
    flushes = []
    real = timing.L2Flusher.flush
    monkeypatch.setattr(timing.L2Flusher, "flush", lambda self: (flushes.append(1), real(self)))
    res = comparison.compare(case, "_np", cold_l2=True, repeats=2, warmup_s=0.0)
    assert bool(res.rows.iloc[0]["cold_l2"]) and len(flushes) == 1 + 2  # one to compile, one per timed run
    assert res.rows.iloc[0]["timing_mode"] == "cold_l2" and pd.isna(res.rows.iloc[0]["serving_block"])
    assert (res.runs["timing_mode"] == "cold_l2").all() and res.runs["cold_l2"].all()
    flushes.clear()
    res = comparison.compare(case, "_np", timing_mode="interleaved", repeats=2, warmup_s=0.0)
    assert not flushes and res.rows.iloc[0]["timing_mode"] == "interleaved" and not res.rows.iloc[0]["cold_l2"]
    assert list(res.runs["batch"]) == [0, 1] and list(res.runs["round"]) == [0, 1]
    if backend.SIMULATOR:
        assert timing.default_repeats(None, None) == (timing.SIM_REPEATS, timing.SIM_WARMUP_S)


class FakeTimer:
    """Stage time = the variant's speed factor x (batch + 1), from what the run logged."""

    def __init__(self, stream):
        self.calls = []

    def __call__(self, run, i):
        log.clear()
        run(i)
        (tag,) = log
        self.calls.append((tag, i))
        return {"slow": 2.0, "fast": 1.0}[tag] * (i + 1), 0.01


log: list = []


def prepare_tagged(case, tag: str = "fast"):
    def run(i):
        log.append(tag)

    return Prepared(run, lambda i: case.reference(i), {"tag": tag})


def test_serving_speedup_is_a_per_round_ratio_over_the_same_batches(case, monkeypatch):
    register_variant("_tag", prepare_tagged, "logs its tag, test only")
    try:
        monkeypatch.setattr(comparison, "BASELINE", "_tag")
        monkeypatch.setattr(timing, "StageTimer", FakeTimer)
        res = comparison.compare(case, [("_tag", {"tag": "slow"}), ("_tag", {"tag": "fast"})], repeats=10,
                              warmup_s=0.0, serving_block=4)  # fmt: skip
    finally:
        unregister_variant("_tag")
    rows, runs = res.rows, res.runs
    assert list(rows["n_runs"]) == [10, 10] and (rows["serving_block"] == 4).all()
    assert sorted(runs["round"].unique()) == [0, 1, 2, 3]  # ceil(10 / 3) rounds of 3, 3, 2, 2 timed runs
    # the same batches in both blocks of a round, so every round's ratio is exactly 2
    assert rows.iloc[0]["speedup_vs_torch"] == 1.0 and rows.iloc[1]["speedup_vs_torch"] == 2.0
    by = {tag: g for tag, g in runs.groupby(runs["params"].map(lambda p: json.loads(p)["tag"]))}
    assert list(by["slow"]["batch"]) == list(by["fast"]["batch"]) == [1, 2, 0, 2, 0, 1, 0, 1, 1, 2]  # 3 batches


def test_unavailable_peer_gets_a_row_and_the_rest_run(case):
    res = comparison.compare(case, ["_gone", "_np"], **FAST)
    gone, ok = res.rows.iloc[0], res.rows.iloc[1]
    assert not gone["correct"] and gone["n_runs"] == 0 and math.isnan(gone["median_ms"])
    assert gone["error"] == "skipped: test peer unavailable: nothing to build it with"
    assert ok["correct"] and ok["n_runs"] == 3 and set(res.runs["variant"]) == {"_np"}
    text = bench_text.format_table(res.rows)
    assert "_gone on random: SKIPPED (test peer unavailable: nothing to build it with)" in text
    assert "INCORRECT" not in text


def test_with_timing_columns_upgrades_old_results():
    rows = pd.DataFrame({"variant": ["a", "b"], "cold_l2": [False, True], "n_batches": [4, 4]})
    up = schema.with_timing_columns(rows)
    assert list(up.columns) == ["variant", "cold_l2", "timing_mode", "serving_block", "n_batches"]
    assert list(up["timing_mode"]) == ["interleaved", "cold_l2"] and up["serving_block"].isna().all()
    runs = pd.DataFrame({"cold_l2": ["True", "False"], "round": [0, 0]})  # as read back from a CSV
    assert list(schema.with_timing_columns(runs).columns) == ["cold_l2", "timing_mode", "round"]
    assert list(schema.with_timing_columns(runs)["timing_mode"]) == ["cold_l2", "interleaved"]
    assert schema.with_timing_columns(up) is up  # already upgraded: unchanged


def test_unknown_variant_fails_before_running(case):
    with pytest.raises(DlrmlabError, match="unknown variant 'nope'; valid: .*_np"):
        comparison.compare(case, ["_np", "nope"])


def test_run_bench_sweep_writes_results(tmp_path):
    from dlrmlab.bench.results import load_results

    res = sweep.run_bench(
        ["_np"], ["random", "zipf:1.1"], "tiny", n_batches=2, repeat_runs=2, include_torch=False,
        out=tmp_path, **FAST,
    )  # fmt: skip
    rows = res.rows
    assert len(rows) == 4 and rows["run_id"].nunique() == 1 and (rows["timing_mode"] == "serving").all()
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
        sweep.run_bench(["_np"], ["random", "bogus"], "tiny", include_torch=False)
    with pytest.raises(DlrmlabError, match="cannot be created"):
        sweep.run_bench(["_np"], ["random"], "tiny", include_torch=False, out=blocker / "res")
    (tmp_path / "res").mkdir()
    (tmp_path / "res" / "bench.csv").write_text("a,b\n1,2\n")
    with pytest.raises(DlrmlabError, match="columns differ"):
        sweep.run_bench(["_np"], ["random"], "tiny", include_torch=False, out=tmp_path / "res")


def test_format_table_makes_no_speed_claims_in_simulator(case):
    res = comparison.compare(case, ["_np", ("_np", {"scale": 2.0})], **FAST)
    text = bench_text.format_table(res.rows)
    assert "INCORRECT" in text
    if backend.SIMULATOR:
        assert bench_text.SIMULATOR_NOTICE in text and "speedup" not in text and "ms" not in text


def test_prepared_variants_close_last_first_even_when_interrupted(case):
    """Variants nest GPU state (each window saved the limit it found): only last-first closing restores it."""
    closed = []

    def prepare_closer(case, tag="", crash=False):
        def run(i):
            if crash:
                raise KeyboardInterrupt  # a user's Ctrl-C mid-run

        prep = prepare_numpy(case)
        prep.run = run if crash else prep.run
        prep.close = lambda: closed.append(tag)
        return prep

    register_variant("_closer", prepare_closer, "records its close, test only")
    try:
        comparison.compare(case, [("_closer", {"tag": "a"}), ("_closer", {"tag": "b"})], **FAST)
        assert closed == ["b", "a"]
        closed.clear()
        with pytest.raises(KeyboardInterrupt):
            comparison.compare(case, [("_closer", {"tag": "a"}), ("_closer", {"tag": "b", "crash": True})], **FAST)
        assert closed == ["b", "a"]
    finally:
        unregister_variant("_closer")
