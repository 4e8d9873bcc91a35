"""Autotuning: small searches measured with the benchmark harness.

* :func:`tune_fast` — the fast kernel's knobs (rows in flight, bags per block, ids staged per chunk,
  register cap) per (GPU family, width, dtype, pooling); the winner goes to the user's tuning cache
  (:mod:`dlrmlab.tuned`), which overrides the table shipped with dlrmlab.
* :func:`tune_register_cap` — the paper's OptMT: a sweep over ``max_registers`` of a paper-family kernel
  with registers, theoretical occupancy and time per cap (pass the best as ``max_registers``).

Every candidate is checked against the NumPy reference before it is timed (the harness does that), and
candidates run interleaved so they see the same clocks and tenants.
"""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from dlrmlab import backend, device, tuned
from dlrmlab.config import Combine
from dlrmlab.errors import DlrmlabError

FAST_SPACE = {"unroll": [6, 8, 12], "bags_per_block": [2, 4], "split": [2, 4], "chunk": [96],
              "ids": ["shared", "registers"], "max_registers": [64, 80]}
FAST_SPACE_QUICK = {"unroll": [8], "bags_per_block": [2, 4], "split": [1, 4], "chunk": [64], "max_registers": [None]}
REGISTER_CAPS = [None, 24, 32, 40, 48, 56, 64]


def _grid(space: dict) -> list[dict]:
    keys = list(space)
    return [dict(zip(keys, vals, strict=True)) for vals in itertools.product(*(space[k] for k in keys))]


def tune_fast(
    stage: Any = "paper", dataset: str = "random", quick: bool = False, space: dict | None = None,
    repeats: int | None = None, variant: str = "fast_graph", progress: bool = False,
) -> pd.DataFrame:
    """Time every configuration of ``space`` on one workload; return the ranking (best first) and store the
    winner in the user's tuning cache (GPU timings only)."""
    from dlrmlab.bench.case import BenchCase
    from dlrmlab.bench.harness import compare
    from dlrmlab.fast import configure

    case = BenchCase.create(stage, dataset, 0, 4)
    space = space or (FAST_SPACE_QUICK if quick else FAST_SPACE)
    cands = []
    for p in _grid(space):
        try:
            configure(case.dim, case.dtype, Combine(case.mode), **p)
        except DlrmlabError:
            continue  # e.g. too many threads for this width
        cands.append(p)
    if not cands:
        raise DlrmlabError("no valid configuration in the search space")
    if backend.SIMULATOR:
        variant, repeats = "fast", 1
    res = compare(case, [(variant, p) for p in cands], repeats=repeats, progress=progress)
    rows = res.rows.copy()
    rows["candidate"] = [json.dumps(p, sort_keys=True) for p in cands]
    rows = rows[rows["correct"].astype(bool)].sort_values("median_ms")
    if rows.empty:
        raise DlrmlabError("no configuration produced correct results")
    best = json.loads(rows.iloc[0]["candidate"])
    if rows.iloc[0].get("timing_valid", False):
        tuned.store_fast(
            device.family(), case.dim, case.dtype, case.stage.pooling.mean,
            {"params": best, "median_ms": float(rows.iloc[0]["median_ms"]), "dataset": dataset,
             "measured": datetime.now(UTC).isoformat(timespec="seconds"), "candidates": len(cands)},
        )  # fmt: skip
    return rows.reset_index(drop=True)


def tune_register_cap(
    stage: Any = "paper", dataset: str = "random", variant: str = "optmt", caps: list | None = None,
    repeats: int | None = None, progress: bool = False,
) -> pd.DataFrame:
    """OptMT sweep: time, registers and theoretical occupancy per register cap (best first)."""
    from dlrmlab import occupancy, variants
    from dlrmlab.bench.case import BenchCase
    from dlrmlab.bench.harness import compare
    from dlrmlab.kernels.paper import PaperConfig, build

    caps = list(caps or REGISTER_CAPS)
    knobs = [variants.knobs_for(variant, {"max_registers": c})["paper"] for c in caps]  # the cap is the only change
    for k in knobs:
        PaperConfig.from_knobs(**k)  # a bad cap or variant fails here, before the case is built
    case = BenchCase.create(stage, dataset, 0, 4)
    if backend.SIMULATOR:
        repeats = 1
    res = compare(case, [(variant, {"max_registers": c}) for c in caps], repeats=repeats, progress=progress)
    rows = res.rows.copy()
    rows["max_registers"] = pd.Series(caps, dtype=object, index=rows.index)
    regs, theo, limiter = [], [], []
    for k in knobs:
        cfg = PaperConfig.from_knobs(case.dtype, Combine(case.mode, case.weighted), **k)
        r = occupancy.kernel_resources(build(cfg))
        regs.append(r["registers"])
        if r["registers"]:
            occ = occupancy.theoretical(r["registers"], cfg.block[0] * cfg.block[1], r["shared_bytes"] or 0)
            theo.append(occ.theoretical)
            limiter.append(occ.limiter)
        else:
            theo.append(None)
            limiter.append(None)
    rows["registers"], rows["theoretical_occupancy"], rows["occupancy_limiter"] = regs, theo, limiter
    return rows.sort_values("median_ms").reset_index(drop=True)
