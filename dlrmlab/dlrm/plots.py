"""Figures of ``dlrmlab dlrm`` results (rows of :data:`dlrmlab.dlrm.measure.ROW_COLUMNS`).

Each function returns a ``matplotlib.figure.Figure`` built without pyplot (no global state, headless
safe) and says one thing: where a batch's time goes, what each pipeline gains end to end, and what
batch size buys in throughput at what latency. Simulator rows are labelled: their times mean nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from dlrmlab.bench.schema import BASELINE
from dlrmlab.dlrm.model import STAGES
from dlrmlab.errors import DlrmlabError
from dlrmlab.published import PUBLISHED
from dlrmlab.report.style import ReportFigure as _Figure
from dlrmlab.report.style import dataset_label

STAGE_LABELS = {"bottom_mlp": "bottom MLP", "embedding": "embedding", "interaction": "interaction",
                "top_mlp": "top MLP"}  # fmt: skip
STAGE_COLORS = {"bottom_mlp": "C0", "embedding": "C3", "interaction": "C2", "top_mlp": "C1"}


def _need(df: pd.DataFrame, cols: Sequence[str], what: str) -> pd.DataFrame:
    if not isinstance(df, pd.DataFrame):
        raise DlrmlabError(f"{what} needs a DataFrame, got {type(df).__name__}")
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise DlrmlabError(f"{what} needs columns {missing}")
    d = df[df["correct"].astype(bool)] if "correct" in df.columns else df
    d = d.dropna(subset=["latency_ms"])
    if d.empty:
        raise DlrmlabError(f"{what}: no timed rows to plot")
    return d


def _suffix(df: pd.DataFrame) -> str:
    sim = "timing_valid" in df.columns and not df["timing_valid"].astype(bool).any()
    return "\n(simulator: timings not meaningful)" if sim else ""


def _pick_batch(df: pd.DataFrame, batch_size: int | None) -> tuple[pd.DataFrame, int]:
    sizes = sorted(df["batch_size"].unique())
    b = batch_size if batch_size is not None else (2048 if 2048 in sizes else sizes[len(sizes) // 2])
    d = df[df["batch_size"] == b]
    if d.empty:
        raise DlrmlabError(f"no rows at batch size {b}; measured: {sizes}")
    return d, int(b)


def _latest(df: pd.DataFrame) -> pd.DataFrame:
    """The last measurement of each (pipeline, dataset, batch size): a results file may hold several runs."""
    keys = ["pipeline", "dataset", "batch_size"]
    return df.sort_values("timestamp" if "timestamp" in df.columns else keys).groupby(keys, sort=False).tail(1)


def stage_breakdown(df: pd.DataFrame, batch_size: int | None = None) -> Figure:
    """Stacked stage times per pipeline, one panel per dataset: the embedding stage dominates a batch.
    Graph-captured and compiled pipelines cannot be split by stage: one grey bar (end to end)."""
    d = _need(df, ["pipeline", "dataset", "batch_size", "latency_ms", *[f"{s}_ms" for s in STAGES]], "stage_breakdown")
    d, b = _pick_batch(_latest(d), batch_size)
    datasets = list(dict.fromkeys(d["dataset"]))
    fig = _Figure(figsize=(max(5.0, 3.2 * len(datasets)), 4.2), layout="constrained")
    axes = fig.subplots(1, len(datasets), sharey=True, squeeze=False)[0]
    for ax, ds in zip(axes, datasets, strict=True):
        g = d[d["dataset"] == ds]
        x = np.arange(len(g))
        bottom = np.zeros(len(g))
        for s in STAGES:
            v = g[f"{s}_ms"].to_numpy(dtype=float)
            ax.bar(x, np.nan_to_num(v), bottom=bottom, color=STAGE_COLORS[s], label=STAGE_LABELS[s], width=0.7)
            bottom += np.nan_to_num(v)
        whole = np.where(g["bottom_mlp_ms"].isna(), g["latency_ms"].to_numpy(dtype=float), 0.0)
        if whole.any():
            ax.bar(x, whole, color="0.7", hatch="//", width=0.7, label="end to end (not split)")
        ax.set_xticks(x)
        ax.set_xticklabels(g["pipeline"], rotation=30, ha="right")
        ax.set_title(dataset_label(ds), fontsize="medium")
    axes[0].set_ylabel("time per batch (ms)")
    labels: dict = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            labels.setdefault(lab, h)
    fig.legend(list(labels.values()), list(labels), loc="outside lower center", ncols=len(labels), fontsize="small")
    fig.suptitle(f"Where a DLRM batch's time goes (batch {b}){_suffix(df)}")
    return fig


def speedup_by_dataset(df: pd.DataFrame, batch_size: int | None = None) -> Figure:
    """End-to-end speedup of each pipeline over eager PyTorch, per dataset, beside the paper's best."""
    d = _need(df, ["pipeline", "dataset", "batch_size", "speedup_vs_torch"], "speedup_by_dataset")
    d, b = _pick_batch(_latest(d), batch_size)
    d = d[d["pipeline"] != BASELINE]
    table = d.pivot_table(index="dataset", columns="pipeline", values="speedup_vs_torch", sort=False)
    fig = _Figure(figsize=(max(6.0, 1.2 * len(table.index) + 3), 4.2), layout="constrained")
    ax = fig.add_subplot()
    n = max(len(table.columns), 1)
    x = np.arange(len(table.index))
    for j, col in enumerate(table.columns):
        ax.bar(x + (j - (n - 1) / 2) * 0.8 / n, table[col].to_numpy(dtype=float), 0.8 / n, label=str(col))
    ax.axhline(1.0, color="k", lw=0.8)
    paper = PUBLISHED["end_to_end"]
    ax.axhline(paper, color="k", ls="--", lw=1, label=f"paper, A100 (best): {paper}x")
    ax.set_xticks(x)
    ax.set_xticklabels([dataset_label(i) for i in table.index], rotation=15, ha="right")
    ax.set_ylabel("end-to-end speedup over eager PyTorch (x)")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title(f"DLRM end-to-end speedup per dataset (batch {b}){_suffix(df)}")
    return fig


def latency_vs_throughput(df: pd.DataFrame, dataset: str | None = None) -> Figure:
    """Latency against samples/s as the batch grows, one line per pipeline (points labelled by batch)."""
    d = _need(df, ["pipeline", "dataset", "batch_size", "latency_ms", "samples_per_s"], "latency_vs_throughput")
    d = _latest(d)
    ds = dataset if dataset is not None else d.groupby("dataset", sort=False)["batch_size"].nunique().idxmax()
    d = d[d["dataset"] == ds]
    if d.empty:
        raise DlrmlabError(f"no rows for dataset {ds!r}")
    fig = _Figure(figsize=(7.0, 4.5), layout="constrained")
    ax = fig.add_subplot()
    for name, g in d.groupby("pipeline", sort=False):
        g = g.sort_values("batch_size")
        ax.plot(g["samples_per_s"], g["latency_ms"], marker="o", label=str(name))
        for _, r in g.iterrows():
            ax.annotate(str(int(r["batch_size"])), (r["samples_per_s"], r["latency_ms"]), fontsize="x-small",
                        xytext=(3, 3), textcoords="offset points")  # fmt: skip
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("throughput (samples/s)")
    ax.set_ylabel("batch latency (ms)")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title(f"Latency vs throughput over batch size ({dataset_label(ds)}){_suffix(df)}")
    return fig
