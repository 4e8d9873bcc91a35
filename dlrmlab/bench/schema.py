"""The benchmark's tables: the columns of its rows and runs, what each means, and the upgrades of older files.

:data:`UPGRADES` is a declared table: :mod:`dlrmlab.bench.results` applies every entry to any results file
whose columns differ from new rows', so how an old file is read never depends on what was imported.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

#: The variant every speedup is relative to (``speedup_vs_torch``; the DLRM pipeline of the same name).
BASELINE = "torch"
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


# --- upgrades of older files ----------------------------------------------------------------------------


def with_timing_columns(df: pd.DataFrame) -> pd.DataFrame:
    """Rows or runs written before timing modes were recorded, with ``timing_mode`` (and for rows
    ``serving_block``) added: they were timed ``interleaved``, or ``cold_l2`` where ``cold_l2`` is set."""
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
    Only benchmark rows tables (``n_batches`` and ``cold_l2`` columns) are changed."""
    if "dropped_ids" in df.columns or "n_batches" not in df.columns or "cold_l2" not in df.columns:
        return df
    out = df.copy()
    trace = out["dataset"].astype(str).str.startswith("trace:") if "dataset" in out else pd.Series(False, out.index)
    at = out.columns.get_loc("n_batches") + 1
    for i, col in enumerate(("dropped_ids", "trace_wraps")):
        out.insert(at + i, col, pd.Series(0, index=out.index, dtype="Int64").mask(trace))
    return out


def with_profile_columns(df: pd.DataFrame) -> pd.DataFrame:
    """Profile rows (``dlrmlab profile``) written before knobs and DRAM bytes were recorded, with ``params``
    (``{}``: the variant's defaults, all that could be profiled then) and ``dram_read_bytes`` (empty: not
    measured) added."""
    if "params" in df.columns or not {"kernel_regex", "dram_throughput_pct"} <= set(df.columns):
        return df
    out = df.copy()
    out.insert(out.columns.get_loc("dataset") + 1, "params", "{}")
    out.insert(out.columns.get_loc("dram_throughput_pct") + 1, "dram_read_bytes", pd.NA)
    return out


#: Every upgrade of an older results table, applied in order; each leaves other tables unchanged.
UPGRADES = (with_timing_columns, with_trace_columns, with_profile_columns)
