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


class _Figure(Figure):
    """A Figure that shows itself in Jupyter without pyplot (IPython looks for ``_repr_png_``)."""

    def _repr_png_(self) -> bytes:
        from io import BytesIO

        buf = BytesIO()
        self.savefig(buf, format="png", dpi=100, bbox_inches="tight")
        return buf.getvalue()


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


def _colors(n: int) -> list:
    """Distinct colours for ``n`` series: the default cycle up to 10, tab20 beyond (no repeats to 20)."""
    if n <= 10:
        return [f"C{i}" for i in range(n)]
    from matplotlib import colormaps

    cmap = colormaps["tab20"]
    return [cmap(i % 20) for i in range(n)]


def _legend_outside(ax) -> None:
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)


def _grouped_bars(ax, table: pd.DataFrame, err_lo=None, err_hi=None) -> None:
    """Bars of ``table`` (index: x groups, columns: series), one BarContainer per series."""
    n = max(len(table.columns), 1)
    x = np.arange(len(table.index))
    width = 0.8 / n
    for j, (col, color) in enumerate(zip(table.columns, _colors(n), strict=False)):
        yerr = None
        if err_lo is not None and err_hi is not None:
            yerr = np.vstack([err_lo[col].to_numpy(), err_hi[col].to_numpy()])
        ax.bar(x + (j - (n - 1) / 2) * width, table[col].to_numpy(dtype=float), width, label=str(col), yerr=yerr,
               color=color)  # fmt: skip
    ax.set_xticks(x)
    ax.set_xticklabels([str(i) for i in table.index], rotation=15 if len(table.index) > 4 else 0, ha="right"
                       if len(table.index) > 4 else "center")  # fmt: skip
    _legend_outside(ax)


def _bar_figsize(table: pd.DataFrame) -> tuple[float, float]:
    return (min(4.0 + 0.18 * table.size + 0.6 * len(table.index), 22.0), 4.8)


def plot_stalls(df: pd.DataFrame, by: str = "variant") -> Figure:
    """Stacked bars per variant: the share of each warp-stall reason (``stall_<reason>_share`` columns).

    Rows of the same variant (several datasets, kernels) are averaged.
    """
    share_cols = [c for c in df.columns if str(c).startswith(STALL_PREFIX) and str(c).endswith(STALL_SUFFIX)]
    _need(df, [by], "plot_stalls")
    if not share_cols:
        raise DlrmlabError("plot_stalls needs stall_<reason>_share columns (from dlrmlab.bench.ncu)")
    shares = df.groupby(by, sort=False)[share_cols].mean().fillna(0.0)
    fig = _Figure(figsize=(max(4.0, 1.2 * len(shares) + 3), 4.5))
    ax = fig.add_subplot()
    x = np.arange(len(shares))
    bottom = np.zeros(len(shares))
    for c, color in zip(share_cols, _colors(len(share_cols)), strict=True):
        reason = str(c)[len(STALL_PREFIX) : -len(STALL_SUFFIX)]
        vals = shares[c].to_numpy(dtype=float)
        ax.bar(x, vals, 0.6, bottom=bottom, label=reason, color=color)
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
    fig = _Figure(figsize=(6, 4.5))
    ax = fig.add_subplot()
    groups = list(df.groupby("variant", sort=False))
    for (variant, g), color in zip(groups, _colors(len(groups)), strict=True):
        g = g.sort_values("registers")
        ax.plot(g["registers"], g["theoretical_occupancy"], "x--", color=color, label=f"{variant} theoretical")
        ax.plot(g["registers"], g["achieved_occupancy"], "o-", color=color, label=f"{variant} achieved")
    hi = float(np.nanmax(df[["theoretical_occupancy", "achieved_occupancy"]].to_numpy(dtype=float)))
    ax.set_ylabel("occupancy (%)" if hi > 1.0 else "occupancy (fraction of max warps)")
    ax.set_ylim(0, 105 if hi > 1.0 else 1.05)
    ax.set_xlabel("registers per thread")
    ax.set_title("Occupancy vs registers")
    _legend_outside(ax)
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
    fig = _Figure(figsize=_bar_figsize(med))
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
    fig = _Figure(figsize=_bar_figsize(med))
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
    n_var = df_runs["variant"].nunique()
    fig = _Figure(figsize=(min(max(3.5, 0.4 * n_var + 1.5) * len(datasets), 24.0), 4.8))
    axes = fig.subplots(1, len(datasets), squeeze=False)[0]
    for ax, ds in zip(axes, datasets, strict=True):
        d = df_runs[df_runs["dataset"] == ds]
        names = list(dict.fromkeys(d["variant"]))
        data = [d.loc[d["variant"] == v, value].dropna().to_numpy(dtype=float) for v in names]
        ax.boxplot(data, showfliers=True)  # labels set below: the keyword changed name in matplotlib 3.9
        ax.set_xticks(np.arange(1, len(names) + 1))
        ax.set_xticklabels(names, rotation=60 if len(names) > 3 else 0, ha="right" if len(names) > 3 else "center")
        ax.set_xlabel("variant")
        ax.set_ylabel(f"{value} per run")
        _title(ax, str(ds), d)
    fig.tight_layout()
    return fig


def plot_coverage(streams: dict, ks: Sequence[int] = (1000, 5000, 60000)) -> Figure:
    """Top-K coverage curves (fraction of accesses taken by the hottest K rows) of named id streams."""
    from dlrmlab.hotness import coverage_curve

    if not streams:
        raise DlrmlabError("plot_coverage: no id streams given")
    fig = _Figure(figsize=(6.5, 4.5))
    ax = fig.add_subplot()
    for (name, ids), color in zip(streams.items(), _colors(len(streams)), strict=True):
        curve = coverage_curve(np.asarray(ids))
        ax.plot(np.arange(1, curve.size + 1), curve, color=color, label=str(name))
    for k in ks:
        ax.axvline(k, color="0.6", lw=0.8, ls=":")
    ax.set_xscale("log")
    ax.set_xlabel("hottest K rows")
    ax.set_ylabel("fraction of accesses")
    ax.set_ylim(0, 1.02)
    ax.set_title("Hotness: top-K coverage")
    _legend_outside(ax)
    fig.tight_layout()
    return fig


def plot_occupancy_curve(table: pd.DataFrame) -> Figure:
    """Theoretical occupancy against registers per thread (from :func:`dlrmlab.occupancy.occupancy_table`),
    points coloured by the limiting resource."""
    _need(table, ["registers", "theoretical_occupancy", "limiter"], "plot_occupancy_curve")
    fig = _Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    t = table.sort_values("registers")
    ax.step(t["registers"], t["theoretical_occupancy"], where="post", color="0.5")
    limiters = list(dict.fromkeys(t["limiter"]))
    for lim, color in zip(limiters, _colors(len(limiters)), strict=True):
        g = t[t["limiter"] == lim]
        ax.plot(g["registers"], g["theoretical_occupancy"], "o", color=color, label=f"limited by {lim}")
    ax.set_xlabel("registers per thread")
    ax.set_ylabel("theoretical occupancy")
    ax.set_ylim(0, 1.05)
    ax.set_title(f"Occupancy, {int(t['threads_per_block'].iloc[0])}-thread blocks" if "threads_per_block" in t
                 else "Occupancy")  # fmt: skip
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig
