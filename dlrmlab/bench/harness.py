"""The benchmark harness: correctness first, then timing in one of three modes, into tidy rows.

Variants of one comparison run in one process, their runs interleaved, so clock drift, thermals and other
tenants hit all of them alike, and each variant's time is compared with torch's from the same round
(``speedup_vs_torch`` = median over rounds of torch's time / the variant's). A variant whose output does
not match the NumPy reference is not timed at all; a peer library that cannot run here (cuEmbed without
nvcc or its directory) gets a row that says why, and the others run.

Timing modes (the ``timing_mode`` column of every row and run):

* ``serving`` (the default, the headline number): each variant serves a BLOCK of consecutive batches
  (``serving_block``, default 8, rotating through the case's batches) and the first batch of each block is
  not timed; blocks of different variants are interleaved (round ``r`` runs one block of every variant,
  all on the same batches, the variants' order rotating by one each round). This is what a server that
  runs one kernel configuration sees: its own buffers (a packed or frequency-ranked copy of the tables,
  pinned rows, an L2 window) and the previous requests' hot rows are in L2 when a batch arrives. The
  untimed first batch brings that state back after the other variants' blocks. ``speedup_vs_torch`` is
  the median over rounds of torch's summed time / the variant's, over the same batches.
* ``interleaved``: one timed run per variant per round (A B A B ...), consecutive runs on different
  batches. Each run starts from an L2 that holds ANOTHER variant's rows: neither a serving loop nor a cold
  cache, and unfair to variants that read their own copy of the tables. The mode dlrmlab used up to
  2026-11 (rows measured before then have this mode); kept to compare with them.
* ``cold_l2`` (``cold_l2=True``): interleaved, with L2 evicted before every timed run, outside the timed
  region: the worst case, where no batch finds anything of the last one in L2.

What each timing column is (see also :data:`COLUMN_DOCS` and :mod:`dlrmlab.bench.timing`):

* ``median_ms``, ``min_ms``, ``p10_ms``, ``p90_ms``, ``max_ms``, ``n_runs``: STAGE time, CUDA events
  around the whole stage of one request (launch overhead included), stream idle before each run;
* ``host_ms``: median HOST issue time of the stage (perf_counter around the enqueue call, no sync);
* ``kernel_ms``: median per-run sum of per-LAUNCH GPU time, launches queued ahead (variants that
  provide ``per_kernel`` only).
"""

from __future__ import annotations

import contextlib
import json
import math
import time
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from dlrmlab import backend, validate
from dlrmlab.bench import env as benv
from dlrmlab.bench import results as _results
from dlrmlab.bench import timing
from dlrmlab.bench.case import BenchCase
from dlrmlab.datasets import canonical_name
from dlrmlab.errors import DlrmlabError
from dlrmlab.peers import PeerUnavailable
from dlrmlab.variants import Prepared, knobs_for, why_not_here
from dlrmlab.variants import prepare as prepare_variant

BASELINE = "torch"

#: How stage times are taken (see the module docstring); ``serving`` is the default and the headline.
TIMING_MODES: tuple[str, ...] = ("serving", "interleaved", "cold_l2")
#: Consecutive batches a variant serves per block in ``serving`` mode (the first one untimed).
DEFAULT_SERVING_BLOCK = 8
#: ``error`` of a row whose variant could not run here at all (a peer library without its build tools).
SKIPPED_PREFIX = "skipped: "

#: Meaning of the measurement columns of a result row.
COLUMN_DOCS: dict[str, str] = {
    "median_ms": "stage time, median: CUDA events around the whole stage on the case's stream (see timing_mode)",
    "min_ms": "stage time, fastest run",
    "p10_ms": "stage time, 10th percentile",
    "p90_ms": "stage time, 90th percentile",
    "max_ms": "stage time, slowest run",
    "n_runs": "number of timed stage runs",
    "host_ms": "host issue time, median: perf_counter around the enqueue call, no sync",
    "kernel_ms": "GPU time of the launches, median per-run sum of per-launch event pairs, queued ahead",
    "kernel_n_runs": "number of per-kernel timing runs",
    "kernel_launches": "event-timed launches (or calls) per stage",
    "kernel_queued_ahead": "True if every launch was queued before the GPU reached it (None: simulator)",
    "speedup_vs_torch": (
        "median over rounds of torch stage time / this variant's, same round and batches (serving: each summed "
        "over the round's timed batches); NaN without torch"
    ),
    "bytes_requested": "bytes a perfect kernel moves per batch (rows read once, output written once)",
    "effective_gbps": "bytes_requested / median stage time, GB/s",
    "copy_gbps": "device-to-device copy bandwidth (read + write) measured once per process, GB/s",
    "copy_fraction": "effective_gbps / copy_gbps",
    "max_rel_err": "max over tables of ||out - ref|| / ||ref|| on batch 0",
    "correct": "max_rel_err within tolerance (1e-5 fp32, 1e-2 fp16/bf16); incorrect variants are not timed",
    "timing_valid": "False in simulator mode: timings are recorded but mean nothing",
    "timing_mode": (
        "serving: blocks of consecutive batches per variant, the first of each untimed (the headline); "
        "interleaved: one run per variant per round; cold_l2: interleaved with L2 evicted before each run"
    ),
    "serving_block": "batches per block in serving mode (the first untimed); empty in the other modes",
    "dropped_ids": (
        "trace ids skipped (>= the table's rows) while the case's batches were built; 0 for generated ids, "
        "empty for trace rows measured before it was recorded"
    ),
    "trace_wraps": "times the trace was read again from its start to fill the batches (0: never repeated)",
}

#: Columns of a result row, in order (env columns beyond these, e.g. a new package version, follow).
ROW_COLUMNS: list[str] = [
    "run_id", "repeat", "timestamp", "variant", "dataset", "preset", "device", "median_ms",
    "speedup_vs_torch", "min_ms", "p10_ms", "p90_ms", "max_ms", "n_runs", "host_ms", "kernel_ms",
    "kernel_n_runs", "kernel_launches", "kernel_queued_ahead", "effective_gbps", "copy_gbps",
    "copy_fraction", "bytes_requested", "correct", "max_rel_err", "error", "params", "kernel_regex",
    "tables", "rows", "dim", "dtype", "index_dtype", "batch", "pooling", "seed", "mode", "weighted",
    "n_batches", "dropped_ids", "trace_wraps", "cold_l2", "timing_mode", "serving_block", "repeats", "warmup_s",
    "timing_valid",
    "mode_backend", "gpu_name", "compute_capability", "sms", "l2_bytes", "sm_clock_start_mhz",
    "sm_clock_end_mhz", "clock_source",
    "driver_version", "cuda_driver_version", "cuda_runtime_version", "numba_version", "numba_cuda_version",
    "cuda_bindings_version", "numpy_version", "torch_version",
]  # fmt: skip

#: Columns of the per-run table (``BenchResult.runs``).
RUN_COLUMNS: list[str] = [
    "run_id", "repeat", "variant", "params", "dataset", "preset", "device", "timing_valid", "cold_l2",
    "timing_mode", "round", "run", "batch", "stage_ms", "host_ms",
]  # fmt: skip

VariantArg = str | tuple[str, dict]


@dataclass
class BenchResult:
    """``rows``: one row per (variant, case, repeat); ``runs``: every timed stage run."""

    rows: pd.DataFrame
    runs: pd.DataFrame
    run_id: str

    def save(self, results_dir: str | Path = "results", name: str = "bench") -> tuple[Path, Path]:
        """Append to ``<dir>/<name>.csv`` and ``<dir>/<name>_runs.csv``."""
        from dlrmlab.bench.results import append_results

        return append_results(self.rows, name, results_dir), append_results(self.runs, f"{name}_runs", results_dir)


# --- helpers -----------------------------------------------------------------------------------------


def normalize_variants(variants: Sequence[VariantArg] | VariantArg) -> list[tuple[str, dict]]:
    """``"a"``, ``["a", ("b", {"k": 1})]`` -> ``[("a", {}), ("b", {"k": 1})]``; names checked here."""
    single_pair = isinstance(variants, tuple) and len(variants) == 2 and isinstance(variants[1], dict)
    if isinstance(variants, str) or single_pair:
        variants = [variants]  # type: ignore[list-item]
    out = []
    for v in variants:
        name, params = (v, {}) if isinstance(v, str) else (v[0], dict(v[1]))
        knobs_for(name, params)  # unknown names and knobs fail here, naming the variant
        out.append((name, params))
    if not out:
        raise DlrmlabError("no variants to benchmark")
    return out


def schedule(n_variants: int, repeats: int, n_batches: int) -> list[tuple[int, int, int]]:
    """The ``interleaved`` (and ``cold_l2``) order of timed runs: ``(round, variant index, batch index)``.

    Round ``r`` runs every variant once, in order. Global run ``g`` uses batch ``g % n``, so consecutive
    runs never share a batch (no variant is served from the L2 its predecessor just filled). When V and
    n share a factor, that alone would show each variant only some batches; then the batch also moves
    on by one every ``lcm(V, n)`` runs, which keeps consecutive runs apart for ``n >= 3``.
    """
    v, n = int(n_variants), int(n_batches)
    if v <= 0 or n <= 0:
        return []
    block = math.lcm(v, n) if math.gcd(v, n) > 1 else 0
    out, g = [], 0
    for r in range(int(repeats)):
        for k in range(v):
            out.append((r, k, (g + (g // block if block else 0)) % n))
            g += 1
    return out


class Slot(NamedTuple):
    """One stage run of a timing plan: ``timed`` False for the warm-up batch that opens a serving block."""

    round: int
    variant: int
    batch: int
    timed: bool = True


def serving_schedule(
    n_variants: int, repeats: int, n_batches: int, block: int = DEFAULT_SERVING_BLOCK
) -> list[Slot]:
    """The serving-loop order of stage runs: blocks of consecutive batches per variant, interleaved.

    Each variant gets ``repeats`` timed runs, in ``ceil(repeats / (block - 1))`` rounds; the timed runs
    are spread evenly over the rounds (so a round's block may be shorter than ``block``). Round ``r``
    runs one block of every variant, the order rotated by ``r``; every block of round ``r`` covers the
    same batches ``r, r + 1, ...`` (mod ``n_batches``), the first of them untimed. Starting each round
    one batch later shows every batch in every position of a block.
    """
    v, n, block, repeats = int(n_variants), int(n_batches), int(block), int(repeats)
    if block < 2:
        raise DlrmlabError(f"serving_block must be at least 2 (one untimed batch, then timed ones), got {block}")
    if v <= 0 or n <= 0 or repeats <= 0:
        return []
    rounds = -(-repeats // (block - 1))
    timed_per_round = [repeats // rounds + (1 if r < repeats % rounds else 0) for r in range(rounds)]
    out = []
    for r, m in enumerate(timed_per_round):
        for i in range(v):
            k = (r + i) % v
            out.extend(Slot(r, k, (r + j) % n, j > 0) for j in range(m + 1))
    return out


def check_result(case: BenchCase, outputs: Sequence[np.ndarray], batch: int = 0) -> tuple[float, bool, str | None]:
    """``(max_rel_err, correct, error)`` of a variant's outputs against the reference."""
    ref = case.reference(batch)
    if len(outputs) != len(ref):
        return math.inf, False, f"returned {len(outputs)} outputs for {len(ref)} tables"
    worst = 0.0
    for t, (o, r) in enumerate(zip(outputs, ref, strict=True)):
        o = np.asarray(o, dtype=np.float64)
        if o.shape != r.shape:
            return math.inf, False, f"table {t}: output shape {o.shape}, expected {r.shape}"
        if not np.isfinite(o).all():
            return math.inf, False, f"table {t}: output has NaN or inf"
        r64 = r.astype(np.float64)
        denom = np.linalg.norm(r64)
        err = float(np.linalg.norm(o - r64) / denom) if denom > 0 else float(np.linalg.norm(o))
        worst = max(worst, err)
    ok = worst <= case.tolerance()
    return worst, ok, None if ok else f"max_rel_err {worst:.3g} > tolerance {case.tolerance():g}"


def _params_json(params: dict) -> str:
    return json.dumps(params, sort_keys=True, default=str)


def _flat_params(params: dict) -> dict:
    return {
        f"param_{k}": v
        for k, v in params.items()
        if isinstance(v, str | int | float | bool) or v is None
    }


def _nan_timings() -> dict:
    return {
        "median_ms": math.nan, "min_ms": math.nan, "p10_ms": math.nan, "p90_ms": math.nan,
        "max_ms": math.nan, "n_runs": 0, "host_ms": math.nan, "kernel_ms": math.nan, "kernel_n_runs": 0,
        "kernel_launches": None, "kernel_queued_ahead": None, "effective_gbps": math.nan,
        "copy_fraction": math.nan, "speedup_vs_torch": math.nan,
    }  # fmt: skip


def _frame(rows: list[dict], columns: list[str]) -> pd.DataFrame:
    extra = sorted({k for r in rows for k in r} - set(columns), key=lambda c: (c.startswith("param_"), c))
    return pd.DataFrame(rows, columns=[*columns, *extra])


def _wait_for_clocks(runs: list, stream: Any, max_s: float = 2.0, fraction: float = 0.8) -> None:
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


def with_timing_columns(df: pd.DataFrame) -> pd.DataFrame:
    """Rows or runs written before timing modes were recorded, with ``timing_mode`` (and for rows
    ``serving_block``) added: they were timed ``interleaved``, or ``cold_l2`` where ``cold_l2`` is set.

    Upgrades a results file in place: ``with_timing_columns(pd.read_csv(f)).to_csv(f, index=False)``.
    """
    if "timing_mode" in df.columns or "cold_l2" not in df.columns:
        return df
    out = df.copy()
    cold = out["cold_l2"].astype(str).str.lower().isin(["true", "1"])
    out.insert(out.columns.get_loc("cold_l2") + 1, "timing_mode", np.where(cold, "cold_l2", "interleaved"))
    if "round" not in out.columns:  # a rows table (runs tables have no serving_block)
        out.insert(out.columns.get_loc("timing_mode") + 1, "serving_block", pd.NA)
    return out


def with_trace_columns(df: pd.DataFrame) -> pd.DataFrame:
    """Rows written before ``dropped_ids`` and ``trace_wraps`` were recorded, with both added after
    ``n_batches``: 0 for generated datasets (they drop and repeat nothing), empty (unknown) for traces.

    Only benchmark rows tables (``n_batches`` and ``cold_l2`` columns) are changed; registered as a results
    upgrade, so old files keep appending (see :func:`dlrmlab.bench.results.upgrade_file`).
    """
    if "dropped_ids" in df.columns or "n_batches" not in df.columns or "cold_l2" not in df.columns:
        return df
    out = df.copy()
    trace = out["dataset"].astype(str).str.startswith("trace:") if "dataset" in out else pd.Series(False, out.index)
    at = out.columns.get_loc("n_batches") + 1
    for i, col in enumerate(("dropped_ids", "trace_wraps")):
        out.insert(at + i, col, pd.Series(0, index=out.index, dtype="Int64").mask(trace))
    return out


_results.UPGRADES[:] = [f for f in _results.UPGRADES if f.__name__ not in ("with_timing_columns", "with_trace_columns")]
_results.UPGRADES += [with_timing_columns, with_trace_columns]


def expected_columns() -> list[str]:
    """Columns a result row will have on this machine (before ``param_*``), to check a results file early."""
    return [*ROW_COLUMNS, *sorted(set(benv.environment()) - set(ROW_COLUMNS))]


# --- the comparison ----------------------------------------------------------------------------------


def resolve_timing_mode(
    timing_mode: str | None, cold_l2: bool = False, serving_block: int = DEFAULT_SERVING_BLOCK
) -> str:
    """The timing mode of a comparison: ``cold_l2=True`` is ``"cold_l2"``; the default is ``"serving"``.

    A bad ``serving_block`` for serving mode fails here too, before anything is prepared.
    """
    if timing_mode is None:
        timing_mode = "cold_l2" if cold_l2 else "serving"
    if timing_mode not in TIMING_MODES:
        raise DlrmlabError(f"timing_mode must be one of {', '.join(TIMING_MODES)}, got {timing_mode!r}")
    if cold_l2 and timing_mode != "cold_l2":
        raise DlrmlabError(f"cold_l2=True contradicts timing_mode={timing_mode!r}")
    if timing_mode == "serving":
        serving_schedule(1, 1, 1, serving_block)
    return timing_mode


def compare(
    case: BenchCase,
    variants: Sequence[VariantArg] | VariantArg,
    *,
    repeats: int | None = None,
    warmup_s: float | None = None,
    cold_l2: bool = False,
    timing_mode: str | None = None,
    serving_block: int = DEFAULT_SERVING_BLOCK,
    kernel_repeats: int | None = None,
    run_id: str | None = None,
    repeat: int = 0,
    progress: bool = False,
) -> BenchResult:
    """Check, then time ``variants`` on ``case``, their runs interleaved; one row per variant.

    ``repeats`` timed stage runs per variant (default 50 on a GPU, 2 in the simulator) after ``warmup_s``
    seconds of untimed round-robin runs (default 0.3 s; 0 in the simulator). ``timing_mode`` (see the
    module docstring): ``"serving"`` (default) times blocks of ``serving_block`` consecutive batches per
    variant, the first of each untimed; ``"interleaved"`` one run per variant per round; ``"cold_l2"``
    (or ``cold_l2=True``) evicts L2 before every timed run, outside the timed region. ``kernel_repeats``
    (default ``repeats``) per-kernel timing runs for variants that provide ``per_kernel``.
    """
    specs = normalize_variants(variants)
    timing_mode = resolve_timing_mode(timing_mode, cold_l2, serving_block)
    repeats, warmup_s = timing.default_repeats(repeats, warmup_s)
    if repeats < 1:
        raise DlrmlabError(f"repeats must be at least 1, got {repeats}")
    kernel_repeats = repeats if kernel_repeats is None else int(kernel_repeats)
    run_id = run_id or uuid.uuid4().hex
    environment = benv.environment()
    copy_gbps = timing.copy_bandwidth_gbps()
    started = datetime.now(UTC).isoformat(timespec="seconds")

    # Closed last-prepared first: variants nest GPU state (two windows each saved the limit they found), so
    # only this order gives the limit back as it was; an exception or Ctrl-C anywhere still closes them all.
    with contextlib.ExitStack() as stack:
        prepared, skipped = _prepare_all(stack, case, specs)
        # 1. correctness: only variants that match the reference are run again
        checks = _check_all(case, prepared, skipped)
        live: dict[int, Prepared] = {k: p for k, p in enumerate(prepared) if p is not None and checks[k][1]}
        # 2. the L2 flusher, then warm-up (round-robin, rotating batches)
        flusher = timing.L2Flusher(case.stream) if timing_mode == "cold_l2" else None
        if flusher is not None:
            flusher.flush()  # compiles it
        clock_start = _warm_up(case, live, warmup_s)
        # 3. stage timing; 4. per-kernel GPU time, queued ahead
        measured = _time_stages(
            case, live, flusher, timing_mode=timing_mode, repeats=repeats, serving_block=serving_block,
            progress=progress,
        )  # fmt: skip
        kernels = _time_kernels(case, live, measured.host, kernel_repeats, flusher)
        # 5. rows
        common = {
            **environment, "run_id": run_id, "repeat": int(repeat), "timestamp": started, **case.describe(),
            "cold_l2": timing_mode == "cold_l2", "timing_mode": timing_mode,
            "serving_block": int(serving_block) if timing_mode == "serving" else None, "repeats": int(repeats),
            "warmup_s": float(warmup_s), "timing_valid": not backend.SIMULATOR, "sm_clock_start_mhz": clock_start,
            "sm_clock_end_mhz": benv.sm_clock_mhz(), "bytes_requested": float(case.stage.bytes_per_batch()),
            "copy_gbps": copy_gbps,
        }  # fmt: skip
        rows = _variant_rows(common, specs, prepared, checks, measured, kernels)
        runs = _run_rows(
            measured.runs, specs, live, case, run_id=run_id, repeat=repeat, device=environment["device"],
            timing_mode=timing_mode,
        )  # fmt: skip
        return BenchResult(_frame(rows, expected_columns()), _frame(runs, RUN_COLUMNS), run_id)


def _prepare_all(
    stack: contextlib.ExitStack, case: BenchCase, specs: list[tuple[str, dict]]
) -> tuple[list[Prepared | None], dict[int, str]]:
    """Every variant prepared on ``case`` and its ``close`` put on ``stack``; a peer that cannot run here
    (e.g. cuEmbed without nvcc) is None, with the reason in ``skipped``: its row says why, the rest runs."""
    prepared: list[Prepared | None] = []
    skipped: dict[int, str] = {}
    for k, (name, params) in enumerate(specs):
        try:
            prepared.append(prepare_variant(name, case, **params))
            stack.callback(prepared[-1].close)
        except PeerUnavailable as e:
            prepared.append(None)
            skipped[k] = str(e)
    return prepared, skipped


def _plan(timing_mode: str, n_variants: int, repeats: int, n_batches: int, serving_block: int) -> list[Slot]:
    if timing_mode == "serving":
        return serving_schedule(n_variants, repeats, n_batches, serving_block)
    return [Slot(r, k, b) for r, k, b in schedule(n_variants, repeats, n_batches)]


def _round_ratios(base: list[tuple[int, float]], other: list[tuple[int, float]]) -> list[float]:
    """Per round: base's summed stage time / other's (both timed on the same batches in that round)."""
    b_sum: dict[int, float] = defaultdict(float)
    o_sum: dict[int, float] = defaultdict(float)
    for sums, runs in ((b_sum, base), (o_sum, other)):
        for r, t in runs:
            sums[r] += t
    return [b_sum[r] / o_sum[r] for r in sorted(b_sum) if o_sum.get(r, 0.0) > 0]


#: ``(max_rel_err, correct, error)`` of one variant (:func:`check_result`).
_Check = tuple[float, bool, str | None]
#: Per-kernel timing of one variant: ``(per-run kernel ms, launches per stage, queued ahead)``.
_KernelTimes = tuple[list[float], int, bool | None]


class _StageRuns(NamedTuple):
    """What the timed schedule measured, by variant index: ``(round, stage_ms)``, host ms, per-run rows."""

    stage: dict[int, list[tuple[int, float]]]
    host: dict[int, list[float]]
    runs: list[dict]


def _check_all(case: BenchCase, prepared: list[Prepared | None], skipped: dict[int, str]) -> list[_Check]:
    """Every variant's batch 0 against the reference, before any timing: a wrong kernel's speed is not a result."""
    checks: list[_Check] = []
    for k, p in enumerate(prepared):
        if p is None:
            checks.append((math.nan, False, SKIPPED_PREFIX + skipped[k]))
            continue
        try:
            checks.append(check_result(case, p.result(0), 0))
        except DlrmlabError:
            raise
        except Exception as e:  # a crashing variant must not take the others down with it
            checks.append((math.inf, False, f"{type(e).__name__}: {e}"))
    return checks


def _warm_up(case: BenchCase, live: dict[int, Prepared], warmup_s: float) -> int | None:
    """Untimed round-robin runs on rotating batches, so clocks are up before timing; the SM clock after them."""
    stream = case.stream
    counter = iter(range(1 << 62))
    warm = [lambda p=live[k]: p.run(next(counter) % case.n_batches) for k in live]
    timing.warm_up(warm, stream, warmup_s)
    if warmup_s > 0:
        _wait_for_clocks(warm, stream)
    clock_start = benv.sm_clock_mhz()
    if benv.clock_source() == "nvidia-smi" and warmup_s > 0:  # a slow read: bring clocks back up
        timing.warm_up(warm, stream, min(warmup_s, 0.1))
    return clock_start


def _time_stages(
    case: BenchCase,
    live: dict[int, Prepared],
    flusher: timing.L2Flusher | None,
    *,
    timing_mode: str,
    repeats: int,
    serving_block: int,
    progress: bool,
) -> _StageRuns:
    """Stage timing in the mode's order (serving: blocks whose first batch is run but not recorded)."""
    timed = list(live)
    timer = timing.StageTimer(case.stream)
    stage: dict[int, list[tuple[int, float]]] = {k: [] for k in timed}  # (round, stage_ms)
    host: dict[int, list[float]] = {k: [] for k in timed}
    run_rows: list[dict] = []
    plan = _plan(timing_mode, len(timed), repeats, case.n_batches, serving_block)
    it: Any = plan
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(plan, desc=f"{case.dataset}", unit="run", leave=False)
    for slot in it:
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
    return _StageRuns(stage, host, run_rows)


def _time_kernels(
    case: BenchCase,
    live: dict[int, Prepared],
    host: dict[int, list[float]],
    kernel_repeats: int,
    flusher: timing.L2Flusher | None,
) -> dict[int, _KernelTimes]:
    """Per-launch GPU time, launches queued ahead (stage time includes launch overhead; this does not)."""
    kernels: dict[int, _KernelTimes] = {}
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


def _timing_columns(
    stage: list[tuple[int, float]],
    host: list[float],
    kernel: _KernelTimes | None,
    base: list[tuple[int, float]] | None,
    bytes_req: float,
    copy_gbps: float,
) -> dict:
    """A correct variant's measured columns (an incorrect or skipped one keeps :func:`_nan_timings`)."""
    st = timing.summarize([t for _, t in stage])
    cols: dict[str, Any] = dict(
        median_ms=st["median"], min_ms=st["min"], p10_ms=st["p10"], p90_ms=st["p90"],
        max_ms=st["max"], n_runs=st["n"], host_ms=float(np.median(host)),
    )  # fmt: skip
    if st["median"] > 0:
        cols["effective_gbps"] = bytes_req / (st["median"] * 1e-3) / 1e9
        if copy_gbps and copy_gbps > 0:
            cols["copy_fraction"] = cols["effective_gbps"] / copy_gbps
    if kernel is not None:
        km, launches, queued = kernel
        cols.update(
            kernel_ms=float(np.median(km)), kernel_n_runs=len(km), kernel_launches=launches,
            kernel_queued_ahead=queued,
        )  # fmt: skip
    if base is not None:
        ratios = _round_ratios(base, stage)
        cols["speedup_vs_torch"] = float(np.median(ratios)) if ratios else math.nan
    return cols


def _variant_rows(
    common: dict,
    specs: list[tuple[str, dict]],
    prepared: list[Prepared | None],
    checks: list[_Check],
    measured: _StageRuns,
    kernels: dict[int, _KernelTimes],
) -> list[dict]:
    """One row per variant, skipped and incorrect ones included (they say why), all on ``common``'s columns."""
    base_k = next((k for k in measured.stage if specs[k][0] == BASELINE), None)  # keys: the timed variants
    bytes_req, copy_gbps = common["bytes_requested"], common["copy_gbps"]
    rows = []
    for k, ((name, requested), p) in enumerate(zip(specs, prepared, strict=True)):
        err, ok, why = checks[k]
        params = p.params if p is not None else requested
        row = {
            **common,
            "variant": name,
            "params": _params_json(params),
            "kernel_regex": p.kernel_regex if p is not None else None,
            "correct": bool(ok),
            "max_rel_err": float(err),
            "error": why,
            **_nan_timings(),
        }
        if ok:
            row.update(_timing_columns(
                measured.stage[k], measured.host[k], kernels.get(k),
                measured.stage[base_k] if base_k is not None else None, bytes_req, copy_gbps,
            ))  # fmt: skip
        row.update(_flat_params(params))
        rows.append(row)
    return rows


def _run_rows(
    runs: list[dict],
    specs: list[tuple[str, dict]],
    live: dict[int, Prepared],
    case: BenchCase,
    *,
    run_id: str,
    repeat: int,
    device: Any,
    timing_mode: str,
) -> list[dict]:
    """The per-run table: every timed stage run, labelled like its variant's row (``_k`` is taken out)."""
    out = []
    for rr in runs:
        k = rr.pop("_k")
        out.append({
            "run_id": run_id, "repeat": int(repeat), "variant": specs[k][0],
            "params": _params_json(live[k].params), "dataset": case.dataset, "preset": case.preset,
            "device": device, "timing_valid": not backend.SIMULATOR, "cold_l2": timing_mode == "cold_l2",
            "timing_mode": timing_mode, **rr,
        })  # fmt: skip
    return out


# --- a sweep (what the CLI runs) -------------------------------------------------------------------------


def with_baseline(variants: list[tuple[str, dict]], include_torch: bool = True) -> list[tuple[str, dict]]:
    """Put torch first when asked for, usable and not already there (so every row gets a speedup)."""
    if not include_torch or any(n == BASELINE for n, _ in variants):
        return variants
    if why_not_here(BASELINE) is None:
        return [(BASELINE, {}), *variants]
    return variants


def run_bench(
    variants: Sequence[VariantArg] | VariantArg,
    datasets: Sequence[str] | str,
    stage: Any = "tiny",
    *,
    seed: int = 0,
    n_batches: int = 4,
    weighted: bool = False,
    mode: str = "sum",
    repeats: int | None = None,
    warmup_s: float | None = None,
    cold_l2: bool = False,
    timing_mode: str | None = None,
    serving_block: int = DEFAULT_SERVING_BLOCK,
    include_torch: bool = True,
    repeat_runs: int = 1,
    out: str | Path | None = None,
    name: str = "bench",
    progress: bool = False,
) -> BenchResult:
    """Compare ``variants`` on each dataset, ``repeat_runs`` times; append rows to ``out`` as they come.

    Everything that can be wrong with the request (variant or dataset names, GPU-only variants in the
    simulator, the timing mode, an unwritable or incompatible results file) is reported before anything
    runs. ``timing_mode``, ``serving_block`` and ``cold_l2``: see :func:`compare`.
    """
    from dlrmlab.bench import results
    from dlrmlab.datasets import make_stream
    from dlrmlab.workload import preset

    seed, n_batches, repeats, warmup_s, serving_block, repeat_runs = validate.bench_numbers(
        seed=seed, n_batches=n_batches, repeats=repeats, warmup_s=warmup_s, serving_block=serving_block,
        repeat_runs=repeat_runs)
    specs = with_baseline(normalize_variants(variants), include_torch)
    timing_mode = resolve_timing_mode(timing_mode, cold_l2, serving_block)
    for n, _ in specs:
        why = why_not_here(n)
        if why:
            raise DlrmlabError(why)
    datasets = [datasets] if isinstance(datasets, str) else list(datasets)
    if not datasets:
        raise DlrmlabError("no datasets to benchmark")
    for ds in datasets:
        make_stream(ds, seed)  # unknown names and unreadable traces fail here
    stage = preset(stage) if isinstance(stage, str) else stage
    for ds in datasets:  # a case larger than free memory is refused now, not after the first datasets ran
        validate.check_stage(stage, int(n_batches), weighted=bool(weighted), dataset=ds)
    if int(repeat_runs) < 1:
        raise DlrmlabError(f"repeat_runs must be at least 1, got {repeat_runs}")
    if out is not None:
        results.check_results_dir(out)
        results.check_columns(expected_columns(), name, out)
        results.check_columns(RUN_COLUMNS, f"{name}_runs", out)

    run_id = uuid.uuid4().hex
    all_rows, all_runs = [], []
    steps: Any = [(ds, rep) for ds in datasets for rep in range(int(repeat_runs))]
    if progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc="bench", unit="case")
    case: BenchCase | None = None
    for ds, rep in steps:
        if case is None or case.dataset != canonical_name(ds):
            t0 = time.perf_counter()
            case = BenchCase.create(stage, ds, seed, n_batches, weighted, mode, tables_from=case)
            if progress:
                steps.set_postfix_str(f"{ds}: case ready in {time.perf_counter() - t0:.1f} s")
        res = compare(
            case, specs, repeats=repeats, warmup_s=warmup_s, timing_mode=timing_mode,
            serving_block=serving_block, run_id=run_id, repeat=rep, progress=progress,
        )  # fmt: skip
        if out is not None:
            res.save(out, name)
        all_rows.append(res.rows)
        all_runs.append(res.runs)
    return BenchResult(
        pd.concat(all_rows, ignore_index=True, sort=False), pd.concat(all_runs, ignore_index=True), run_id
    )


# --- text report -------------------------------------------------------------------------------------

SIMULATOR_NOTICE = "simulator: timings not meaningful"


def _skipped(rows: pd.DataFrame) -> pd.Series:
    if "error" not in rows:
        return pd.Series(False, rows.index)
    return rows["error"].map(lambda e: isinstance(e, str) and e.startswith(SKIPPED_PREFIX)).astype(bool)


def _modes(rows: pd.DataFrame) -> list[tuple[str, Any]]:
    block = rows["serving_block"] if "serving_block" in rows else pd.Series(None, rows.index)
    return list(dict.fromkeys(zip(rows["timing_mode"], block, strict=True)))


_MODE_TEXT = {"cold_l2": "cold L2 (evicted before every run)",
              "interleaved": "interleaved (one run per variant per round)"}


def _describe_mode(mode: Any, block: Any) -> str:
    if mode == "serving":
        b = int(block) if block is not None and not (isinstance(block, float) and math.isnan(block)) else "?"
        return f"serving loop (blocks of {b} consecutive batches per variant, the first untimed)"
    return _MODE_TEXT.get(mode, str(mode))


def format_table(rows: pd.DataFrame) -> str:
    """The CLI's table. Rows not measured on a GPU show correctness only: no speed claims."""
    if rows.empty:
        return "(no rows)"
    valid = rows["timing_valid"].astype(bool) if "timing_valid" in rows else pd.Series(False, rows.index)
    lines = []
    show = rows.copy()
    skipped = _skipped(rows)
    show["ok"] = show["correct"].map({True: "yes", False: "NO"}).where(~skipped, "skipped")
    if valid.any():
        cols = {
            "variant": "variant", "dataset": "dataset", "median_ms": "stage ms (median)", "p10_ms": "p10",
            "p90_ms": "p90", "host_ms": "host ms", "kernel_ms": "kernel ms", "effective_gbps": "GB/s",
            "speedup_vs_torch": "speedup vs torch", "ok": "correct",
        }  # fmt: skip
        t = show.loc[valid, list(cols)].rename(columns=cols)

        def fmt(spec: str):
            return lambda x: "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)

        formatters = {"GB/s": fmt(",.0f"), "speedup vs torch": fmt(".2f")}
        formatters |= {c: fmt(".4g") for c in ("stage ms (median)", "p10", "p90", "host ms", "kernel ms")}
        lines.append(t.to_string(index=False, formatters=formatters, na_rep="-"))
    if (~valid).any():
        cols = {"variant": "variant", "dataset": "dataset", "ok": "correct", "max_rel_err": "max rel err"}
        t = show.loc[~valid, list(cols)].rename(columns=cols)
        lines.append(t.to_string(index=False, float_format=lambda x: f"{x:.2e}", na_rep="-"))
        lines.append(SIMULATOR_NOTICE)
    for _, r in rows.loc[skipped].iterrows():
        lines.append(f"{r['variant']} on {r['dataset']}: SKIPPED ({str(r['error'])[len(SKIPPED_PREFIX):]})")
    bad = rows.loc[~rows["correct"].astype(bool) & ~skipped]
    for _, r in bad.iterrows():
        lines.append(f"{r['variant']} on {r['dataset']}: INCORRECT, not timed ({r['error']})")
    if valid.any() and "timing_mode" in rows:
        lines.append("stage time: " + "; ".join(_describe_mode(m, b) for m, b in _modes(rows.loc[valid])))
    if valid.any() and "copy_gbps" in rows:
        lines.append(f"device-to-device copy: {rows.loc[valid, 'copy_gbps'].iloc[0]:.0f} GB/s (read + write)")
    return "\n".join(lines)
