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


# --- the rule as a whole (layout + knobs) against a sweep, and against a nearest-entry table ----------------

#: A point of a sweep: the shape and the ids.
POINT = ("dim", "batch", "pooling", "dataset")
#: A configuration, comparable across widths: the layout, lane groups per bag, threads per block, rows in
#: flight per lane (bags per block follow from the threads and the width's lanes).
CONFIG = ("layout", "split", "threads", "unroll")
#: Nearest-entry distance: octaves of row bytes, batch and pooling, plus the hot shares' difference times this
#: (a share 0.25 apart counts as one octave: the layout flips over about that range).
SHARE_OCTAVES = 4.0


def sweep_candidates(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per (point, configuration) a sweep measured (the fastest where one ran twice), the dataset
    as its label (a trace's path and its short name meet), with the width's ``lanes``."""
    fast = rows[rows["variant"].isin(["fast_graph", "fast_graph+window"]) & rows["correct"].astype(bool)]
    p = fast["params"].map(lambda v: json.loads(v) if isinstance(v, str) and v.startswith("{") else {})
    c = pd.DataFrame({
        "dim": fast["dim"].astype(int), "batch": fast["batch"].astype(int), "pooling": fast["pooling"].astype(int),
        "dataset": fast["dataset"].map(style.dataset_label),
        "layout": np.where(fast["variant"].str.endswith("+window") | p.map(lambda d: bool(d.get("split_hot"))),
                           "split-hot", "plain"),
        "split": p.map(lambda d: d.get("split")), "lanes": p.map(lambda d: d.get("lanes")),
        "bags_per_block": p.map(lambda d: d.get("bags_per_block")), "unroll": p.map(lambda d: d.get("unroll")),
        "median_ms": fast["median_ms"].astype(float),
    })  # fmt: skip
    c = c.dropna(subset=["split", "lanes", "bags_per_block", "unroll"])
    c = c.astype({"split": int, "lanes": int, "bags_per_block": int, "unroll": int})
    c["threads"] = c["lanes"] * c["split"] * c["bags_per_block"]
    return c.groupby([*POINT, *CONFIG], as_index=False).agg(median_ms=("median_ms", "min"), lanes=("lanes", "first"))


def _shares(shares: pd.DataFrame) -> dict:
    s = shares.dropna(subset=["hot_share"])
    return {(int(d), int(b), int(p), style.dataset_label(ds)): float(h)
            for d, b, p, ds, h in s[[*POINT, "hot_share"]].itertuples(index=False)}


def rule_config(dim: int, pooling: float, share: float, limits: dict, row_bytes: int | None = None) -> tuple:
    """The configuration (:data:`CONFIG`) the rules serve a shape with, and the layout's reason."""
    row_bytes = row_bytes or dim * 4
    k = limits["persisting_l2_max_bytes"] // row_bytes
    choice = rules.decide_layout(share, k, row_bytes, float(pooling))
    knobs = rules.derive_knobs(int(dim), "float32", float(pooling), choice.split_hot, limits)
    lanes = min(32, 1 << max(0, (-(-dim // 4) - 1).bit_length()))  # 16-byte vectors: dim / 4 lanes, <= 32
    return (choice.layout, knobs["split"], lanes * knobs["split"] * knobs["bags_per_block"], knobs["unroll"]), choice


def _ms(g: pd.DataFrame, config: tuple) -> float:
    hit = g[(g[list(CONFIG)] == pd.Series(config, index=list(CONFIG))).all(axis=1)]
    return float(hit["median_ms"].min()) if len(hit) else np.nan


def _label(config: tuple) -> str:
    layout, split, threads, unroll = config
    return f"{layout} {split}x/{threads}t/{unroll}"


def served_regret(rows: pd.DataFrame, shares: pd.DataFrame, limits: dict) -> pd.DataFrame:
    """The whole rule (layout from the hot share and the bags' bytes, then the knobs) at each point of a
    sweep: ``regret`` = the chosen configuration's time / the best time of either layout (NaN where the sweep
    did not measure the rule's choice). ``shares``: the hot share per point (``summary`` of a grid run);
    points without one are left out."""
    cands, share = sweep_candidates(rows), _shares(shares)
    out = []
    for point, g in cands.groupby(list(POINT)):
        if point not in share:
            continue
        config, choice = rule_config(point[0], point[2], share[point], limits)
        best = g.loc[g["median_ms"].idxmin()]
        out.append({**dict(zip(POINT, point, strict=True)), "hot_share": share[point], "rule": _label(config),
                    "why": choice.reason, "rule_ms": _ms(g, config), "best": _label(tuple(best[list(CONFIG)])),
                    "best_ms": float(best["median_ms"])})
    r = pd.DataFrame(out)
    if not r.empty:
        r["regret"] = r["rule_ms"] / r["best_ms"]
    return r


def nearest_vs_rule(rows: pd.DataFrame, shares: pd.DataFrame, limits: dict) -> pd.DataFrame:
    """Leave one shape out: at each point of a sweep, the nearest-entry rule serves the best configuration of
    the nearest *other* measured point (distance: octaves of row bytes, batch and pooling, plus
    :data:`SHARE_OCTAVES` x the hot shares' difference); the derived rule serves :func:`rule_config`. Each is
    scored by that configuration's time at the held-out point / the point's best (``*_regret``); a choice the
    sweep did not measure there is not scored (NaN, counted by :func:`compare_summary`). The derived rule's
    constants are not refitted per point: they were read off the whole sweep, so its score is optimistic."""
    cands, share = sweep_candidates(rows), _shares(shares)
    points = {p: g for p, g in cands.groupby(list(POINT)) if p in share}
    best = {p: tuple(g.loc[g["median_ms"].idxmin(), list(CONFIG)]) for p, g in points.items()}

    def distance(a: tuple, b: tuple) -> float:
        octaves = sum(abs(np.log2(a[i]) - np.log2(b[i])) for i in range(3))  # dim x 4 bytes: log2 row bytes
        return float(octaves + SHARE_OCTAVES * abs(share[a] - share[b]))

    out = []
    for p, g in points.items():
        near = min((q for q in points if q != p), key=lambda q, p=p: distance(p, q))
        mine, _ = rule_config(p[0], p[2], share[p], limits)
        best_ms = float(g["median_ms"].min())
        out.append({**dict(zip(POINT, p, strict=True)), "hot_share": share[p], "best": _label(best[p]),
                    "best_ms": best_ms, "nearest": "/".join(str(v) for v in near), "distance": distance(p, near),
                    "nearest_choice": _label(best[near]), "nearest_regret": _ms(g, best[near]) / best_ms,
                    "rule_choice": _label(mine), "rule_regret": _ms(g, mine) / best_ms})
    return pd.DataFrame(out)


def compare_summary(r: pd.DataFrame) -> pd.DataFrame:
    """One row per rule: points scored (of all), geometric-mean and worst regret over the points both rules'
    choices were measured at, and how often each found the best."""
    both = r.dropna(subset=["nearest_regret", "rule_regret"])
    out = []
    for name in ("nearest", "rule"):
        col = both[f"{name}_regret"]
        out.append({"rule": {"nearest": "nearest entry", "rule": "derived rule"}[name],
                    "scored": int(r[f"{name}_regret"].notna().sum()), "points": len(r), "compared": len(both),
                    "geomean_regret": float(np.exp(np.log(col).mean())) if len(col) else np.nan,
                    "worst_regret": float(col.max()) if len(col) else np.nan,
                    "found_best": int((col <= 1.0 + 1e-9).sum())})
    return pd.DataFrame(out)


if __name__ == "__main__":
    raise SystemExit(main())
