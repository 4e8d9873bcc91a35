"""One comparison: correctness first, then timing in one of three modes (:mod:`dlrmlab.bench.schedule`),
into tidy rows (:mod:`dlrmlab.bench.schema`).

A variant whose output does not match the NumPy reference is not timed at all; a peer library that cannot
run here (cuEmbed without nvcc or its directory) gets a row that says why, and the others run. Each
variant's time is compared with torch's from the same round: ``speedup_vs_torch`` is the median over
rounds of torch's time / the variant's (in serving mode, each summed over the round's timed batches).
"""

from __future__ import annotations

import contextlib
import json
import math
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dlrmlab import backend
from dlrmlab.bench import env as benv
from dlrmlab.bench import runs, timing
from dlrmlab.bench.case import BenchCase
from dlrmlab.bench.results import append_results
from dlrmlab.bench.schedule import DEFAULT_SERVING_BLOCK, resolve_timing_mode
from dlrmlab.bench.schema import BASELINE, ROW_COLUMNS, RUN_COLUMNS, SKIPPED_PREFIX
from dlrmlab.errors import DlrmlabError
from dlrmlab.peers import PeerUnavailable
from dlrmlab.variants import Prepared, knobs_for
from dlrmlab.variants import get as get_variant
from dlrmlab.variants import prepare as prepare_variant

VariantArg = str | tuple[str, dict]
#: ``(max_rel_err, correct, error)`` of one variant (:func:`check_result`).
Check = tuple[float, bool, str | None]


@dataclass
class BenchResult:
    """``rows``: one row per (variant, case, repeat); ``runs``: every timed stage run."""

    rows: pd.DataFrame
    runs: pd.DataFrame
    run_id: str

    def save(self, results_dir: str | Path = "results", name: str = "bench") -> tuple[Path, Path]:
        """Append to ``<dir>/<name>.csv`` and ``<dir>/<name>_runs.csv``."""
        return append_results(self.rows, name, results_dir), append_results(self.runs, f"{name}_runs", results_dir)


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


def check_result(case: BenchCase, outputs: Sequence[np.ndarray], batch: int = 0) -> Check:
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


def expected_columns() -> list[str]:
    """Columns a result row will have on this machine (before ``param_*``), to check a results file early."""
    return [*ROW_COLUMNS, *sorted(set(benv.environment()) - set(ROW_COLUMNS))]


def compare(
    case: BenchCase, variants: Sequence[VariantArg] | VariantArg, *, repeats: int | None = None,
    warmup_s: float | None = None, cold_l2: bool = False, timing_mode: str | None = None,
    serving_block: int = DEFAULT_SERVING_BLOCK, kernel_repeats: int | None = None, run_id: str | None = None,
    repeat: int = 0, progress: bool = False,
) -> BenchResult:
    """Check, then time ``variants`` on ``case``, their runs interleaved; one row per variant.

    ``repeats`` timed stage runs per variant (default 50 on a GPU, 2 in the simulator) after ``warmup_s``
    seconds of untimed round-robin runs (default 0.3 s; 0 in the simulator), in the order of ``timing_mode``
    (``"serving"``, the default, ``"interleaved"`` or ``"cold_l2"``, or ``cold_l2=True``: see
    :mod:`dlrmlab.bench.schedule`). ``kernel_repeats`` (default ``repeats``) per-kernel timing runs for
    variants that provide ``per_kernel``.
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
        counter = iter(range(1 << 62))  # rotating batches
        warm = [lambda p=p: p.run(next(counter) % case.n_batches) for p in live.values()]
        clock_start = runs.warm_up(warm, case.stream, warmup_s)
        # 3. stage timing; 4. per-kernel GPU time, queued ahead
        measured = runs.time_stages(
            case, live, flusher, timing_mode=timing_mode, repeats=repeats, serving_block=serving_block,
            progress=progress,
        )  # fmt: skip
        kernels = runs.time_kernels(case, live, measured.host, kernel_repeats, flusher)
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
        run_rows = _run_rows(measured.runs, specs, live, common)
        return BenchResult(_frame(rows, expected_columns()), _frame(run_rows, RUN_COLUMNS), run_id)


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


def _check_all(case: BenchCase, prepared: list[Prepared | None], skipped: dict[int, str]) -> list[Check]:
    """Every variant's batch 0 against the reference, before any timing: a wrong kernel's speed is not a result."""
    checks: list[Check] = []
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


# --- rows ---------------------------------------------------------------------------------------------


def round_ratios(base: list[tuple[int, float]], other: list[tuple[int, float]]) -> list[float]:
    """Per round: base's summed stage time / other's (both timed on the same batches in that round)."""
    b_sum: dict[int, float] = defaultdict(float)
    o_sum: dict[int, float] = defaultdict(float)
    for sums, measured in ((b_sum, base), (o_sum, other)):
        for r, t in measured:
            sums[r] += t
    return [b_sum[r] / o_sum[r] for r in sorted(b_sum) if o_sum.get(r, 0.0) > 0]


def _params_json(params: dict) -> str:
    return json.dumps(params, sort_keys=True, default=str)


def _flat_params(params: dict) -> dict:
    return {f"param_{k}": v for k, v in params.items() if isinstance(v, str | int | float | bool) or v is None}


#: The timing columns of a variant that was not timed (incorrect or skipped).
NOT_TIMED: dict[str, Any] = {
    **dict.fromkeys(("median_ms", "min_ms", "p10_ms", "p90_ms", "max_ms", "host_ms", "kernel_ms", "effective_gbps",
                     "copy_fraction", "speedup_vs_torch"), math.nan),
    "n_runs": 0, "kernel_n_runs": 0, "kernel_launches": None, "kernel_queued_ahead": None,
}  # fmt: skip


def _frame(rows: list[dict], columns: list[str]) -> pd.DataFrame:
    extra = sorted({k for r in rows for k in r} - set(columns), key=lambda c: (c.startswith("param_"), c))
    return pd.DataFrame(rows, columns=[*columns, *extra])


def _timing_columns(
    stage: list[tuple[int, float]], host: list[float], kernel: runs.KernelTimes | None,
    base: list[tuple[int, float]] | None, bytes_req: float, copy_gbps: float,
) -> dict:
    """A correct variant's measured columns (an incorrect or skipped one keeps :data:`NOT_TIMED`)."""
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
        ratios = round_ratios(base, stage)
        cols["speedup_vs_torch"] = float(np.median(ratios)) if ratios else math.nan
    return cols


def _variant_rows(
    common: dict, specs: list[tuple[str, dict]], prepared: list[Prepared | None], checks: list[Check],
    measured: runs.StageRuns, kernels: dict[int, runs.KernelTimes],
) -> list[dict]:
    """One row per variant, skipped and incorrect ones included (they say why), all on ``common``'s columns."""
    base_k = next((k for k in measured.stage if specs[k][0] == BASELINE), None)  # keys: the timed variants
    bytes_req, copy_gbps = common["bytes_requested"], common["copy_gbps"]
    rows = []
    for k, ((name, requested), p) in enumerate(zip(specs, prepared, strict=True)):
        err, ok, why = checks[k]
        params = p.params if p is not None else requested
        row = {
            **common, "variant": name, "params": _params_json(params),
            "kernel_regex": get_variant(name).kernels if p is not None else None, "correct": bool(ok),
            "max_rel_err": float(err), "error": why, **NOT_TIMED,
        }  # fmt: skip
        if ok:
            row.update(_timing_columns(
                measured.stage[k], measured.host[k], kernels.get(k),
                measured.stage[base_k] if base_k is not None else None, bytes_req, copy_gbps,
            ))  # fmt: skip
        row.update(_flat_params(params))
        rows.append(row)
    return rows


def _run_rows(
    measured: list[dict], specs: list[tuple[str, dict]], live: dict[int, Prepared], common: dict
) -> list[dict]:
    """The per-run table: every timed stage run, labelled like its variant's row (``_k`` is taken out)."""
    label = {c: common[c] for c in ("run_id", "repeat", "dataset", "preset", "device", "timing_valid", "cold_l2",
                                    "timing_mode")}  # fmt: skip
    out = []
    for rr in measured:
        k = rr.pop("_k")
        out.append({**label, "variant": specs[k][0], "params": _params_json(live[k].params), **rr})
    return out
