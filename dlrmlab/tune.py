"""Autotuning: small searches measured with the benchmark harness, best configurations cached on disk.

* :func:`tune_fast` — the fused kernel's (rows in flight, bags per block, ids staged per chunk, register
  cap) per (GPU, width, dtype, pooling, mode); the winner is written to the cache, and
  :func:`dlrmlab.kernels.fused.choose` uses it whenever the caller does not set those knobs.
* :func:`tune_register_cap` — the paper's OptMT: a sweep over ``max_registers`` of a paper-family kernel
  with registers, theoretical occupancy and time per cap; the best cap is cached per (GPU, workload).

Every candidate is checked against the NumPy reference before it is timed (the harness does that), and
candidates run interleaved so they see the same clocks and tenants.
"""

from __future__ import annotations

import itertools
import json
import math
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from dlrmlab import backend
from dlrmlab.errors import DlrmlabError

FAST_SPACE = {"unroll": [4, 8, 12], "bags_per_block": [2, 4, 8], "chunk": [64, 160], "max_registers": [None, 64]}
FAST_SPACE_QUICK = {"unroll": [4, 8], "bags_per_block": [4], "chunk": [64, 160], "max_registers": [None]}
REGISTER_CAPS = [None, 24, 32, 40, 48, 56, 64]


def cache_path() -> Path:
    """``$DLRMLAB_CACHE_DIR/tune.json`` (default ``~/.cache/dlrmlab/tune.json``)."""
    root = os.environ.get("DLRMLAB_CACHE_DIR") or Path.home() / ".cache" / "dlrmlab"
    return Path(root) / "tune.json"


def _gpu_name() -> str:
    if backend.SIMULATOR:
        return "simulator"
    from dlrmlab.cudart import device_properties

    return device_properties()["name"]


def fast_key(dim: int, dtype: str, pooling_mean: float, mode: str, gpu: str | None = None) -> str:
    """Cache key: pooling is bucketed to a power of two (nearby pooling factors share a tuning)."""
    bucket = 2 ** round(math.log2(max(pooling_mean, 1.0)))
    return f"fast|{gpu or _gpu_name()}|dim={dim}|{dtype}|pool~{bucket}|{mode}"


def load_cache() -> dict:
    p = cache_path()
    if not p.exists():
        return {}
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError):
        return {}  # a broken cache only costs a re-tune
    return data if isinstance(data, dict) else {}


def _store(key: str, entry: dict) -> None:
    p = cache_path()
    p.parent.mkdir(parents=True, exist_ok=True)
    data = load_cache()
    data[key] = entry
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    tmp.replace(p)


def cached_fast_params(dim: int, dtype: str, pooling_mean: float, mode: str) -> dict:
    """Tuned fused-kernel knobs for this shape on this GPU, or {} if never tuned."""
    if backend.SIMULATOR:
        return {}
    entry = load_cache().get(fast_key(dim, dtype, pooling_mean, mode))
    return dict(entry["params"]) if entry else {}


def _grid(space: dict) -> list[dict]:
    keys = list(space)
    return [dict(zip(keys, vals, strict=True)) for vals in itertools.product(*(space[k] for k in keys))]


def tune_fast(
    stage: Any = "paper", dataset: str = "random", quick: bool = False, space: dict | None = None,
    repeats: int | None = None, variant: str = "fast_graph", progress: bool = False,
) -> pd.DataFrame:
    """Time every configuration of ``space`` on one workload; cache and return the ranking (best first)."""
    from dlrmlab.bench.case import BenchCase
    from dlrmlab.bench.harness import compare
    from dlrmlab.kernels.fused import FusedConfig

    case = BenchCase.create(stage, dataset, 0, 4)
    space = space or (FAST_SPACE_QUICK if quick else FAST_SPACE)
    cands = []
    for p in _grid(space):
        try:
            FusedConfig(dim=case.dim, dtype=case.dtype, mode=case.mode, **p)
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
        _store(
            fast_key(case.dim, case.dtype, case.stage.pooling.mean, case.mode),
            {"params": best, "median_ms": float(rows.iloc[0]["median_ms"]), "dataset": dataset,
             "measured": datetime.now(UTC).isoformat(timespec="seconds"), "candidates": len(cands)},
        )  # fmt: skip
    return rows.reset_index(drop=True)


def tune_register_cap(
    stage: Any = "paper", dataset: str = "random", variant: str = "optmt", caps: list | None = None,
    repeats: int | None = None, progress: bool = False,
) -> pd.DataFrame:
    """OptMT sweep: time, registers and theoretical occupancy per register cap (best first)."""
    from dlrmlab import api, occupancy
    from dlrmlab.bench.case import BenchCase
    from dlrmlab.bench.harness import compare
    from dlrmlab.kernels import paper

    # The cap is the only difference: sweep the uncapped base kernel's configuration (None = no cap).
    base = {"optmt": "baseline", "optmt_rpf": "rpf"}.get(variant, variant)
    caps = list(caps or REGISTER_CAPS)
    for c in caps:
        occupancy.check_register_cap(c)
    case = BenchCase.create(stage, dataset, 0, 4)
    if backend.SIMULATOR:
        repeats = 1
    res = compare(case, [(base, {"max_registers": c}) for c in caps], repeats=repeats, progress=progress)
    rows = res.rows.copy()
    rows["max_registers"] = pd.Series(caps, dtype=object, index=rows.index)
    regs, theo, limiter = [], [], []
    for c in caps:
        cfg, _ = api.paper_config(base, dtype=case.dtype, mode=case.mode, weighted=case.weighted, max_registers=c)
        r = occupancy.kernel_resources(paper.build(cfg))
        regs.append(r["registers"])
        if r["registers"]:
            occ = occupancy.theoretical(r["registers"], cfg.block[0] * cfg.block[1], r["shared_bytes"] or 0)
            theo.append(occ.theoretical)
            limiter.append(occ.limiter)
        else:
            theo.append(None)
            limiter.append(None)
    rows["registers"], rows["theoretical_occupancy"], rows["occupancy_limiter"] = regs, theo, limiter
    rows = rows.sort_values("median_ms").reset_index(drop=True)
    if bool(rows.iloc[0].get("timing_valid", False)):
        key = f"optmt|{_gpu_name()}|{variant}|{case.describe().get('dataset', dataset)}|dim={case.dim}"
        best_cap = rows.iloc[0]["max_registers"]
        _store(key, {
            "max_registers": None if pd.isna(best_cap) else int(best_cap),
            "median_ms": float(rows.iloc[0]["median_ms"]),
            "measured": datetime.now(UTC).isoformat(timespec="seconds"),
        })  # fmt: skip
    return rows
