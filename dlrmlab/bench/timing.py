"""Timing primitives: CUDA events on a stream, warm-up, L2 flushing, copy bandwidth, queued-ahead launches.

Three different times are measured, and they answer different questions:

* stage time (``stage_ms``): CUDA events recorded on the stream before and after the whole stage, the
  stream idle before the first event and synchronized after the last one. This is what a serving system
  sees per request, launch overhead included when the host issues launches slower than the GPU runs them.
* host time (``host_ms``): ``time.perf_counter`` around the call that enqueues the stage, no sync: the
  Python/launch cost.
* kernel time (``kernel_ms``): the sum of event pairs around each launch, in separate runs queued ahead
  behind a GPU delay kernel so that no launch waits for the host: pure GPU time of the launches.

Which runs are timed, in which order and from which L2 state (a serving loop, interleaved variants, a
cold L2) is the comparison's timing mode: see :mod:`dlrmlab.bench.schedule`.

In simulator mode there are no CUDA events; :class:`dlrmlab.backend.HostEvent` stands in (the simulator runs launches
synchronously, so it measures simulated-kernel host time), and nothing measured is meaningful as speed.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

import numpy as np
from numba import uint32

from dlrmlab import backend, cudart, device
from dlrmlab.backend import cuda
from dlrmlab.intrinsics import load16

#: GPU defaults: the GPU idles at 375 MHz and needs a few hundred ms of work to boost. Repeats are timed
#: stage runs per variant (in serving mode, in blocks of consecutive batches).
GPU_WARMUP_S = 0.3
GPU_REPEATS = 50
#: Simulator defaults: enough to run every code path, nothing more.
SIM_WARMUP_S = 0.0
SIM_REPEATS = 2


def make_event() -> Any:
    """A timing event (:func:`dlrmlab.backend.event`: a CUDA event, or the simulator's host-clock stand-in)."""
    return backend.event()


def elapsed_ms(start: Any, end: Any) -> float:
    return float(start.elapsed_time(end))


def summarize(values: Sequence[float]) -> dict[str, float]:
    """Median and spread of run times (NaN when there are none)."""
    a = np.asarray(values, dtype=np.float64)
    if a.size == 0:
        return {k: math.nan for k in ("median", "min", "p10", "p90", "max")} | {"n": 0}
    return {
        "median": float(np.median(a)),
        "min": float(a.min()),
        "p10": float(np.percentile(a, 10)),
        "p90": float(np.percentile(a, 90)),
        "max": float(a.max()),
        "n": int(a.size),
    }


def default_repeats(repeats: int | None, warmup_s: float | None) -> tuple[int, float]:
    """Resolve ``None`` to the GPU defaults, or to tiny ones in simulator mode."""
    sim = backend.SIMULATOR
    r = (SIM_REPEATS if sim else GPU_REPEATS) if repeats is None else int(repeats)
    w = (SIM_WARMUP_S if sim else GPU_WARMUP_S) if warmup_s is None else float(warmup_s)
    return r, w


class StageTimer:
    """Times one enqueue of a stage: events around it on the stream, host clock around the call."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.start, self.end = make_event(), make_event()

    def __call__(self, run: Callable[[int], None], i: int) -> tuple[float, float]:
        """Return ``(stage_ms, host_ms)``. The stream must be idle (previous work synchronized)."""
        self.start.record(self.stream)
        t0 = time.perf_counter()
        run(i)
        t1 = time.perf_counter()
        self.end.record(self.stream)
        self.end.synchronize()
        return elapsed_ms(self.start, self.end), (t1 - t0) * 1e3


def warm_up(runs: Sequence[Callable[[], None]], stream: Any, seconds: float) -> int:
    """Run ``runs`` round-robin, synchronizing after each, for ``seconds`` (at least one pass if > 0).

    Raises clocks from idle and gets one-time costs (JIT, allocator growth) out of the timed runs.
    """
    if seconds <= 0 or not runs:
        return 0
    n, t0 = 0, time.perf_counter()
    while True:
        for run in runs:
            run()
            stream.synchronize()
            n += 1
        if time.perf_counter() - t0 >= seconds:
            return n


# --- kernels used by the comparison ------------------------------------------------------------------


@lru_cache(maxsize=1)
def _flush_kernel():
    @cuda.jit
    def flush_l2(buf):
        i = cuda.grid(1)
        stride = cuda.gridsize(1)
        while i < buf.shape[0]:
            buf[i] += uint32(1)  # read and write every line: evicts whatever L2 held
            i += stride

    return flush_l2


@lru_cache(maxsize=1)
def _sleep_kernel():
    @cuda.jit
    def gpu_sleep(n):
        for _ in range(n):
            cuda.nanosleep(uint32(1000))

    return gpu_sleep


class L2Flusher:
    """Evicts L2 between timed runs: reads and writes a buffer of twice the L2 size (on the stream)."""

    def __init__(self, stream: Any, nbytes: int | None = None) -> None:
        self.stream = stream
        if nbytes is None:
            if backend.SIMULATOR:
                nbytes = 256  # the simulator has no L2: exercise the code path only
            else:
                nbytes = 2 * int(cudart.device_properties()["l2_bytes"])
        self.nbytes = int(nbytes)
        self.buf = cuda.device_array(max(1, self.nbytes // 4), np.uint32)
        self.grid, self.block = (1, 64) if backend.SIMULATOR else (1024, 256)
        self._launch: Any = None

    def enqueue(self) -> None:
        """Enqueue the flush on the stream (no wait): between queued-ahead per-kernel runs."""
        if self._launch is None:
            self._launch = _flush_kernel()[self.grid, self.block, self.stream]
        self._launch(self.buf)

    def flush(self) -> None:
        """Enqueue the flush and wait for it, so it stays out of the next timed region."""
        self.enqueue()
        self.stream.synchronize()


class GpuDelay:
    """Holds a stream busy for a while, so launches enqueued behind it queue up on the GPU.

    Used for per-kernel timing: when the GPU is still sleeping after the host has issued every launch,
    no event pair can include host launch latency (checked with an event query, reported per row).
    """

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.us_per_iter: float | None = None
        self._launch: Any = None

    def _launcher(self) -> Any:
        if self._launch is None:
            with warnings.catch_warnings():  # one thread on purpose: not a low-occupancy mistake
                warnings.filterwarnings("ignore", message="Grid size")
                self._launch = _sleep_kernel()[1, 1, self.stream]
        return self._launch

    def calibrate(self) -> float:
        launch = self._launcher()
        launch(1)  # compile outside the timed launch
        self.stream.synchronize()
        n = 200
        ms, _ = StageTimer(self.stream)(launch, n)
        self.us_per_iter = max(ms * 1e3 / n, 0.05)
        return self.us_per_iter

    def enqueue(self, ms: float) -> None:
        if backend.SIMULATOR:
            return
        if self.us_per_iter is None:
            self.calibrate()
        n = int(min(max(math.ceil(ms * 1e3 / self.us_per_iter), 1), 2_000_000))
        self._launcher()(n)


_COPY_GBPS: float | None = None


@cuda.jit
def _copy16(dst, src):
    """Grid-stride copy, one 16-byte vector per thread per step."""
    i = cuda.grid(1) * 4
    step = cuda.gridsize(1) * 4
    while i + 3 < src.shape[0]:
        v = load16(src, i)
        dst[i] = v[0]
        dst[i + 1] = v[1]
        dst[i + 2] = v[2]
        dst[i + 3] = v[3]
        i += step


def copy_bandwidth_gbps(nbytes: int | None = None, repeats: int = 10, warmup_s: float | None = None) -> float:
    """Device-to-device copy bandwidth, (bytes read + written) / time, in GB/s; measured once per process.

    The practical ceiling for a memory-bound kernel: effective bandwidth is reported as a fraction of it.
    Copies run for ``warmup_s`` (default: the GPU warm-up, 0.3 s) before timing: measured from idle
    clocks, the first H100 run read 2.2 TB/s instead of ~3.0.
    """
    global _COPY_GBPS
    if _COPY_GBPS is not None and nbytes is None:
        return _COPY_GBPS
    n = int(nbytes or (1 << 12 if backend.SIMULATOR else 512 << 20)) // 16 * 16
    src = cuda.device_array(n // 4, np.float32)
    dst = cuda.device_array(n // 4, np.float32)
    stream = cuda.stream()
    warm = default_repeats(None, warmup_s)[1]
    # Two copies: the driver's memcpy and a 16-byte-vector copy kernel; the faster is the ceiling (on the
    # H100 the kernel reads+writes ~3 TB/s where memcpy stays near 2.2-2.6).
    blocks = 1 if backend.SIMULATOR else device.limits()["sms"] * 16
    copies = [
        lambda: dst.copy_to_device(src, stream=stream),
        lambda: _copy16[blocks, 128 if not backend.SIMULATOR else 4, stream](dst, src),
    ]
    warm_up(copies, stream, max(warm, 0.0))
    timer = StageTimer(stream)
    best = math.inf
    for copy in copies:
        copy()
        stream.synchronize()
        times = [timer(lambda _, c=copy: c(), 0)[0] for _ in range(int(repeats))]
        best = min(best, float(np.median(times)))
    ms = best
    gbps = 2 * n / (ms * 1e-3) / 1e9 if ms > 0 else math.nan
    if nbytes is None:
        _COPY_GBPS = gbps
    return gbps


def time_kernels(
    per_kernel: Callable[[int], Sequence[tuple[Any, Any]]],
    stream: Any,
    batches: Sequence[int],
    host_ms_hint: float,
    delay: GpuDelay | None = None,
    max_pending: int = 256,
    before: Callable[[], None] | None = None,
    retries: int = 2,
) -> tuple[list[float], int, bool | None]:
    """Per-launch GPU time of the stage, summed per run, for each batch index in ``batches``.

    Runs are issued in chunks behind a :class:`GpuDelay` long enough (from ``host_ms_hint``, the stage's
    host issue time) for the host to queue the whole chunk; chunks are at most ``max_pending`` events
    plus launches, below the driver's queue depth. Returns ``(kernel_ms per run, launches per run,
    queued_ahead)`` where ``queued_ahead`` is whether the GPU was still in the delay when the host had
    issued every chunk (``None`` in the simulator, where it cannot be). ``before`` is enqueued ahead of
    each run, outside its event pairs (an L2 flush for cold-L2 timing). A chunk that was not queued ahead
    is re-measured up to ``retries`` times behind a longer delay; only its last measurement is kept.
    """
    delay = delay or GpuDelay(stream)
    out: list[float] = []
    launches = 0
    queued: bool | None = None if backend.SIMULATOR else True
    todo = list(batches)
    per_run = 0  # launches per run, unknown until the first run: it goes alone
    while todo:
        chunk = max(1, max_pending // (3 * per_run + 1)) if per_run else 1
        part, todo = todo[:chunk], todo[chunk:]
        # 3x: event records roughly double the enqueue work; plus a fixed margin for Python jitter.
        # A chunk the GPU caught up with (GC pause, slow host) is measured again behind a 4x longer delay.
        ms = 3.0 * max(host_ms_hint, 0.01) * len(part) + 3.0
        for attempt in range(retries + 1):
            delay.enqueue(ms=min(ms * 4**attempt, 2000.0))
            marker = make_event()
            marker.record(stream)
            pairs = []
            for i in part:
                if before is not None:
                    before()
                pairs.append(per_kernel(i))
            ahead = None if queued is None else not marker.query()
            stream.synchronize()
            if ahead is not False:
                break
        if queued is not None:
            queued = queued and bool(ahead)
        for p in pairs:
            if not p:
                raise RuntimeError("per_kernel returned no event pairs")
            out.append(sum(elapsed_ms(s, e) for s, e in p))
            launches = len(p)
        per_run = max(per_run, launches)
    return out, launches, queued
