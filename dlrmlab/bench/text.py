"""Benchmark rows as the CLI prints them: timings only for rows measured on a GPU."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from dlrmlab.bench.schema import SKIPPED_PREFIX

SIMULATOR_NOTICE = "simulator: timings not meaningful"
_MODE_TEXT = {"cold_l2": "cold L2 (evicted before every run)",
              "interleaved": "interleaved (one run per variant per round)"}  # fmt: skip
_TIMED = {
    "variant": "variant", "dataset": "dataset", "median_ms": "stage ms (median)", "p10_ms": "p10",
    "p90_ms": "p90", "host_ms": "host ms", "kernel_ms": "kernel ms", "effective_gbps": "GB/s",
    "speedup_vs_torch": "speedup vs torch", "ok": "correct",
}  # fmt: skip
_CHECKED = {"variant": "variant", "dataset": "dataset", "ok": "correct", "max_rel_err": "max rel err"}


def _skipped(rows: pd.DataFrame) -> pd.Series:
    if "error" not in rows:
        return pd.Series(False, rows.index)
    return rows["error"].map(lambda e: isinstance(e, str) and e.startswith(SKIPPED_PREFIX)).astype(bool)


def _describe_mode(mode: Any, block: Any) -> str:
    if mode == "serving":
        b = int(block) if block is not None and not (isinstance(block, float) and math.isnan(block)) else "?"
        return f"serving loop (blocks of {b} consecutive batches per variant, the first untimed)"
    return _MODE_TEXT.get(mode, str(mode))


def _modes(rows: pd.DataFrame) -> str:
    block = rows["serving_block"] if "serving_block" in rows else pd.Series(None, rows.index)
    return "; ".join(_describe_mode(m, b) for m, b in dict.fromkeys(zip(rows["timing_mode"], block, strict=True)))


def _fmt(spec: str):
    return lambda x: "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def format_table(rows: pd.DataFrame) -> str:
    """The CLI's table. Rows not measured on a GPU show correctness only: no speed claims."""
    if rows.empty:
        return "(no rows)"
    valid = rows["timing_valid"].astype(bool) if "timing_valid" in rows else pd.Series(False, rows.index)
    lines = []
    show = rows.copy()
    skipped = _skipped(rows)
    show["ok"] = show["correct"].map({True: "yes", False: "NO"}).where(~skipped, "skipped")
    if valid.any():
        t = show.loc[valid, list(_TIMED)].rename(columns=_TIMED)
        formatters = {"GB/s": _fmt(",.0f"), "speedup vs torch": _fmt(".2f")}
        formatters |= {c: _fmt(".4g") for c in ("stage ms (median)", "p10", "p90", "host ms", "kernel ms")}
        lines.append(t.to_string(index=False, formatters=formatters, na_rep="-"))
    if (~valid).any():
        t = show.loc[~valid, list(_CHECKED)].rename(columns=_CHECKED)
        lines.append(t.to_string(index=False, float_format=lambda x: f"{x:.2e}", na_rep="-"))
        lines.append(SIMULATOR_NOTICE)
    for _, r in rows.loc[skipped].iterrows():
        lines.append(f"{r['variant']} on {r['dataset']}: SKIPPED ({str(r['error'])[len(SKIPPED_PREFIX):]})")
    bad = rows.loc[~rows["correct"].astype(bool) & ~skipped]
    for _, r in bad.iterrows():
        lines.append(f"{r['variant']} on {r['dataset']}: INCORRECT, not timed ({r['error']})")
    if valid.any() and "timing_mode" in rows:
        lines.append("stage time: " + _modes(rows.loc[valid]))
    if valid.any() and "copy_gbps" in rows:
        lines.append(f"device-to-device copy: {rows.loc[valid, 'copy_gbps'].iloc[0]:.0f} GB/s (read + write)")
    return "\n".join(lines)
