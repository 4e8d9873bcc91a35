"""The shape grid: the fused path as a fresh install configures it, against torch and cuEmbed at its best,
over widths x batch sizes x ids, in one serving-loop run.

>>> rows = run_grid(out="results")                 # a GPU: torch, cuEmbed (both layouts), fast_graph
>>> summary(rows)                                  # one row per point: ms, ratios, layout, knobs' source
>>> heatmap(summary(rows), stamp="H100, 2026-12-06")

``python -m dlrmlab.bench.shapes OUT [--datasets random,trace:PATH,zipf:1.1]`` runs the grid from a shell.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure

from dlrmlab import rules  # the harness's rows are all this needs; keep the import beside its one use
from dlrmlab.bench.sweep import run_bench
from dlrmlab.report import style
from dlrmlab.workload import Pooling, preset

#: Widths x (batch, pooling): pooling 150 as the paper, 20 at the largest batch (a serving shape).
DIMS = (32, 64, 128, 256)
BATCHES = ((512, 150), (2048, 150), (16384, 20))
DATASETS = ("random", "trace:medium", "zipf:1.1")
#: cuEmbed in both its layouts, each call of a batch in one CUDA graph; the faster counts.
PEERS = (("cuembed_graph", {"layout": "fixed"}), ("cuembed_graph", {"layout": "csr"}))
VARIANT = "fast_graph"


def grid_stages(dims: Sequence[int] = DIMS, batches: Sequence[tuple[int, int]] = BATCHES) -> list[Any]:
    """The paper's 12 x 500K tables at each width, batch and pooling of the grid."""
    return [preset("paper", sparse_feature_size=d, batch_size=b, pooling=Pooling("fixed", p)).with_(
        name=f"grid-d{d}-b{b}-p{p}") for d in dims for b, p in batches]


def run_grid(out: str | None = None, datasets: Sequence[str] = DATASETS, stages: Sequence[Any] | None = None,
             repeats: int = 14, progress: bool = False) -> pd.DataFrame:
    """Run every point of the grid (torch, both cuEmbed layouts, ``fast_graph`` untuned by the caller);
    rows are appended to ``out``/``shapes_grid.csv`` as each stage finishes."""
    rows = []
    for stage in stages or grid_stages():
        res = run_bench([*PEERS, VARIANT], list(datasets), stage, repeats=repeats, out=out, name="shapes_grid",
                        progress=progress)
        rows.append(res.rows)
    return pd.concat(rows, ignore_index=True)


def _param(params: Any, key: str) -> Any:
    return json.loads(params).get(key) if isinstance(params, str) and params.startswith("{") else None


def summary(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per grid point: torch, cuEmbed's best layout and the fused path's times; the ratios; the
    layout the fused path chose and where its knobs came from."""
    ok = rows[rows["correct"].astype(bool) & rows["median_ms"].notna()]
    out = []
    for (dim, batch, pooling, dataset), g in ok.groupby(["dim", "batch", "pooling", "dataset"], sort=True):
        cu, fast, torch = (g[g["variant"] == v] for v in ("cuembed_graph", VARIANT, "torch"))
        if cu.empty or fast.empty:
            continue
        f, c = fast.iloc[0], cu.loc[cu["median_ms"].idxmin()]
        out.append({
            "dim": int(dim), "batch": int(batch), "pooling": int(pooling), "dataset": dataset,
            "torch_ms": float(torch["median_ms"].iloc[0]) if len(torch) else np.nan,
            "cuembed_ms": float(c["median_ms"]), "cuembed_layout": _param(c["params"], "layout"),
            "fast_ms": float(f["median_ms"]), "effective_gbps": float(f.get("effective_gbps", np.nan)),
            "layout": _param(f["params"], "layout"), "hot_share": _param(f["params"], "hot_share"),
            "config_source": _param(f["params"], "config_source"),
        })  # fmt: skip
    s = pd.DataFrame(out)
    if not s.empty:
        s["vs_cuembed"] = s["cuembed_ms"] / s["fast_ms"]
        s["vs_torch"] = s["torch_ms"] / s["fast_ms"]
    return s


def heatmap(s: pd.DataFrame, *, stamp: str, title: str | None = None) -> Figure:
    """Ratio of the fused path's speed to cuEmbed's (left) and torch's (right) at each point of the grid:
    one column per width, one row per (batch, pooling, ids)."""
    fig = style.new_figure(11.0, 0.9 + 0.32 * max(len(s.groupby(["batch", "pooling", "dataset"])), 1))
    for i, (col, label) in enumerate((("vs_cuembed", "vs cuEmbed (its best layout)"),
                                      ("vs_torch", "vs torch embedding_bag"))):
        ax = fig.add_subplot(1, 2, i + 1)
        t = s.set_index(["batch", "pooling", "dataset", "dim"])[col].unstack("dim")
        vals = t.to_numpy(dtype=float)
        finite = vals[np.isfinite(vals)]
        top = max(float(finite.max()) if finite.size else 1.25, 1.25)
        low = min(float(finite.min()) if finite.size else 0.8, 0.8)
        # green above 1x, red below, whatever the range: the message is "ahead or behind"
        im = ax.imshow(vals, cmap="RdYlGn", norm=TwoSlopeNorm(vcenter=1.0, vmin=low, vmax=top), aspect="auto")
        if not finite.size:
            style.not_measured(ax, "not in these rows")
        for (r, c), v in np.ndenumerate(vals):
            if np.isfinite(v):
                ax.text(c, r, f"{v:.2f}x", ha="center", va="center", fontsize=7)
        ax.set_xticks(range(len(t.columns)), [f"{d}" for d in t.columns])
        ax.set_yticks(range(len(t.index)), [f"batch {b}, pool {p}, {style.dataset_label(ds)}" for b, p, ds in t.index]
                      if i == 0 else [""] * len(t.index))
        ax.set_xlabel("row width (fp32 values)")
        ax.set_title(label, fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.05, label="speed ratio (x)")
    n_miss = int((s["vs_cuembed"] < 1.0).sum()) if "vs_cuembed" in s else 0
    fig.suptitle(title or f"The fused path, configured by itself: ahead of cuEmbed at {len(s) - n_miss} of {len(s)} "
                 "points", fontsize=10)
    return style.finish(fig, stamp)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dlrmlab.bench.shapes", description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--datasets", default=",".join(DATASETS))
    ap.add_argument("--repeats", type=int, default=14)
    args = ap.parse_args(argv)
    rows = run_grid(args.out, [d for d in args.datasets.split(",") if d], repeats=args.repeats, progress=False)
    print(summary(rows).to_string(float_format=lambda v: f"{v:.3f}"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


def rule_regret(rows: pd.DataFrame, limits: dict) -> pd.DataFrame:
    """How far :func:`dlrmlab.rules.derive_knobs`' choice is from the best configuration a sweep measured,
    per point and layout (``regret`` = rule's time / best time; 1.0: the rule found the best), beside the
    untuned default's (``config_source == "default"``) where the sweep ran it."""
    fast = rows[rows["variant"].isin(["fast_graph", "fast_graph+window"]) & rows["correct"].astype(bool)].copy()
    fast["p"] = fast["params"].map(lambda p: json.loads(p) if isinstance(p, str) and p.startswith("{") else {})
    out, keys = [], ("split", "bags_per_block", "unroll")
    for (dim, batch, pooling, dataset, variant), g in fast.groupby(["dim", "batch", "pooling", "dataset", "variant"]):
        split_hot = variant.endswith("+window")
        want = rules.derive_knobs(int(dim), "float32", float(pooling), split_hot, limits)
        wanted = tuple(want[k] for k in keys)
        mine = g[g["p"].map(lambda p, w=wanted: tuple(p.get(k) for k in ("split", "bags_per_block", "unroll")) == w)]
        default = g[g["p"].map(lambda p: p.get("config_source") == "default")]
        best = g.loc[g["median_ms"].idxmin()]
        out.append({"dim": dim, "batch": batch, "pooling": pooling, "dataset": dataset,
                    "layout": "split-hot" if split_hot else "plain", "best_ms": best["median_ms"],
                    "best": "/".join(str(best["p"].get(k)) for k in keys),
                    "rule": "/".join(str(want[k]) for k in keys),
                    "rule_ms": mine["median_ms"].min() if len(mine) else np.nan,
                    "default_ms": default["median_ms"].min() if len(default) else np.nan})
    r = pd.DataFrame(out)
    r["regret"] = r["rule_ms"] / r["best_ms"]
    r["default_regret"] = r["default_ms"] / r["best_ms"]
    return r
