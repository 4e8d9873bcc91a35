"""The benchmark harness: correctness first, then interleaved timing, into tidy rows.

Variants of one comparison run round-robin in one process (A B A B ...), so clock drift, thermals and
other tenants hit all of them alike, and each variant's time is compared with torch's from the same round
(``speedup_vs_torch`` = median over rounds of torch_ms / variant_ms). A variant whose output does not
match the NumPy reference is not timed at all.

What each timing column is (see also :data:`COLUMN_DOCS` and :mod:`dlrmlab.bench.timing`):

* ``median_ms``, ``min_ms``, ``p10_ms``, ``p90_ms``, ``max_ms``, ``n_runs``: STAGE time, CUDA events
  around the whole stage of one request (launch overhead included), stream idle before each run;
* ``host_ms``: median HOST issue time of the stage (perf_counter around the enqueue call, no sync);
* ``kernel_ms``: median per-run sum of per-LAUNCH GPU time, launches queued ahead (variants that
  provide ``per_kernel`` only).
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dlrmlab import backend
from dlrmlab.bench import env as benv
from dlrmlab.bench import timing
from dlrmlab.bench.case import BenchCase
from dlrmlab.errors import DlrmlabError
from dlrmlab.variants import Prepared, knobs_for, why_not_here
from dlrmlab.variants import prepare as prepare_variant

BASELINE = "torch"

#: Meaning of the measurement columns of a result row.
COLUMN_DOCS: dict[str, str] = {
    "median_ms": "stage time, median: CUDA events around the whole stage on the case's stream",
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
    "speedup_vs_torch": "median over rounds of torch stage time / this variant's, same round; NaN without torch",
    "bytes_requested": "bytes a perfect kernel moves per batch (rows read once, output written once)",
    "effective_gbps": "bytes_requested / median stage time, GB/s",
    "copy_gbps": "device-to-device copy bandwidth (read + write) measured once per process, GB/s",
    "copy_fraction": "effective_gbps / copy_gbps",
    "max_rel_err": "max over tables of ||out - ref|| / ||ref|| on batch 0",
    "correct": "max_rel_err within tolerance (1e-5 fp32, 1e-2 fp16/bf16); incorrect variants are not timed",
    "timing_valid": "False in simulator mode: timings are recorded but mean nothing",
}

#: Columns of a result row, in order (env columns beyond these, e.g. a new package version, follow).
ROW_COLUMNS: list[str] = [
    "run_id", "repeat", "timestamp", "variant", "dataset", "preset", "device", "median_ms",
    "speedup_vs_torch", "min_ms", "p10_ms", "p90_ms", "max_ms", "n_runs", "host_ms", "kernel_ms",
    "kernel_n_runs", "kernel_launches", "kernel_queued_ahead", "effective_gbps", "copy_gbps",
    "copy_fraction", "bytes_requested", "correct", "max_rel_err", "error", "params", "kernel_regex",
    "tables", "rows", "dim", "dtype", "index_dtype", "batch", "pooling", "seed", "mode", "weighted",
    "n_batches", "cold_l2", "repeats", "warmup_s", "timing_valid", "mode_backend", "gpu_name",
    "compute_capability", "sms", "l2_bytes", "sm_clock_start_mhz", "sm_clock_end_mhz", "clock_source",
    "driver_version", "cuda_driver_version", "cuda_runtime_version", "numba_version", "numba_cuda_version",
    "cuda_bindings_version", "numpy_version", "torch_version",
]  # fmt: skip

#: Columns of the per-run table (``BenchResult.runs``).
RUN_COLUMNS: list[str] = [
    "run_id", "repeat", "variant", "params", "dataset", "preset", "device", "timing_valid", "cold_l2",
    "round", "run", "batch", "stage_ms", "host_ms",
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
    """The interleaved order of timed runs: ``(round, variant index, batch index)``.

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


def expected_columns() -> list[str]:
    """Columns a result row will have on this machine (before ``param_*``), to check a results file early."""
    return [*ROW_COLUMNS, *sorted(set(benv.environment()) - set(ROW_COLUMNS))]


# --- the comparison ----------------------------------------------------------------------------------


def compare(
    case: BenchCase,
    variants: Sequence[VariantArg] | VariantArg,
    *,
    repeats: int | None = None,
    warmup_s: float | None = None,
    cold_l2: bool = False,
    kernel_repeats: int | None = None,
    run_id: str | None = None,
    repeat: int = 0,
    progress: bool = False,
) -> BenchResult:
    """Check, then time ``variants`` on ``case`` interleaved; one row per variant.

    ``repeats`` timed rounds (default 50 on a GPU, 2 in the simulator) after ``warmup_s`` seconds of
    untimed round-robin runs (default 0.3 s; 0 in the simulator). ``cold_l2`` evicts L2 before every
    timed run, outside the timed region. ``kernel_repeats`` (default ``repeats``) per-kernel timing runs
    for variants that provide ``per_kernel``.
    """
    specs = normalize_variants(variants)
    repeats, warmup_s = timing.default_repeats(repeats, warmup_s)
    if repeats < 1:
        raise DlrmlabError(f"repeats must be at least 1, got {repeats}")
    kernel_repeats = repeats if kernel_repeats is None else int(kernel_repeats)
    run_id = run_id or uuid.uuid4().hex
    environment = benv.environment()
    copy_gbps = timing.copy_bandwidth_gbps()
    started = datetime.now(UTC).isoformat(timespec="seconds")

    prepared: list[Prepared] = []
    try:
        for name, params in specs:
            prepared.append(prepare_variant(name, case, **params))
        return _compare(
            case, specs, prepared, repeats=repeats, warmup_s=warmup_s, cold_l2=cold_l2,
            kernel_repeats=kernel_repeats, run_id=run_id, repeat=repeat, progress=progress,
            environment=environment, copy_gbps=copy_gbps, started=started,
        )  # fmt: skip
    finally:
        for p in prepared:
            p.close()


def _compare(
    case: BenchCase,
    specs: list[tuple[str, dict]],
    prepared: list[Prepared],
    *,
    repeats: int,
    warmup_s: float,
    cold_l2: bool,
    kernel_repeats: int,
    run_id: str,
    repeat: int,
    progress: bool,
    environment: dict,
    copy_gbps: float,
    started: str,
) -> BenchResult:
    stream = case.stream
    # 1. correctness: a wrong kernel's speed is not a result
    checks = []
    for p in prepared:
        try:
            checks.append(check_result(case, p.result(0), 0))
        except DlrmlabError:
            raise
        except Exception as e:  # a crashing variant must not take the others down with it
            checks.append((math.inf, False, f"{type(e).__name__}: {e}"))
    timed = [k for k, c in enumerate(checks) if c[1]]

    # 2. warm-up (round-robin, rotating batches) and the L2 flusher
    flusher = timing.L2Flusher(stream) if cold_l2 else None
    if flusher is not None:
        flusher.flush()  # compiles it
    counter = iter(range(1 << 62))
    warm = [lambda p=prepared[k]: p.run(next(counter) % case.n_batches) for k in timed]
    timing.warm_up(warm, stream, warmup_s)
    if warmup_s > 0:
        _wait_for_clocks(warm, stream)
    clock_start = benv.sm_clock_mhz()
    if benv.clock_source() == "nvidia-smi" and warmup_s > 0:  # a slow read: bring clocks back up
        timing.warm_up(warm, stream, min(warmup_s, 0.1))

    # 3. interleaved stage timing
    timer = timing.StageTimer(stream)
    stage: dict[int, list[float]] = {k: [] for k in timed}
    host: dict[int, list[float]] = {k: [] for k in timed}
    run_rows: list[dict] = []
    plan = schedule(len(timed), repeats, case.n_batches)
    it: Any = plan
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(plan, desc=f"{case.dataset}", unit="run", leave=False)
    for r, slot, b in it:
        k = timed[slot]
        if flusher is not None:
            flusher.flush()
        s_ms, h_ms = timer(prepared[k].run, b)
        stage[k].append(s_ms)
        host[k].append(h_ms)
        run_rows.append({"round": r, "run": r, "batch": b, "stage_ms": s_ms, "host_ms": h_ms, "_k": k})

    # 4. per-kernel GPU time, queued ahead
    kernels: dict[int, tuple[list[float], int, bool | None]] = {}
    delay = timing.GpuDelay(stream)
    for k in timed:
        pk = prepared[k].per_kernel
        if pk is None or kernel_repeats < 1:
            continue
        batches = [g % case.n_batches for g in range(kernel_repeats)]
        kernels[k] = timing.time_kernels(
            pk, stream, batches, float(np.median(host[k])), delay=delay,
            before=flusher.enqueue if flusher is not None else None,
        )  # fmt: skip
    clock_end = benv.sm_clock_mhz()

    # 5. rows
    base_k = next((k for k in timed if specs[k][0] == BASELINE), None)
    bytes_req = float(case.stage.bytes_per_batch())
    common = {
        **environment,
        "run_id": run_id,
        "repeat": int(repeat),
        "timestamp": started,
        **case.describe(),
        "cold_l2": bool(cold_l2),
        "repeats": int(repeats),
        "warmup_s": float(warmup_s),
        "timing_valid": not backend.SIMULATOR,
        "sm_clock_start_mhz": clock_start,
        "sm_clock_end_mhz": clock_end,
        "bytes_requested": bytes_req,
        "copy_gbps": copy_gbps,
    }
    rows = []
    for k, ((name, _), p) in enumerate(zip(specs, prepared, strict=True)):
        err, ok, why = checks[k]
        row = {
            **common,
            "variant": name,
            "params": _params_json(p.params),
            "kernel_regex": p.kernel_regex,
            "correct": bool(ok),
            "max_rel_err": float(err),
            "error": why,
            **_nan_timings(),
        }
        if ok:
            st = timing.summarize(stage[k])
            row.update(
                median_ms=st["median"], min_ms=st["min"], p10_ms=st["p10"], p90_ms=st["p90"],
                max_ms=st["max"], n_runs=st["n"], host_ms=float(np.median(host[k])),
            )  # fmt: skip
            if st["median"] > 0:
                row["effective_gbps"] = bytes_req / (st["median"] * 1e-3) / 1e9
                if copy_gbps and copy_gbps > 0:
                    row["copy_fraction"] = row["effective_gbps"] / copy_gbps
            if k in kernels:
                km, launches, queued = kernels[k]
                row.update(
                    kernel_ms=float(np.median(km)), kernel_n_runs=len(km), kernel_launches=launches,
                    kernel_queued_ahead=queued,
                )  # fmt: skip
            if base_k is not None:
                ratios = [t / v for t, v in zip(stage[base_k], stage[k], strict=True) if v > 0]
                row["speedup_vs_torch"] = float(np.median(ratios)) if ratios else math.nan
        row.update(_flat_params(p.params))
        rows.append(row)

    runs = []
    for rr in run_rows:
        k = rr.pop("_k")
        runs.append({
            "run_id": run_id, "repeat": int(repeat), "variant": specs[k][0],
            "params": _params_json(prepared[k].params), "dataset": case.dataset, "preset": case.preset,
            "device": environment["device"], "timing_valid": not backend.SIMULATOR, "cold_l2": bool(cold_l2),
            **rr,
        })  # fmt: skip
    return BenchResult(_frame(rows, expected_columns()), _frame(runs, RUN_COLUMNS), run_id)


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
    include_torch: bool = True,
    repeat_runs: int = 1,
    out: str | Path | None = None,
    name: str = "bench",
    progress: bool = False,
) -> BenchResult:
    """Compare ``variants`` on each dataset, ``repeat_runs`` times; append rows to ``out`` as they come.

    Everything that can be wrong with the request (variant or dataset names, GPU-only variants in the
    simulator, an unwritable or incompatible results file) is reported before anything runs.
    """
    from dlrmlab.bench import results
    from dlrmlab.datasets import make_stream
    from dlrmlab.workload import preset

    specs = with_baseline(normalize_variants(variants), include_torch)
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
        if case is None or case.dataset != ds:
            t0 = time.perf_counter()
            case = BenchCase.create(stage, ds, seed, n_batches, weighted, mode, tables_from=case)
            if progress:
                steps.set_postfix_str(f"{ds}: case ready in {time.perf_counter() - t0:.1f} s")
        res = compare(
            case, specs, repeats=repeats, warmup_s=warmup_s, cold_l2=cold_l2, run_id=run_id,
            repeat=rep, progress=progress,
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


def format_table(rows: pd.DataFrame) -> str:
    """The CLI's table. Rows not measured on a GPU show correctness only: no speed claims."""
    if rows.empty:
        return "(no rows)"
    valid = rows["timing_valid"].astype(bool) if "timing_valid" in rows else pd.Series(False, rows.index)
    lines = []
    show = rows.copy()
    show["ok"] = show["correct"].map({True: "yes", False: "NO"})
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
    bad = rows.loc[~rows["correct"].astype(bool)]
    for _, r in bad.iterrows():
        lines.append(f"{r['variant']} on {r['dataset']}: INCORRECT, not timed ({r['error']})")
    if valid.any() and "copy_gbps" in rows:
        lines.append(f"device-to-device copy: {rows.loc[valid, 'copy_gbps'].iloc[0]:.0f} GB/s (read + write)")
    return "\n".join(lines)
