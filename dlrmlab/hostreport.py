"""The host-table measurement written up: a figure and a Markdown section from ``host_tables.csv`` and
``host_link.csv`` (tidy rows in, text and figure out; no numbers of its own)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from dlrmlab.config import table_dtype
from dlrmlab.report import style

#: the headline target: the share of the bound a cached placement should reach on skewed ids, pipelined
TARGET_SHARE = 0.8


def headline(runs: pd.DataFrame) -> pd.DataFrame:
    """The budget sweep (per-table LRU caches, pipelined) and the host placement, one row per run."""
    cached = runs[(runs["placement"] == "cached") & (runs["cache_policy"] == "lru") & ~_flag(runs["cache_shared"])
                  & _flag(runs["pipelined"])]
    return pd.concat([cached, runs[runs["placement"] == "host"]]).sort_values(["dataset", "cache_budget"])


def _flag(col: pd.Series) -> pd.Series:
    """A boolean column as read back from CSV (True/False, or empty where it does not apply)."""
    return col.astype(str).str.lower().isin(["true", "1", "1.0"])


def figure(runs: pd.DataFrame) -> style.ReportFigure:
    """Effective GB/s against the cache budget per dataset, the bound dashed, ``host`` as a dotted line."""
    fig = style.new_figure(8.5, 3.6)
    datasets = list(dict.fromkeys(runs["dataset"]))
    axes = fig.subplots(1, len(datasets), sharey=True, squeeze=False)[0]
    head = headline(runs)
    for ax, ds in zip(axes, datasets, strict=True):
        d = head[(head["dataset"] == ds) & (head["placement"] == "cached")]
        x = d["cache_budget"] * 100
        ax.plot(x, d["effective_gbps"], marker="o", color=style.color("fast"), label="cached, pipelined (LRU)")
        row_bytes = d["dim"] * d["dtype"].map(lambda t: table_dtype(t).bytes)
        bound = d["lookups"] * row_bytes / (d["bound_ms"] * d["timed_batches"]) / 1e6
        ax.plot(x, bound, ls="--", color="k", label="bound")
        h = head[(head["dataset"] == ds) & (head["placement"] == "host")]
        if len(h):
            ax.axhline(float(h["effective_gbps"].iloc[-1]), ls=":", color="0.4", label="host (zero-copy)")
        if len(d):  # (log axes need data)
            ax.set_xscale("log")
            ax.set_yscale("log")
        ax.set_title(style.dataset_label(ds), fontsize="medium")
    fig.supxlabel("HBM cache (% of the tables)", fontsize="medium")
    axes[0].set_ylabel("effective GB/s (looked-up bytes / time)")
    style.legend(axes[-1])
    return fig


def _gpu(row: pd.Series) -> str:
    return str(row["device"]) if pd.isna(row.get("gpu_name")) else str(row["gpu_name"])


def _rows(rows: Any) -> str:
    try:
        return f"{int(rows):,}"
    except (TypeError, ValueError):
        return str(rows)  # tables of different sizes: the list


def _fmt_pct(v: Any) -> str:
    return "-" if pd.isna(v) else f"{100 * float(v):.1f}%"


def section(runs: pd.DataFrame, link: pd.DataFrame) -> str:
    """The Markdown section: the link's rates, then per dataset the sweep and the other placements."""
    first = runs.iloc[0]
    lines = [
        "## Tables larger than the GPU: host memory behind an HBM cache",
        "",
        f"{_gpu(first)}; {int(first['tables'])} tables of {_rows(first['rows'])} rows x "
        f"{int(first['dim'])} {first['dtype']} ({first['table_bytes'] / 1e9:.1f} GB) in pinned host memory, batch "
        f"{int(first['batch'])} x {first['pooling']}; {int(first['timed_batches'])} batches timed after "
        f"{int(first['warmup_batches'])}. Command: `{first.get('command', '')}`.",
        "",
        "The host link and HBM (GB/s):",
        "",
        "| measure | row bytes | GB/s |",
        "|---|---|---|",
    ]
    for r in link.itertuples():
        rb = "-" if pd.isna(r.row_bytes) else str(int(r.row_bytes))
        lines.append(f"| {r.measure} | {rb} | {r.gbps:.1f} |")
    maps = sorted({m for m in runs["id_map"].dropna() if m != "none"})
    lines += ["", "Bound (the fastest a batch can be, from its counters and the rates above): `cached`, the missed "
              "rows at the host gather rate (how the cache fetches them) and every lookup at the fused kernel's "
              "HBM rate, summed when serial, the larger of the two when pipelined (batch i+1's fill overlaps batch i's "
              "kernel); `host`, each batch's distinct rows at the best zero-copy rate measured at that row size "
              "(repeats of a row may come from L2). "
              f"Target: {TARGET_SHARE:.0%} of the bound on skewed ids, pipelined. Hit rate: lookups that needed no "
              "fetch (a missed row's later lookups in the same batch count as hits, as in the models). Predicted: "
              "the L2 model's LRU core at the cache's size for LRU runs; for LFU runs the hottest rows' share "
              "less their first fetches. GPU plan and fill ms: the GPU's time per batch managing the "
              "cache (unique ids, probe, victims, counters) and copying the missed rows, each on a stream of its "
              "own; pipelined, a batch's plan overlaps the previous batch's fill, and both the previous kernel."
              + (f" Trace ids are spread over the tables' rows by {', '.join(maps)}." if maps else ""), "",
              *target_lines(runs)]
    for ds, d in runs.groupby("dataset", sort=False):
        lines += [f"### {style.dataset_label(ds)}", "",
                  "| placement | ms/batch | samples/s | GB/s | hit rate | predicted | GPU plan ms | fill ms | "
                  "share of bound |", "|---|---|---|---|---|---|---|---|---|"]
        for r in d.itertuples():
            lines.append(
                f"| {r.placement_spec} | {r.ms_per_batch:.2f} | {r.samples_per_s:,.0f} | {r.effective_gbps:.1f} | "
                f"{_fmt_pct(r.hit_rate)} | {_fmt_pct(_predicted(r))} | {_fmt_ms(r.plan_gpu_ms_per_batch)} | "
                f"{_fmt_ms(r.fill_gpu_ms_per_batch)} | {_fmt_pct(r.share_of_bound)} |")
        lines.append("")
    return "\n".join(lines)


def target_lines(runs: pd.DataFrame) -> list[str]:
    """Per skewed dataset (every one but uniform random), the pipelined cached run nearest its bound, against
    :data:`TARGET_SHARE` (a bullet list, and a blank line after it)."""
    cached = runs[(runs["placement"] == "cached") & _flag(runs["pipelined"]) & (runs["dataset"] != "random")]
    lines = []
    for ds, d in cached.groupby("dataset", sort=False):
        best = d.loc[d["share_of_bound"].idxmax()]
        verdict = "met" if best["share_of_bound"] >= TARGET_SHARE else "missed"
        lines.append(f"- {style.dataset_label(ds)}: best {_fmt_pct(best['share_of_bound'])} of the bound "
                     f"({best['placement_spec']}, {best['effective_gbps']:.1f} GB/s): target {verdict}")
    return [*lines, ""] if lines else []


def _predicted(r: Any) -> Any:
    """The prediction for a run's policy (none for ``host``)."""
    if r.placement != "cached":
        return None
    return r.predicted_hit_rate_lfu if r.cache_policy == "lfu" else r.predicted_hit_rate_lru


def _fmt_ms(v: Any) -> str:
    return "-" if v is None or pd.isna(v) else f"{float(v):.1f}"


def write(out_dir: Any) -> list[Path]:
    """Write ``host_tables.md`` and the figure (PNG, SVG) next to the CSVs in ``out_dir``."""
    d = Path(out_dir)
    runs, link = pd.read_csv(d / "host_tables.csv"), pd.read_csv(d / "host_link.csv")
    text = section(runs, link) + "\n![Effective bandwidth against the cache budget](host_tables.png)\n"
    (d / "host_tables.md").write_text(text)
    return [d / "host_tables.md", *style.save(figure(runs), d, "host_tables")]
