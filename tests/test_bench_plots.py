"""Plots return Figures with one artist per plotted series/item (without pyplot: ruff's banned-api rule in
pyproject.toml keeps matplotlib.pyplot out of dlrmlab)."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from dlrmlab.bench import plots
from dlrmlab.errors import DlrmlabError

VARIANTS = ["torch", "baseline", "fast"]
DATASETS = ["random", "high"]


def _rows(timing_valid: bool = True) -> pd.DataFrame:
    recs = []
    for ds in DATASETS:
        for i, v in enumerate(VARIANTS):
            ms = 1.0 / (1 + i)
            recs.append(
                {"variant": v, "dataset": ds, "median_ms": ms, "speedup_vs_torch": 1.0 * (1 + i),
                 "effective_gbps": 1000.0 * (1 + i), "copy_gbps": 3000.0, "timing_valid": timing_valid}
            )  # fmt: skip
    return pd.DataFrame(recs)


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def test_stalls():
    df = pd.DataFrame(
        {"variant": ["a", "b", "c"], "stall_long_scoreboard_share": [0.5, 0.3, 0.2],
         "stall_wait_share": [0.2, 0.2, 0.1], "stall_barrier_share": [0.1, 0.0, 0.3], "other": [1, 2, 3]}
    )  # fmt: skip
    fig = plots.plot_stalls(df)
    ax = fig.axes[0]
    assert isinstance(fig, Figure) and len(ax.containers) == 3 and len(ax.patches) == 9
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["long_scoreboard", "wait", "barrier"]
    tops = np.array([p.get_y() + p.get_height() for p in ax.containers[-1].patches])
    np.testing.assert_allclose(tops, [0.8, 0.5, 0.6])  # stacked
    assert _png(fig).startswith(b"\x89PNG")
    with pytest.raises(DlrmlabError, match="stall_"):
        plots.plot_stalls(df[["variant", "other"]])


def test_occupancy_vs_registers():
    df = pd.DataFrame(
        {"variant": ["a"] * 3 + ["b"] * 2, "registers": [64, 32, 40, 32, 48],
         "theoretical_occupancy": [50, 100, 75, 100, 62.5], "achieved_occupancy": [40, 80, 60, 85, 50]}
    )  # fmt: skip
    fig = plots.plot_occupancy_vs_registers(df)
    ax = fig.axes[0]
    assert len(ax.lines) == 4
    assert list(ax.lines[0].get_xdata()) == [32, 40, 64]  # sorted by registers
    assert "%" in ax.get_ylabel()
    with pytest.raises(DlrmlabError, match="registers"):
        plots.plot_occupancy_vs_registers(df.drop(columns="registers"))


def test_speedup_excludes_baseline_and_marks_simulator():
    fig = plots.plot_speedup(_rows(timing_valid=False))
    ax = fig.axes[0]
    assert len(ax.containers) == 2 and len(ax.patches) == 2 * len(DATASETS)  # torch is the line at 1
    assert [t.get_text() for t in ax.get_xticklabels()] == DATASETS
    assert any(list(line.get_ydata()) == [1.0, 1.0] for line in ax.lines)
    assert "simulator" in ax.get_title()
    _png(fig)


def test_speedup_with_repeats_has_error_bars():
    df = pd.concat([_rows(), _rows().assign(speedup_vs_torch=lambda d: d["speedup_vs_torch"] * 1.1)])
    ax = plots.plot_speedup(df).axes[0]
    assert len(ax.containers) == 2 * 2  # bars + error bars per variant
    assert "simulator" not in ax.get_title()


def test_bandwidth_has_copy_line():
    fig = plots.plot_bandwidth(_rows())
    ax = fig.axes[0]
    assert len(ax.containers) == len(VARIANTS) and len(ax.patches) == len(VARIANTS) * len(DATASETS)
    assert [list(line.get_ydata()) for line in ax.lines] == [[3000.0, 3000.0]]


def test_timing_distribution():
    rng = np.random.default_rng(0)
    runs = pd.DataFrame(
        [
            {"variant": v, "dataset": ds, "run": r, "stage_ms": rng.random()}
            for ds in DATASETS
            for v in VARIANTS
            for r in range(5)
        ]
    )
    fig = plots.plot_timing_distribution(runs)
    assert len(fig.axes) == len(DATASETS)
    for ax in fig.axes:
        assert [t.get_text() for t in ax.get_xticklabels()] == VARIANTS
    _png(fig)
    with pytest.raises(DlrmlabError, match="no rows"):
        plots.plot_timing_distribution(runs.iloc[:0])
