"""The measurement layer's GPU-only paths (skipped in simulator mode): events, queued-ahead kernel timing,
L2 flush, copy bandwidth, device metadata, torch's zero-copy views on the case's stream."""

from __future__ import annotations

import re
import warnings
from types import SimpleNamespace

import pytest

from dlrmlab.bench import comparison, env, timing
from dlrmlab.bench.case import BenchCase


def test_time_kernels_chunks_and_queue_check(monkeypatch):
    """Runs on the CPU too: the chunking and queued-ahead bookkeeping, with fake events and delay."""
    pending = {"query": False}

    class Ev:
        def record(self, stream=0):
            pass

        def query(self):
            return pending["query"]

        def elapsed_time(self, end):
            return 0.25

    log: list = []
    monkeypatch.setattr(timing, "backend", SimpleNamespace(SIMULATOR=False))
    monkeypatch.setattr(timing, "make_event", Ev)
    delay = SimpleNamespace(enqueue=lambda ms: log.append(("delay", ms)))
    stream = SimpleNamespace(synchronize=lambda: log.append("sync"))

    def per_kernel(i):
        log.append(("run", i))
        return [(Ev(), Ev()) for _ in range(4)]

    out, launches, queued = timing.time_kernels(
        per_kernel, stream, list(range(10)), 0.5, delay=delay, max_pending=39, before=lambda: log.append("flush")
    )
    assert out == [1.0] * 10 and launches == 4 and queued is True
    # the first run alone (launch count unknown), then chunks of 39 // (3 * 4 + 1) = 3
    assert [e for e in log if e == "sync"] == ["sync"] * 4
    assert log[:5] == [("delay", 4.5), "flush", ("run", 0), "sync", ("delay", 7.5)]
    pending["query"] = True  # the GPU had finished the delay before the host was done: not queued ahead
    log.clear()
    out, _, queued = timing.time_kernels(per_kernel, stream, [0], 0.5, delay=delay)
    assert queued is False and out == [1.0]  # the last of the attempts is kept
    assert [e for e in log if e[0] == "delay"] == [("delay", 4.5), ("delay", 18.0), ("delay", 72.0)]
    answers = iter([True, False])  # caught up once, then queued ahead on the retry
    monkeypatch.setattr(Ev, "query", lambda self: next(answers))
    assert timing.time_kernels(per_kernel, stream, [0], 0.5, delay=delay)[2] is True


gpu = pytest.mark.gpu


@gpu
def test_environment_and_clocks():
    from dlrmlab import cudart

    e = env.environment()
    assert e["device"] == e["gpu_name"] and e["gpu_name"]
    assert re.fullmatch(r"\d+\.\d+", e["compute_capability"]) and e["l2_bytes"] > 0
    assert e["cuda_driver_version"] and e["cuda_runtime_version"]
    assert re.fullmatch(r"[0-9A-Fa-f]+:[0-9A-Fa-f]+:[0-9A-Fa-f]+\.[0-9A-Fa-f]+", cudart.pci_bus_id())
    if env.clock_source() is not None:
        assert 100 <= env.sm_clock_mhz() <= 5000
        assert env.max_sm_clock_mhz() >= 500


@gpu
def test_events_delay_flush_and_copy_bandwidth():
    from dlrmlab.backend import cuda

    s = cuda.stream()
    d = timing.GpuDelay(s)
    assert d.calibrate() > 0
    start, end = timing.make_event(), timing.make_event()
    start.record(s)
    d.enqueue(ms=5.0)
    end.record(s)
    end.synchronize()
    assert 2.0 <= timing.elapsed_ms(start, end) <= 100.0
    f = timing.L2Flusher(s)
    assert f.nbytes == 2 * env.environment()["l2_bytes"]
    f.flush()
    assert timing.copy_bandwidth_gbps() > 200  # H100: ~3,000 GB/s read + write


@gpu
@pytest.mark.torch
def test_torch_on_gpu_zero_copy_and_queued_ahead():
    case = BenchCase.create("tiny", "random", n_batches=2)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="torch.as_tensor copied")  # a copy instead of a view: fail
        res = comparison.compare(case, ["torch"], repeats=5, warmup_s=0.05, kernel_repeats=5)
    row = res.rows.iloc[0]
    assert row["correct"] and row["timing_valid"] and row["device"] != "simulator"
    assert row["n_runs"] == 5 and 0 < row["median_ms"] < 100 and row["host_ms"] > 0
    assert row["kernel_launches"] == case.num_tables and bool(row["kernel_queued_ahead"])
    assert row["kernel_ms"] <= row["median_ms"] * 1.5
    assert row["speedup_vs_torch"] == 1.0 and row["copy_gbps"] > 200


@gpu
@pytest.mark.torch
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_torch_on_gpu_half_tables(dtype):
    from dlrmlab.workload import preset

    case = BenchCase.create(preset("tiny", dtype=dtype), "random", n_batches=1, weighted=True)
    res = comparison.compare(case, "torch", repeats=2, warmup_s=0.0, cold_l2=True)
    assert bool(res.rows.iloc[0]["correct"]), res.rows.iloc[0]["error"]


@gpu
@pytest.mark.torch
def test_serving_loop_on_gpu():
    """Serving mode on the GPU: blocks of consecutive batches, the first untimed; torch against itself."""
    case = BenchCase.create("tiny", "random", n_batches=3)
    res = comparison.compare(case, ["torch", "torch"], repeats=6, warmup_s=0.05, serving_block=4, kernel_repeats=0)
    rows, runs = res.rows, res.runs
    assert (rows["timing_mode"] == "serving").all() and (rows["serving_block"] == 4).all()
    assert list(rows["n_runs"]) == [6, 6] and rows["correct"].all() and rows["median_ms"].gt(0).all()
    assert sorted(runs["round"].unique()) == [0, 1] and len(runs) == 12  # 2 rounds of 1 untimed + 3 timed
    assert 0.5 < rows.iloc[1]["speedup_vs_torch"] < 2.0
