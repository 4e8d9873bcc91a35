"""Running a comparison's timing plan: warm-up until clocks are up, stage runs in the plan's order,
per-kernel runs queued ahead (what each time is: :mod:`dlrmlab.bench.timing`). Inputs are the variants
that passed the correctness check, by index."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
from tqdm.auto import tqdm

from dlrmlab.bench import env as benv
from dlrmlab.bench import timing
from dlrmlab.bench.case import BenchCase
from dlrmlab.bench.schedule import timing_plan
from dlrmlab.variants import Prepared

#: Per-kernel timing of one variant: ``(per-run kernel ms, launches per stage, queued ahead)``.
KernelTimes = tuple[list[float], int, bool | None]


class StageRuns(NamedTuple):
    """What the timed plan measured, by variant index: ``(round, stage_ms)``, host ms, per-run rows."""

    stage: dict[int, list[tuple[int, float]]]
    host: dict[int, list[float]]
    runs: list[dict]


def wait_for_clocks(runs: Sequence[Callable[[], Any]], stream: Any, max_s: float = 2.0, fraction: float = 0.8) -> None:
    """Keep warming up (at most ``max_s`` more) while the SM clock is below ``fraction`` of its maximum.

    The time-based warm-up is usually enough; this covers a GPU slow to leave its idle clock. Without a
    clock reader it does nothing.
    """
    top = benv.max_sm_clock_mhz()
    if not top or not runs:
        return
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < max_s:
        mhz = benv.sm_clock_mhz()
        if mhz is None or mhz >= fraction * top:
            return
        timing.warm_up(runs, stream, 0.1)


def warm_up(runs: Sequence[Callable[[], Any]], stream: Any, warmup_s: float) -> int | None:
    """Untimed round-robin ``runs`` for ``warmup_s``, then until clocks are up; the SM clock after them."""
    timing.warm_up(runs, stream, warmup_s)
    if warmup_s > 0:
        wait_for_clocks(runs, stream)
    clock_start = benv.sm_clock_mhz()
    if benv.clock_source() == "nvidia-smi" and warmup_s > 0:  # a slow read: bring clocks back up
        timing.warm_up(runs, stream, min(warmup_s, 0.1))
    return clock_start


def time_stages(
    case: BenchCase, live: dict[int, Prepared], flusher: timing.L2Flusher | None, *, timing_mode: str,
    repeats: int, serving_block: int, progress: bool,
) -> StageRuns:
    """Stage timing in the mode's order (serving: blocks whose first batch is run but not recorded)."""
    timed = list(live)
    timer = timing.StageTimer(case.stream)
    stage: dict[int, list[tuple[int, float]]] = {k: [] for k in timed}  # (round, stage_ms)
    host: dict[int, list[float]] = {k: [] for k in timed}
    run_rows: list[dict] = []
    plan: Any = timing_plan(timing_mode, len(timed), repeats, case.n_batches, serving_block)
    if progress:
        plan = tqdm(plan, desc=f"{case.dataset}", unit="run", leave=False)
    for slot in plan:
        k = timed[slot.variant]
        if flusher is not None:
            flusher.flush()
        s_ms, h_ms = timer(live[k].run, slot.batch)
        if not slot.timed:
            continue
        run_rows.append({
            "round": slot.round, "run": len(stage[k]), "batch": slot.batch, "stage_ms": s_ms, "host_ms": h_ms,
            "_k": k,
        })  # fmt: skip
        stage[k].append((slot.round, s_ms))
        host[k].append(h_ms)
    return StageRuns(stage, host, run_rows)


def time_kernels(
    case: BenchCase, live: dict[int, Prepared], host: dict[int, list[float]], kernel_repeats: int,
    flusher: timing.L2Flusher | None,
) -> dict[int, KernelTimes]:
    """Per-launch GPU time, launches queued ahead (stage time includes launch overhead; this does not)."""
    kernels: dict[int, KernelTimes] = {}
    delay = timing.GpuDelay(case.stream)
    for k in live:
        pk = live[k].per_kernel
        if pk is None or kernel_repeats < 1:
            continue
        batches = [g % case.n_batches for g in range(kernel_repeats)]
        kernels[k] = timing.time_kernels(
            pk, case.stream, batches, float(np.median(host[k])), delay=delay,
            before=flusher.enqueue if flusher is not None else None,
        )  # fmt: skip
    return kernels
