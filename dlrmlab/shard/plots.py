"""Figures of the sharded stage: plans side by side (per-rank cost and memory), predicted scaling, and
measured per-rank steps."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from dlrmlab.report.style import new_figure


def plan_costs(costs: Mapping[str, object], budget_gb: float | None = None):
    """Per-rank predicted cost (lookups and communication, stacked) and shard memory, one group of bars per
    plan (``costs``: plan name -> :class:`dlrmlab.shard.planner.PlanCost`)."""
    fig = new_figure(12, 3.8)
    ax, mx = fig.subplots(1, 2)
    names = list(costs)
    n = max(c.world_size for c in costs.values())
    width = 0.8 / max(n, 1)
    for i, name in enumerate(names):
        c = costs[name]
        x = i + (np.arange(c.world_size) - (c.world_size - 1) / 2) * width
        ax.bar(x, c.lookup_ms, width, color="tab:blue", label="lookups" if i == 0 else None)
        ax.bar(x, c.comm_ms, width, bottom=c.lookup_ms, color="tab:orange", label="communication" if i == 0 else None)
        mx.bar(x, c.memory_bytes / 1e9, width, color="tab:green" if c.fits else "tab:red")
    labels = [f"{k}\nimbalance {costs[k].imbalance:.2f}" for k in names]
    for a in (ax, mx):
        a.set_xticks(range(len(names)), labels, fontsize=8)
    ax.set_ylabel("predicted ms per batch, per rank")
    ax.legend(fontsize=8)
    mx.set_ylabel("shard memory per rank (GB)")
    if budget_gb is not None:
        mx.axhline(budget_gb, color="k", ls="--", lw=1, label=f"budget {budget_gb:g} GB")
        mx.legend(fontsize=8)
    ax.set_title("each bar one rank", fontsize=9)
    return fig


def scaling(df: pd.DataFrame, value: str = "samples_per_s", scaling_kind: str = "strong"):
    """Predicted ``value`` against GPU count, one panel per stage, one line per plan (plans that do not fit
    are left out at that count)."""
    d = df[df["scaling"] == scaling_kind]
    stages = list(dict.fromkeys(d["stage"]))
    fig = new_figure(5.5 * len(stages), 3.8)
    axes = fig.subplots(1, len(stages), squeeze=False)
    for ax, st in zip(axes[0], stages, strict=True):
        for plan, g in d[d["stage"] == st].groupby("plan", sort=False):
            ax.plot(g["world_size"], g[value], marker="o", label=plan)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("GPUs (8 per host)")
        ax.set_ylabel(value.replace("_", " "))
        ax.set_title(f"{st}: {scaling_kind} scaling (predicted)", fontsize=9)
        ax.legend(fontsize=7)
    return fig


def measured_steps(rows: pd.DataFrame):
    """Measured ms of each step per rank (input distribution, lookups, output distribution, whole stage),
    one group per plan and lookup implementation."""
    steps = ["input_dist", "lookup", "output_dist", "lookup_in_turn", "e2e"]
    d = rows[rows["stage"].isin(steps)].copy()
    d["case"] = d["plan"] + " / " + d["embedding"] + " / rank " + d["rank"].astype(str)
    table = d.pivot_table(index="case", columns="stage", values="ms", aggfunc="median")[steps]
    fig = new_figure(10, 0.35 * len(table) + 1.5)
    ax = fig.subplots()
    table.plot.barh(ax=ax, width=0.8)
    ax.set_xlabel("ms (median)")
    ax.set_ylabel("")
    ax.legend(fontsize=7)
    return fig
