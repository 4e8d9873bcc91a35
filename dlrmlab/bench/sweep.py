"""A sweep (what ``dlrmlab bench`` runs): variants compared on each dataset, rows appended as they come."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from dlrmlab import validate
from dlrmlab.bench import results
from dlrmlab.bench.case import BenchCase
from dlrmlab.bench.comparison import BenchResult, VariantArg, compare, expected_columns, normalize_variants
from dlrmlab.bench.schedule import DEFAULT_SERVING_BLOCK, resolve_timing_mode
from dlrmlab.bench.schema import BASELINE, RUN_COLUMNS
from dlrmlab.datasets import canonical_name, make_stream
from dlrmlab.errors import DlrmlabError
from dlrmlab.variants import why_not_here
from dlrmlab.workload import EmbeddingStage, preset


def with_baseline(variants: list[tuple[str, dict]], include_torch: bool = True) -> list[tuple[str, dict]]:
    """Put torch first when asked for, usable and not already there (so every row gets a speedup)."""
    if not include_torch or any(n == BASELINE for n, _ in variants):
        return variants
    if why_not_here(BASELINE) is None:
        return [(BASELINE, {}), *variants]
    return variants


def _check_request(
    specs: list[tuple[str, dict]], datasets: list[str], stage: EmbeddingStage, *, seed: int, n_batches: int,
    weighted: bool, repeat_runs: int, out: str | Path | None, name: str,
) -> None:
    """Everything that can be wrong with a sweep, found before anything runs."""
    for n, _ in specs:
        why = why_not_here(n)
        if why:
            raise DlrmlabError(why)
    if not datasets:
        raise DlrmlabError("no datasets to benchmark")
    for ds in datasets:
        make_stream(ds, seed)  # unknown names and unreadable traces fail here
    for ds in datasets:  # a case larger than free memory is refused now, not after the first datasets ran
        validate.check_stage(stage, int(n_batches), weighted=bool(weighted), dataset=ds)
    if int(repeat_runs) < 1:
        raise DlrmlabError(f"repeat_runs must be at least 1, got {repeat_runs}")
    if out is not None:
        results.check_results_dir(out)
        results.check_columns(expected_columns(), name, out)
        results.check_columns(RUN_COLUMNS, f"{name}_runs", out)


def run_bench(
    variants: Sequence[VariantArg] | VariantArg, datasets: Sequence[str] | str, stage: Any = "tiny", *,
    seed: int = 0, n_batches: int = 4, weighted: bool = False, mode: str = "sum", repeats: int | None = None,
    warmup_s: float | None = None, cold_l2: bool = False, timing_mode: str | None = None,
    serving_block: int = DEFAULT_SERVING_BLOCK, include_torch: bool = True, repeat_runs: int = 1,
    out: str | Path | None = None, name: str = "bench", progress: bool = False,
) -> BenchResult:
    """Compare ``variants`` on each dataset, ``repeat_runs`` times; append rows to ``out`` as they come.

    Everything that can be wrong with the request (variant or dataset names, GPU-only variants in the
    simulator, the timing mode, an unwritable or incompatible results file) is reported before anything
    runs. ``timing_mode``, ``serving_block`` and ``cold_l2``: see :func:`~dlrmlab.bench.comparison.compare`.
    """
    seed, n_batches, repeats, warmup_s, serving_block, repeat_runs = validate.bench_numbers(
        seed=seed, n_batches=n_batches, repeats=repeats, warmup_s=warmup_s, serving_block=serving_block,
        repeat_runs=repeat_runs)
    specs = with_baseline(normalize_variants(variants), include_torch)
    timing_mode = resolve_timing_mode(timing_mode, cold_l2, serving_block)
    datasets = [datasets] if isinstance(datasets, str) else list(datasets)
    stage = preset(stage) if isinstance(stage, str) else stage
    _check_request(specs, datasets, stage, seed=seed, n_batches=n_batches, weighted=weighted,
                   repeat_runs=repeat_runs, out=out, name=name)  # fmt: skip

    run_id = uuid.uuid4().hex
    all_rows, all_runs = [], []
    steps: Any = [(ds, rep) for ds in datasets for rep in range(int(repeat_runs))]
    if progress:
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
