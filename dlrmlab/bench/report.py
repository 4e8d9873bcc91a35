"""Report tables: timing rows joined with Nsight Compute profiles, one row per (variant, dataset)."""

from __future__ import annotations

import pandas as pd

from dlrmlab.bench.schema import BASELINE
from dlrmlab.errors import DlrmlabError


def top_stalls(profile_row: pd.Series, n: int = 3) -> str:
    """``"long_scoreboard 64%, wait 9%, ..."`` from one parsed ncu row (the issuing 'selected' left out)."""
    shares = {
        c[len("stall_") : -len("_share")]: float(v)
        for c, v in profile_row.items()
        if c.startswith("stall_") and c.endswith("_share") and pd.notna(v) and c != "stall_selected_share"
    }
    best = sorted(shares.items(), key=lambda kv: -kv[1])[:n]
    return ", ".join(f"{k} {v:.0%}" for k, v in best)


def variant_table(rows: pd.DataFrame, profiles: pd.DataFrame | None = None) -> pd.DataFrame:
    """Median stage time, ratio vs torch and host launch share per (variant, dataset) from harness rows,
    with registers, occupancy, top stalls and L2 hit rate from ``profiles`` (``dlrmlab profile`` rows)
    where a profile of that variant and dataset exists."""
    need = {"variant", "dataset", "median_ms", "host_ms", "speedup_vs_torch"}
    if not need <= set(rows.columns):
        raise DlrmlabError(f"rows need columns {sorted(need)}")
    timed = rows[rows["timing_valid"].astype(bool)] if "timing_valid" in rows else rows
    if "cold_l2" in timed:
        timed = timed[~timed["cold_l2"].astype(bool)]
    g = timed.groupby(["variant", "dataset"], sort=False)
    out = g[["median_ms", "speedup_vs_torch"]].median()
    out["host_share"] = (g["host_ms"].median() / g["median_ms"].median()).clip(upper=1.0)
    out = out.reset_index()
    if "kernel_ms" in timed:
        # GPU time of the launches alone (queued ahead: no launch gaps), as the paper's artifact timed it.
        out["kernel_ms"] = g["kernel_ms"].median().to_numpy()
        torch_k = out[out["variant"] == BASELINE].set_index("dataset")["kernel_ms"]
        out["kernel_speedup_vs_torch"] = out["dataset"].map(torch_k) / out["kernel_ms"]
    if profiles is not None and not profiles.empty:
        p = profiles.groupby(["variant", "dataset"], sort=False).last().reset_index()
        p["top_stalls"] = p.apply(top_stalls, axis=1)
        cols = ["variant", "dataset", "registers", "theoretical_occupancy", "achieved_occupancy", "top_stalls",
                "l2_hit_rate"]  # fmt: skip
        out = out.merge(p[[c for c in cols if c in p]], on=["variant", "dataset"], how="left")
    return out
