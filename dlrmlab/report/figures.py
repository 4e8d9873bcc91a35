"""The report's figures: one message each, built from a claim's tidy DataFrame (see :mod:`dlrmlab.report.style`
for the conventions: a colour per technique, the paper's number beside ours, labels without paths, units,
the GPU and date in a corner).

Each function takes the rows to draw, the title (the message, worded by the claim from its numbers) and
the corner stamp, and returns a Figure. With ``measured=False`` (the simulator) the axes say "not measured"
instead of drawing timings that mean nothing; the paper's numbers are still drawn.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from dlrmlab.report import style

#: Neutral colour of measured properties of a dataset (no technique involved).
DATA_COLOR = "#5a6f7f"


def _bars(ax, table: pd.DataFrame, styles: dict[str, dict], fmt: str = "{:.2f}") -> None:
    """Grouped bars: ``table``'s index along x, one bar per column, styled by ``styles[column]``, each
    labelled with its value."""
    n = max(len(table.columns), 1)
    width = min(0.8 / n, 0.3)
    x = np.arange(len(table.index))
    for j, col in enumerate(table.columns):
        vals = table[col].to_numpy(dtype=float)
        bars = ax.bar(x + (j - (n - 1) / 2) * width, np.nan_to_num(vals), width, label=str(col),
                      **styles.get(col, {}))  # fmt: skip
        labels = ["" if not np.isfinite(v) else fmt.format(v) for v in vals]
        ax.bar_label(bars, labels=labels, fontsize=6.5, padding=1.5, rotation=90 if n > 4 else 0)
    labels = [textwrap.fill(str(i), 16) if "\n" not in str(i) else str(i) for i in table.index]
    tilt = len(labels) > 3 and max(map(len, labels)) > 12 and not any("\n" in t for t in labels)
    ax.set_xticks(x)
    ax.set_xticklabels(labels, rotation=12 if tilt else 0, ha="right" if tilt else "center")


def speedup_bars(
    table: pd.DataFrame, styles: dict[str, dict], *, title: str, ylabel: str, stamp: str, xlabel: str = "dataset",
    paper: float | None = None, paper_label: str | None = None, measured: bool = True, unity: str | None = None,
) -> Figure:
    """Speedups (index: x groups, columns: configurations) as grouped bars, with the 1x line and the paper's
    number as a dashed line."""
    fig = style.new_figure(min(11.0, max(8.0, 3.0 + 0.4 * max(table.size, 1) + 0.4 * len(table.index))), 4.4)
    ax = fig.add_subplot()
    if measured and table.notna().to_numpy().any():
        _bars(ax, table, styles, "{:.2f}x")
        top = float(np.nanmax(table.to_numpy(dtype=float)))
    else:  # nothing drawn, so no legend entries: the axes say why
        ax.set_xticks(range(len(table.index)))
        ax.set_xticklabels([str(i) for i in table.index])
        ax.set_xlim(-0.6, max(len(table.index), 1) - 0.4)
        style.not_measured(ax)
        top = 1.0
    style.unity_line(ax, unity or "no change (1x)")
    if paper is not None:
        style.paper_line(ax, paper, paper_label)
        top = max(top, paper)
    ax.set_ylim(0, top * 1.18 + 0.05)
    ax.set_ylabel(ylabel)
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=10)
    style.legend(ax)
    return style.finish(fig, stamp)


def coverage_bars(df: pd.DataFrame, *, title: str, stamp: str) -> Figure:
    """Share of a paper batch's lookups taken by the hottest 60K rows: ours, and the paper's traces beside."""
    fig = style.new_figure(max(6.0, 1.6 * len(df) + 2.5), 4.0)
    ax = fig.add_subplot()
    paper = df["paper_top_60000"].to_numpy(dtype=float) * 100
    table = pd.DataFrame({"measured here": df["top_60000"].to_numpy() * 100}, index=df["label"])
    if np.isfinite(paper).any():  # the paper's figure only where it has one
        table["paper's figure (artifact)"] = paper
    styles = {"measured here": {"color": DATA_COLOR}, "paper's figure (artifact)": style.PAPER_BAR}
    _bars(ax, table, styles, "{:.1f}%")
    if len(table.columns) > 1:
        width = min(0.8 / 2, 0.3)
        for x in np.flatnonzero(~np.isfinite(paper)):
            ax.text(x + width / 2, 2, "no paper\nfigure", ha="center", va="bottom", fontsize=6.5, color="0.4")
    ax.set_ylim(0, 110)
    ax.set_ylabel("lookups served by the hottest 60K rows (%)")
    traces = df["dataset"].astype(str).str.startswith("trace:").any()
    ax.set_xlabel("dataset (one paper batch: 12 x 2048 x 150 ids, 500K rows)"
                  + ("" if traces else "\nthe artifact's traces could not be downloaded here: the synthetic sets "
                                       "fitted to them stand in"))
    ax.set_title(title, fontsize=10)
    style.legend(ax)
    return style.finish(fig, stamp)


def stage_breakdown(df: pd.DataFrame, *, title: str, stamp: str, measured: bool = True) -> Figure:
    """Time of each DLRM stage in an eager PyTorch batch, one horizontal stacked bar per dataset (ms)."""
    stages = list(style.STAGE_COLORS)
    fig = style.new_figure(7.5, 1.4 + 0.55 * max(len(df), 1))
    ax = fig.add_subplot()
    y = np.arange(len(df))
    left = np.zeros(len(df))
    for s in stages if measured else []:  # unmeasured: no bars, so no legend entries
        v = np.nan_to_num(df[f"{s}_ms"].to_numpy(dtype=float))
        ax.barh(y, v, left=left, color=style.STAGE_COLORS[s], label=style.STAGE_LABELS[s], height=0.6,
                edgecolor="white")  # fmt: skip
        left += v
    if measured:
        for yi, (share, total) in enumerate(zip(df["embedding_share"], left, strict=True)):
            ax.text(total, yi, f"  embedding {share:.0%}", va="center", fontsize=8)
        ax.set_xlim(0, float(np.nanmax(left)) * 1.35 if len(left) else 1)
    else:
        ax.set_xlim(0, 1)
        ax.set_xticks([])
        style.not_measured(ax)
    ax.set_yticks(y)
    ax.set_yticklabels(df["label"])
    ax.invert_yaxis()
    ax.set_xlabel("time per batch (ms), stages timed apart (CUDA events)")
    ax.set_title(title, fontsize=10)
    style.legend(ax)
    return style.finish(fig, stamp)


def occupancy_curve(curve: pd.DataFrame, points: pd.DataFrame, *, title: str, stamp: str) -> Figure:
    """The occupancy calculator's theoretical occupancy against registers per thread, with the kernels'
    compiled (filled) and achieved (hollow, from ncu) occupancy marked."""
    fig = style.new_figure(7.0, 4.2)
    ax = fig.add_subplot()
    ax.step(curve["registers"], curve["theoretical_occupancy"] * 100, where="post", color="0.55",
            label="theoretical (calculator)")  # fmt: skip
    for k, (_, p) in enumerate(points.iterrows()):
        c, m = style.color(p["variant"]), "osD^v"[k % 5]
        if pd.notna(p.get("registers")) and pd.notna(p.get("theoretical_occupancy")):
            ax.plot([p["registers"]], [p["theoretical_occupancy"] * 100], m, ms=8, color=c,
                    label=f"{p['kernel']}: theoretical")  # fmt: skip
        if pd.notna(p.get("registers")) and pd.notna(p.get("achieved_occupancy")):
            ax.plot([p["registers"]], [p["achieved_occupancy"] * 100], m, ms=8, mfc="white", mec=c, mew=1.6,
                    label=f"{p['kernel']}: achieved (ncu)")  # fmt: skip
    ax.axvline(42, color=style.color("optmt"), ls=":", lw=1, label="OptMT's cap in the paper (42)")
    ax.set_xlabel("registers per thread (256-thread blocks)")
    ax.set_ylabel("occupancy (% of the SM's warps)")
    ax.set_ylim(0, 108)
    ax.set_title(title, fontsize=10)
    style.legend(ax)
    return style.finish(fig, stamp)


def stall_bars(df: pd.DataFrame, *, title: str, stamp: str, top: int = 6) -> Figure:
    """Warp stall reasons (share of warp cycles per issued instruction), one bar group per reason, one bar
    per profiled kernel; the issuing cycle (``selected``) is left out."""
    d = df[df["reason"] != "selected"]
    order = d.groupby("reason")["share"].max().sort_values(ascending=False).index[:top]
    table = d.pivot_table(index="reason", columns="kernel", values="share", aggfunc="max").reindex(order) * 100
    table.index = [str(r).replace("_", " ") for r in table.index]
    fig = style.new_figure(7.5, 4.0)
    ax = fig.add_subplot()
    kernels = list(table.columns)
    styles = {k: {"color": style.color(str(df.loc[df["kernel"] == k, "variant"].iloc[0]))} for k in kernels}
    _bars(ax, table, styles, "{:.0f}%")
    ax.set_ylabel("share of warp cycles per issued instruction (%)")
    ax.set_xlabel("stall reason (Nsight Compute)")
    ax.set_title(title, fontsize=10)
    style.legend(ax)
    return style.finish(fig, stamp)


def hit_rate_bars(df: pd.DataFrame, variants: Sequence[str], labels: dict[str, str], *, title: str,
                  stamp: str, note: str = "") -> Figure:
    """Predicted L2 hit rates (the CPU L2 model) per dataset, one bar per variant's access pattern."""
    d = df[df["variant"].isin(variants)]
    table = d.pivot_table(index="label", columns="variant", values="hit_rate", aggfunc="first", sort=False)
    table = table[[v for v in variants if v in table.columns]] * 100
    table.columns = [labels.get(c, c) for c in table.columns]
    styles = {labels.get(v, v): style.bar_style(v) for v in variants}
    fig = style.new_figure(max(6.0, 1.5 * len(table) + 3), 4.0)
    ax = fig.add_subplot()
    _bars(ax, table, styles, "{:.0f}%")
    ax.set_ylim(0, 112)
    ax.set_ylabel("predicted L2 hit rate (% of 32-byte sectors)")
    ax.set_xlabel(f"dataset{note}")
    ax.set_title(title, fontsize=10)
    style.legend(ax)
    return style.finish(fig, stamp)


def quantized_tradeoff(acc: pd.DataFrame, speed: pd.DataFrame | None, *, title: str, stamp: str) -> Figure:
    """Bytes per row against error (left) and against speed over fp32 (right), one point per table format.

    ``acc``: :func:`dlrmlab.accuracy.accuracy` rows (the pooled mean error, averaged over datasets); ``speed``:
    :func:`dlrmlab.bench.quantized.run_quantized` rows (dlrmlab's, and the fp16 peers as their own markers),
    or None (not measured: the right panel says so)."""
    fig = style.new_figure(10.0, 4.0)
    ax_err, ax_speed = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    err = acc.groupby(["format", "row_bytes"], sort=False)["pooled_mean_abs_err"].mean().reset_index()
    ax_err.plot(err["row_bytes"], err["pooled_mean_abs_err"], "o", color=DATA_COLOR)
    for _, r in err.iterrows():
        ax_err.annotate(r["format"], (r["row_bytes"], r["pooled_mean_abs_err"]), fontsize=8,
                        xytext=(4, 4), textcoords="offset points")  # fmt: skip
    ax_err.set_xscale("log", base=2)
    ax_err.set_yscale("log")
    ax_err.set_xlabel("bytes per row (codes + scale, bias)")
    ax_err.set_ylabel("pooled embeddings: mean |error| vs fp32")
    if speed is None or not speed["timing_valid"].astype(bool).any():
        style.not_measured(ax_speed)
    else:
        for variant, g in speed[speed["correct"].astype(bool)].groupby("variant", sort=False):
            ax_speed.plot(g["row_bytes"], g["speedup_vs_fp32"], "o", label=variant, color=style.color(variant))
            for _, r in g.iterrows():
                ax_speed.annotate(f"{r['format']} {r['speedup_vs_fp32']:.2f}x", (r["row_bytes"], r["speedup_vs_fp32"]),
                                  fontsize=7, xytext=(4, 4), textcoords="offset points")  # fmt: skip
        ax_speed.set_xscale("log", base=2)
        style.unity_line(ax_speed, "fp32 fast_graph (1x)")
        style.legend(ax_speed)
    ax_speed.set_xlabel("bytes per row")
    ax_speed.set_ylabel("stage speed over fp32 fast_graph")
    fig.suptitle(title, fontsize=10)
    return style.finish(fig, stamp)
