"""Figures from result tables. Each function returns a ``matplotlib.figure.Figure``.

Built on ``Figure`` directly, never ``pyplot``: no global state, no GUI backend, safe headless (CI, the
device machine) and in notebooks alike (a returned Figure displays inline; ``fig.savefig`` writes it).
Rows measured in the simulator are labelled as such in the title: their times mean nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from dlrmlab.errors import DlrmlabError

STALL_PREFIX = "stall_"
STALL_SUFFIX = "_share"


def _need(df: pd.DataFrame, cols: Sequence[str], what: str) -> None:
    if not isinstance(df, pd.DataFrame):
        raise DlrmlabError(f"{what} needs a DataFrame, got {type(df).__name__}")
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise DlrmlabError(f"{what} needs columns {missing}; the DataFrame has {list(df.columns)}")
    if df.empty:
        raise DlrmlabError(f"{what}: no rows to plot")


def _title(ax, text: str, df: pd.DataFrame) -> None:
    if "timing_valid" in df.columns and not df["timing_valid"].astype(bool).any():
        text += " (simulator: timings not meaningful)"
    ax.set_title(text)


def _grouped_bars(ax, table: pd.DataFrame, err_lo=None, err_hi=None) -> None:
    """Bars of ``table`` (index: x groups, columns: series), one BarContainer per series."""
    n = max(len(table.columns), 1)
    x = np.arange(len(table.index))
    width = 0.8 / n
    for j, col in enumerate(table.columns):
        yerr = None
        if err_lo is not None and err_hi is not None:
            yerr = np.vstack([err_lo[col].to_numpy(), err_hi[col].to_numpy()])
        ax.bar(x + (j - (n - 1) / 2) * width, table[col].to_numpy(dtype=float), width, label=str(col), yerr=yerr)
    ax.set_xticks(x)
    ax.set_xticklabels([str(i) for i in table.index])
    ax.legend(fontsize="small")


def plot_stalls(df: pd.DataFrame, by: str = "variant") -> Figure:
    """Stacked bars per variant: the share of each warp-stall reason (``stall_<reason>_share`` columns).

    Rows of the same variant (several datasets, kernels) are averaged.
    """
    share_cols = [c for c in df.columns if str(c).startswith(STALL_PREFIX) and str(c).endswith(STALL_SUFFIX)]
    _need(df, [by], "plot_stalls")
    if not share_cols:
        raise DlrmlabError("plot_stalls needs stall_<reason>_share columns (from dlrmlab.bench.ncu)")
    shares = df.groupby(by, sort=False)[share_cols].mean().fillna(0.0)
    fig = Figure(figsize=(max(4.0, 1.2 * len(shares) + 3), 4.5))
    ax = fig.add_subplot()
    x = np.arange(len(shares))
    bottom = np.zeros(len(shares))
    for c in share_cols:
        reason = str(c)[len(STALL_PREFIX) : -len(STALL_SUFFIX)]
        vals = shares[c].to_numpy(dtype=float)
        ax.bar(x, vals, 0.6, bottom=bottom, label=reason)
        bottom += vals
    ax.set_xticks(x)
    ax.set_xticklabels([str(i) for i in shares.index], rotation=20, ha="right")
    ax.set_ylabel("share of stalled warp samples")
    ax.set_title("Warp stall reasons")
    ax.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    return fig


def plot_occupancy_vs_registers(df: pd.DataFrame) -> Figure:
    """Theoretical (dashed) and achieved (solid) occupancy against registers per thread, per variant."""
    _need(df, ["variant", "registers", "theoretical_occupancy", "achieved_occupancy"], "plot_occupancy_vs_registers")
    fig = Figure(figsize=(6, 4.5))
    ax = fig.add_subplot()
    for i, (variant, g) in enumerate(df.groupby("variant", sort=False)):
        g = g.sort_values("registers")
        color = f"C{i % 10}"
        ax.plot(g["registers"], g["theoretical_occupancy"], "--", color=color, label=f"{variant} theoretical")
        ax.plot(g["registers"], g["achieved_occupancy"], "o-", color=color, label=f"{variant} achieved")
    hi = float(np.nanmax(df[["theoretical_occupancy", "achieved_occupancy"]].to_numpy(dtype=float)))
    ax.set_ylabel("occupancy (%)" if hi > 1.0 else "occupancy (fraction of max warps)")
    ax.set_xlabel("registers per thread")
    ax.set_title("Occupancy vs registers")
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def _by_dataset_variant(df: pd.DataFrame, value: str, exclude: Sequence[str] = ()) -> tuple:
    d = df[~df["variant"].isin(exclude)].dropna(subset=[value])
    if d.empty:
        raise DlrmlabError(f"no rows with a {value} to plot")
    g = d.groupby(["dataset", "variant"], sort=False)[value]
    med = g.median().unstack("variant")
    lo = (med - g.min().unstack("variant")).clip(lower=0)
    hi = (g.max().unstack("variant") - med).clip(lower=0)
    multi = bool((g.count() > 1).any())
    return med, (lo if multi else None), (hi if multi else None)


def plot_speedup(df: pd.DataFrame, baseline: str = "torch") -> Figure:
    """``speedup_vs_torch`` grouped by dataset, one bar per variant (median over rows; bars: min-max).

    The baseline itself is the line at 1.
    """
    _need(df, ["dataset", "variant", "speedup_vs_torch"], "plot_speedup")
    med, lo, hi = _by_dataset_variant(df, "speedup_vs_torch", exclude=[baseline])
    fig = Figure(figsize=(max(5.0, 1.5 * len(med) + 3), 4.5))
    ax = fig.add_subplot()
    _grouped_bars(ax, med, lo, hi)
    ax.axhline(1.0, color="k", lw=1, ls=":", label=f"{baseline} = 1")
    ax.set_ylabel(f"speedup over {baseline} (stage time)")
    ax.set_xlabel("dataset")
    _title(ax, "Speedup over torch.nn.functional.embedding_bag", df)
    fig.tight_layout()
    return fig


def plot_bandwidth(df: pd.DataFrame) -> Figure:
    """Effective bandwidth (bytes requested / median stage time) per dataset and variant, with the
    device-to-device copy bandwidth as a horizontal line: how far from the memory roof each one is."""
    _need(df, ["dataset", "variant", "effective_gbps"], "plot_bandwidth")
    med, lo, hi = _by_dataset_variant(df, "effective_gbps")
    fig = Figure(figsize=(max(5.0, 1.5 * len(med) + 3), 4.5))
    ax = fig.add_subplot()
    _grouped_bars(ax, med, lo, hi)
    if "copy_gbps" in df.columns and df["copy_gbps"].notna().any():
        copy = float(df["copy_gbps"].median())
        ax.axhline(copy, color="k", lw=1.2, ls="--")
        ax.annotate(f"D2D copy {copy:,.0f} GB/s", (0, copy), xytext=(2, 2), textcoords="offset points",
                    xycoords=("axes fraction", "data"), fontsize="small")  # fmt: skip
    ax.set_ylabel("effective bandwidth (GB/s)")
    ax.set_xlabel("dataset")
    _title(ax, "Effective bandwidth", df)
    fig.tight_layout()
    return fig


def plot_timing_distribution(df_runs: pd.DataFrame, value: str = "stage_ms") -> Figure:
    """Per-run stage times, one box per variant, one panel per dataset (``BenchResult.runs``)."""
    _need(df_runs, ["variant", "dataset", value], "plot_timing_distribution")
    datasets = list(dict.fromkeys(df_runs["dataset"]))
    fig = Figure(figsize=(max(5.0, 3.5 * len(datasets)), 4.5))
    axes = fig.subplots(1, len(datasets), squeeze=False)[0]
    for ax, ds in zip(axes, datasets, strict=True):
        d = df_runs[df_runs["dataset"] == ds]
        names = list(dict.fromkeys(d["variant"]))
        data = [d.loc[d["variant"] == v, value].dropna().to_numpy(dtype=float) for v in names]
        ax.boxplot(data, showfliers=True)  # labels set below: the keyword changed name in matplotlib 3.9
        ax.set_xticks(np.arange(1, len(names) + 1))
        ax.set_xticklabels(names)
        ax.set_xlabel("variant")
        ax.set_ylabel(f"{value} per run")
        _title(ax, str(ds), d)
    fig.tight_layout()
    return fig
