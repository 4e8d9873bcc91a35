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
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from dlrmlab import backend, device, occupancy, tuned, variants
from dlrmlab.bench.case import BenchCase
from dlrmlab.bench.comparison import compare
from dlrmlab.config import Combine, json_object
from dlrmlab.errors import DlrmlabError
from dlrmlab.fused import configure, configure_here
from dlrmlab.kernels.fused import KNOBS
from dlrmlab.kernels.paper import PaperConfig, build
from dlrmlab.variants import VARIANTS
from dlrmlab.workload import preset

FAST_SPACE = {"unroll": [8, 10, 12, 15], "bags_per_block": [2, 4, 8], "split": [1, 2], "chunk": [160],
              "max_registers": [64, 80]}
FAST_SPACE_QUICK = {"unroll": [8], "bags_per_block": [2, 4], "split": [1, 4], "chunk": [64], "max_registers": [None]}
REGISTER_CAPS = [None, 24, 32, 40, 48, 56, 64]
#: The knobs a tuned entry holds (what :func:`dlrmlab.rules.derive_knobs` chooses).
ENTRY_KNOBS = ("unroll", "bags_per_block", "split", "chunk", "max_registers")


@dataclass
class TuneResult:
    """A fast-kernel search: ``ranking`` has one row per candidate, best first (``median_ms``: over several
    datasets, the geometric mean, with each one's time in ``ms[<dataset>]``); ``rows`` are the harness's
    result rows, one per candidate and dataset (the knobs in ``params``), for ``append_results``."""

    ranking: pd.DataFrame
    rows: pd.DataFrame


def parse_space(text: str | None) -> dict | None:
    """A search space from JSON (``{"knob": [values, ...]}``), checked against the fast kernel's knobs."""
    if text is None:
        return None
    space = json_object(text, "--space")
    if not space or not all(isinstance(v, list) and v for v in space.values()):
        raise DlrmlabError('--space: a JSON object of knob -> non-empty list, e.g. {"unroll": [8, 12]}')
    unknown = set(space) - KNOBS
    if unknown:
        raise DlrmlabError(f"--space: unknown fast-kernel knobs: {', '.join(sorted(unknown))}; valid: "
                           f"{', '.join(sorted(KNOBS))}")
    return space


def _grid(space: dict) -> list[dict]:
    keys = list(space)
    return [dict(zip(keys, vals, strict=True)) for vals in itertools.product(*(space[k] for k in keys))]


def tune_fast(
    stage: Any = "paper", dataset: str | Sequence[str] = "random", quick: bool = False, space: dict | None = None,
    repeats: int | None = None, variant: str = "fast_graph", progress: bool = False,
) -> TuneResult:
    """Time every configuration of ``space`` on one or more workloads; return the ranking (best first) and the
    timing rows, and store the winner in the user's tuning cache (GPU timings only).

    With several datasets (a list, or comma-separated) a configuration is ranked by the geometric mean of
    its times, so the winner is the one that does best across them (e.g. several reuse levels), and only
    configurations correct on all of them count. A ``+window`` variant tunes the split-hot layout's entry.
    The knobs ``space`` leaves out keep the values this install serves the shape with now
    (:func:`served_knobs`), and that configuration is always a candidate.
    """
    datasets = [d.strip() for d in dataset.split(",")] if isinstance(dataset, str) else list(dataset)
    if variant not in VARIANTS or "fast" not in VARIANTS[variant].families:
        raise DlrmlabError(f"tune fast needs a fast-path variant, got {variant!r}")
    families = VARIANTS[variant].families
    # a +window variant tunes the split-hot entry; one that chooses its layout is tuned on plain rows
    split_hot = "window" in families and "layout" not in families
    fixed = {"layout": "plain"} if "layout" in families else {}
    space = space or (FAST_SPACE_QUICK if quick else FAST_SPACE)
    stage = preset(stage) if isinstance(stage, str) else stage
    base = served_knobs(stage, split_hot)
    cands = []
    for p in ({**base, **q} for q in _grid(space)):
        try:
            configure(stage.sparse_feature_size, stage.dtype, Combine("sum"), **p)  # the case's mode: below
        except DlrmlabError:
            continue
        if p not in cands:
            cands.append(p)
    if not cands:
        raise DlrmlabError("no valid configuration in the search space")
    cands = [base, *(p for p in cands if p != base)]
    if backend.SIMULATOR:
        repeats = 1
        if variant in ("fast_graph", "fast_graph+window", "fast+window"):
            # graphs and windows are GPU-only; `fast` runs the same kernel on the same layout (no L2 to steer)
            variant, fixed = "fast", {"layout": "split-hot" if split_hot else "plain"}
    why = variants.why_not_here(variant)
    if why:
        raise DlrmlabError(why)
    per_dataset, shape = [], None
    for name in datasets:
        case = BenchCase.create(stage, name, 0, 4)
        shape = shape or (case.dim, case.dtype, case.stage.pooling.mean)  # one stage: every dataset's shape
        ok = [p for p in cands if _fits(configure, case, p)]
        rows = compare(case, [(variant, {**p, **fixed}) for p in ok], repeats=repeats, progress=progress).rows.copy()
        rows["candidate"] = [json.dumps(p, sort_keys=True) for p in ok]
        per_dataset.append(rows)
        del case  # one workload's tables on the device at a time
    ranking = _rank(per_dataset, datasets)
    if ranking.empty:
        raise DlrmlabError("no configuration produced correct results")
    best = json.loads(ranking.iloc[0]["candidate"])
    if ranking.iloc[0].get("timing_valid", False):
        tuned.store_fast(
            device.family(), *shape,
            {"params": best, "median_ms": float(ranking.iloc[0]["median_ms"]), "dataset": ",".join(datasets),
             "variant": variant, "measured": datetime.now(UTC).isoformat(timespec="seconds"),
             "candidates": len(cands)},
            split_hot=split_hot,
        )  # fmt: skip
    return TuneResult(ranking, pd.concat(per_dataset, ignore_index=True).drop(columns=["candidate"]))


def served_knobs(stage: Any, split_hot: bool) -> dict:
    """The knobs this install serves the stage with now (the user's cache, the shipped entry or the rule):
    a search varies the knobs it names around them, and they are its first candidate, so a tuned winner is
    never one the search measured slower than what it replaces."""
    cfg, _ = configure_here(stage.sparse_feature_size, stage.dtype, stage.pooling.mean, split_hot=split_hot)
    return {k: cfg.params()[k] for k in ENTRY_KNOBS}


def _fits(configure: Any, case: Any, knobs: dict) -> bool:
    try:
        configure(case.dim, case.dtype, Combine(case.mode), **knobs)
        return True
    except DlrmlabError:
        return False  # e.g. too many threads for this width


def _rank(per_dataset: list[pd.DataFrame], datasets: list[str]) -> pd.DataFrame:
    """One row per candidate correct on every dataset: ``median_ms`` is the geometric mean over datasets,
    ``ms[<dataset>]`` each one's time; best first."""
    if len(per_dataset) == 1:
        rows = per_dataset[0]
        return rows[rows["correct"].astype(bool)].sort_values("median_ms").reset_index(drop=True)
    first = per_dataset[0].set_index("candidate")
    table = first.drop(columns=["median_ms", "p10_ms", "p90_ms", "dataset"], errors="ignore").copy()
    correct = pd.Series(True, index=table.index)
    for name, rows in zip(datasets, per_dataset, strict=True):
        r = rows.set_index("candidate").reindex(table.index)
        table[f"ms[{name}]"] = r["median_ms"]
        correct &= r["correct"].fillna(False).astype(bool)
    ms = table[[f"ms[{d}]" for d in datasets]]
    table["median_ms"] = np.exp(np.log(ms.astype(float)).mean(axis=1))
    table["dataset"] = ",".join(datasets)
    table = table[correct.to_numpy()].reset_index()
    return table.sort_values("median_ms").reset_index(drop=True)


def tune_register_cap(
    stage: Any = "paper", dataset: str = "random", variant: str = "optmt", caps: list | None = None,
    repeats: int | None = None, progress: bool = False,
) -> pd.DataFrame:
    """OptMT sweep: time, registers and theoretical occupancy per register cap (best first)."""
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
