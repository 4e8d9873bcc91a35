"""Teaching helpers for notebook ``T1_coalescing``: which addresses one warp's load instruction touches.

A tiny instrumented kernel per thread layout runs (in Numba's CUDA simulator without a GPU, on the GPU with
one) over a small embedding-bag batch. Instead of loading the table it *records* the element index each
thread would load, one entry per load instruction it executes. From that record we count, per warp
instruction, the bytes requested and the 32-byte sectors and 128-byte lines they fall in: the memory
transactions the GPU's load/store unit issues for that request.

The layouts (:data:`LAYOUTS`):

* ``per-feature`` — the paper's (PyTorch 2.1's) kernel: block (32, 8), a thread sums one column of one bag,
  so the 32 lanes of a warp read 32 consecutive 4-byte columns of the same row;
* ``vector16`` — dlrmlab's fast kernel: a lane loads 16 consecutive bytes (4 fp32 values) of the row, so 32
  lanes read 512 bytes (a whole 128-wide row) in one instruction; narrower rows put several bags in a warp;
* ``thread-per-bag`` — a naive layout for contrast: a thread sums a whole bag, column by column, so the
  lanes of a warp read the same column of 32 different rows.

The table is assumed to start at address 0 (real allocations are aligned to at least 256 bytes).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from dlrmlab.backend import cuda
from dlrmlab.errors import DlrmlabError
from dlrmlab.report import style
from dlrmlab.report.style import new_figure

WARP = 32
SECTOR_BYTES = 32
LINE_BYTES = 128
VECTOR_BYTES = 16
LAYOUTS: dict[str, str] = {
    "per-feature": "paper kernel: thread = one column of one bag (4-byte loads)",
    "vector16": "fast kernel: lane = 16 consecutive bytes of a row (16-byte loads)",
    "thread-per-bag": "naive: thread = one whole bag, column by column (4-byte loads)",
}
#: Colours of the layouts in the teaching figures: the paper kernel wears PyTorch's kernel's grey, the fast
#: kernel its red (dlrmlab.report.style), the naive layout a neutral blue-grey.
LAYOUT_COLORS = {"per-feature": "#a6a6a6", "vector16": "#d62728", "thread-per-bag": "#5a6f7f"}


# --- the instrumented kernels (same thread-to-work mapping as the real ones; record instead of load) ----------


@cuda.jit
def _per_feature(indices, offsets, dim, rec):
    # PyTorch 2.1's mapping: grid-stride over (bag, 32-column chunk); threadIdx.x is the column in the chunk
    num_bags = offsets.shape[0] - 1
    bx = cuda.blockDim.x
    chunks_per_bag = (dim + bx - 1) // bx
    chunk = cuda.blockIdx.x * cuda.blockDim.y + cuda.threadIdx.y
    stride = cuda.gridDim.x * cuda.blockDim.y
    tid = (cuda.blockIdx.x * cuda.blockDim.y + cuda.threadIdx.y) * bx + cuda.threadIdx.x
    step = 0
    while chunk < num_bags * chunks_per_bag:
        feat = (chunk % chunks_per_bag) * bx + cuda.threadIdx.x
        bag = chunk // chunks_per_bag
        for k in range(offsets[bag], offsets[bag + 1]):
            if feat < dim:
                rec[step, tid] = indices[k] * dim + feat
            step += 1  # the warp executes the load instruction even where a lane is masked off
        chunk += stride


@cuda.jit
def _vector16(indices, offsets, dim, vec, lanes, rec):
    # the fast kernel's mapping: groups of `lanes` threads per bag, each lane `vec` consecutive elements
    num_bags = offsets.shape[0] - 1
    tid = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
    groups = (cuda.gridDim.x * cuda.blockDim.x) // lanes
    lane = tid % lanes
    slices = (dim + vec * lanes - 1) // (vec * lanes)
    bag = tid // lanes
    step = 0
    while bag < num_bags:
        for k in range(offsets[bag], offsets[bag + 1]):
            for v in range(slices):
                col = (v * lanes + lane) * vec
                if col < dim:
                    rec[step, tid] = indices[k] * dim + col
                step += 1
        bag += groups


@cuda.jit
def _thread_per_bag(indices, offsets, dim, rec):
    num_bags = offsets.shape[0] - 1
    tid = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
    stride = cuda.gridDim.x * cuda.blockDim.x
    bag = tid
    step = 0
    while bag < num_bags:
        for k in range(offsets[bag], offsets[bag + 1]):
            for c in range(dim):
                rec[step, tid] = indices[k] * dim + c
                step += 1
        bag += stride


def lanes_for(dim: int, vec: int) -> int:
    """Threads per bag of the fast kernel: enough to cover the row with one vector each, a power of 2, at most
    a warp (as :attr:`dlrmlab.kernels.fused.FastConfig.lanes`)."""
    need = -(-dim // vec)
    lanes = 1
    while lanes < min(need, WARP):
        lanes *= 2
    return lanes


def tiny_batch(bags: int = 32, pooling: int = 4, rows: int = 4096, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A small embedding-bag batch: ``bags`` bags of ``pooling`` uniform random row ids of a ``rows``-row table
    (indices, CSR offsets with the last offset included)."""
    rng = np.random.default_rng(seed)
    indices = rng.integers(0, rows, bags * pooling).astype(np.int64)
    offsets = np.arange(0, bags * pooling + 1, pooling, dtype=np.int64)
    return indices, offsets


def record_loads(
    layout: str, indices: np.ndarray, offsets: np.ndarray, dim: int = 128, element_bytes: int = 4,
    warps: int = 16,
) -> pd.DataFrame:
    """Run ``layout``'s instrumented kernel with ``warps`` warps (grid-stride over the work) and return one row
    per (warp, load instruction, lane) that loaded something: ``layout, warp, instruction, lane, thread, row,
    col, element, bytes, address`` (``address`` in bytes from the table's start)."""
    if layout not in LAYOUTS:
        raise DlrmlabError(f"unknown layout {layout!r}; valid: {', '.join(LAYOUTS)}")
    if element_bytes not in (2, 4):
        raise DlrmlabError(f"element_bytes must be 2 (fp16/bf16) or 4 (fp32), got {element_bytes}")
    indices = np.ascontiguousarray(indices, dtype=np.int64)
    offsets = np.ascontiguousarray(offsets, dtype=np.int64)
    pooling = int(np.diff(offsets).max()) if len(offsets) > 1 else 0
    threads = warps * WARP
    vec = VECTOR_BYTES // element_bytes if layout == "vector16" else 1
    if layout == "per-feature":
        steps = pooling * -(-(len(offsets) - 1) * -(-dim // WARP) // (threads // WARP))
    elif layout == "vector16":
        lanes = lanes_for(dim, vec)
        steps = pooling * -(-dim // (vec * lanes)) * -(-(len(offsets) - 1) // (threads // lanes))
    else:
        steps = pooling * dim * -(-(len(offsets) - 1) // threads)
    rec = np.full((max(steps, 1), threads), -1, dtype=np.int64)
    if layout == "per-feature":
        by = 8 if warps % 8 == 0 else 1
        _per_feature[warps // by, (WARP, by)](indices, offsets, dim, rec)
    elif layout == "vector16":
        _vector16[warps, WARP](indices, offsets, dim, vec, lanes, rec)
    else:
        _thread_per_bag[warps, WARP](indices, offsets, dim, rec)
    step, thread = np.nonzero(rec >= 0)
    element = rec[step, thread]
    df = pd.DataFrame({"layout": layout, "warp": thread // WARP, "instruction": step, "lane": thread % WARP,
                       "thread": thread, "row": element // dim, "col": element % dim, "element": element,
                       "bytes": vec * element_bytes})  # fmt: skip
    df["address"] = df["element"] * element_bytes
    return df.sort_values(["warp", "instruction", "lane"], ignore_index=True)


def record_all(
    indices: np.ndarray, offsets: np.ndarray, dim: int = 128, element_bytes: int = 4, warps: int = 16,
    layouts: tuple[str, ...] | None = None,
) -> pd.DataFrame:
    """:func:`record_loads` of every layout (or ``layouts``), concatenated."""
    return pd.concat([record_loads(lay, indices, offsets, dim, element_bytes, warps) for lay in layouts or LAYOUTS],
                     ignore_index=True)  # fmt: skip


def _spans(df: pd.DataFrame, unit: int) -> pd.Series:
    """Per request: the distinct ``unit``-byte blocks the lanes' bytes fall in."""
    first = df["address"] // unit
    last = (df["address"] + df["bytes"] - 1) // unit
    return pd.Series([set(range(a, b + 1)) for a, b in zip(first, last, strict=True)], index=df.index)


def warp_requests(loads: pd.DataFrame) -> pd.DataFrame:
    """One row per warp load instruction: active lanes, distinct table rows, distinct bytes requested, 32-byte sectors
    and 128-byte lines touched, and the sector efficiency (bytes requested / bytes in the sectors fetched)."""
    # lanes reading the same address in one instruction are served once (a broadcast): count it once
    d = loads.drop_duplicates(["layout", "warp", "instruction", "address"])
    d = d.assign(_sectors=_spans(d, SECTOR_BYTES), _lines=_spans(d, LINE_BYTES))
    g = d.groupby(["layout", "warp", "instruction"], sort=False)
    out = g.agg(rows=("row", "nunique"), bytes_requested=("bytes", "sum"),
                sectors=("_sectors", lambda s: len(set().union(*s))),
                lines=("_lines", lambda s: len(set().union(*s)))).reset_index()  # fmt: skip
    keys = ["layout", "warp", "instruction"]
    lanes = loads.groupby(keys, sort=False).size().rename("lanes").reset_index()
    out = lanes.merge(out, on=keys, how="left")
    out["efficiency"] = out["bytes_requested"] / (out["sectors"] * SECTOR_BYTES)
    return out


def transaction_summary(loads: pd.DataFrame) -> pd.DataFrame:
    """Per layout, for the whole batch: warp load instructions, sectors, lines, bytes requested and fetched,
    and per request: bytes, sectors, lines; the sector efficiency."""
    r = warp_requests(loads)
    s = r.groupby("layout", sort=False).agg(instructions=("instruction", "size"), sectors=("sectors", "sum"),
                                            lines=("lines", "sum"), bytes_requested=("bytes_requested", "sum"))
    s["bytes_fetched"] = s["sectors"] * SECTOR_BYTES
    s["bytes_per_request"] = s["bytes_requested"] / s["instructions"]
    s["sectors_per_request"] = s["sectors"] / s["instructions"]
    s["lines_per_request"] = s["lines"] / s["instructions"]
    s["efficiency"] = s["bytes_requested"] / s["bytes_fetched"]
    return s.reset_index()


# --- figures -----------------------------------------------------------------------------------------------


def _figure(width: float, height: float) -> Figure:
    return new_figure(width, height)


def plot_warp_request(loads: pd.DataFrame, dim: int = 128, element_bytes: int = 4, warp: int = 0,
                      instruction: int = 0) -> Figure:
    """One panel per layout: the table's rows (y) as their 32-byte sectors (x, 128-byte lines framed), the
    sectors that warp ``warp``'s load ``instruction`` touches filled and labelled with the lanes reading them."""
    layouts = list(dict.fromkeys(loads["layout"]))
    row_bytes = dim * element_bytes
    sectors_per_row = -(-row_bytes // SECTOR_BYTES)
    fig = _figure(min(4.2 * len(layouts) + 1, 14), 3.6)
    axes = fig.subplots(1, len(layouts), squeeze=False)[0]
    for ax, lay in zip(axes, layouts, strict=True):
        req = loads[(loads["layout"] == lay) & (loads["warp"] == warp) & (loads["instruction"] == instruction)]
        rows = list(dict.fromkeys(req.sort_values("lane")["row"]))  # in the order of the lanes reading them
        rows_shown = rows[:12]
        touched: dict[tuple[int, int], list[int]] = {}
        for r in req.itertuples():
            if r.row not in rows_shown:
                continue
            lo = (r.address - r.row * row_bytes) // SECTOR_BYTES
            hi = (r.address + r.bytes - 1 - r.row * row_bytes) // SECTOR_BYTES
            for s in range(lo, hi + 1):
                touched.setdefault((rows_shown.index(r.row), s), []).append(r.lane)
        for y in range(len(rows_shown)):
            for s in range(sectors_per_row):
                lanes = touched.get((y, s))
                ax.add_patch(Rectangle((s, y), 1, 1, facecolor=LAYOUT_COLORS[lay] if lanes else "white",
                                       edgecolor="0.8", linewidth=0.5))  # fmt: skip
                if lanes:
                    text = f"{min(lanes)}" if len(set(lanes)) == 1 else f"{min(lanes)}-\n{max(lanes)}"
                    ax.text(s + 0.5, y + 0.5, text, ha="center", va="center", fontsize=5.5, color="black")
            start = rows_shown[y] * row_bytes  # line boundaries are absolute: a row may start mid-line
            for b in range(sectors_per_row + 1):
                if (start + b * SECTOR_BYTES) % LINE_BYTES == 0:
                    ax.plot([b, b], [y, y + 1], color="black", linewidth=1.4)
        ax.set_xlim(0, sectors_per_row)
        ax.set_ylim(len(rows_shown), 0)
        ax.set_yticks([y + 0.5 for y in range(len(rows_shown))])
        ax.set_yticklabels([str(r) for r in rows_shown], fontsize=7)
        step = max(1, sectors_per_row // 4)
        ax.set_xticks(range(0, sectors_per_row + 1, step))
        ax.set_xticklabels([str(x * SECTOR_BYTES) for x in range(0, sectors_per_row + 1, step)], fontsize=7)
        ax.set_xlabel("byte offset in the row (cells: 32-B sectors; black: 128-B line boundaries)", fontsize=7)
        ax.set_ylabel("table row (in lane order)", fontsize=8)
        n_sec = len(set().union(*_spans(req, SECTOR_BYTES))) if len(req) else 0
        n_line = len(set().union(*_spans(req, LINE_BYTES))) if len(req) else 0
        more = f" (first 12 of {len(rows)} rows drawn)" if len(rows) > 12 else ""
        ax.set_title(f"{lay}: {int(req['bytes'].sum())} B requested\n{len(rows)} row(s), {n_sec} sectors, "
                     f"{n_line} line(s){more}", fontsize=8)  # fmt: skip
    fig.suptitle(f"What one warp's load instruction touches (warp {warp}, instruction {instruction}; numbers: lanes)",
                 fontsize=10)  # fmt: skip
    return fig


def plot_transactions(summary: pd.DataFrame) -> Figure:
    """Per layout: warp load instructions and 32-byte sectors to read the whole batch (left), and the bytes
    fetched against the bytes requested (right)."""
    fig = _figure(10, 3.6)
    ax1, ax2 = fig.subplots(1, 2)
    x = np.arange(len(summary))
    colors = [LAYOUT_COLORS.get(lay, "0.5") for lay in summary["layout"]]
    for ax, col, label in ((ax1, "instructions", "warp load instructions"), (ax1, "sectors", "32-B sectors")):
        off = -0.2 if col == "instructions" else 0.2
        bars = ax.bar(x + off, summary[col], 0.4, color=colors, hatch="" if col == "instructions" else "//",
                      edgecolor="white", label=label)  # fmt: skip
        ax.bar_label(bars, fontsize=7, padding=1)
    ax1.set_xticks(x)
    ax1.set_xticklabels(summary["layout"], fontsize=8)
    ax1.set_ylabel("count for the whole batch")
    ax1.set_title("Requests (plain) and sectors (hatched) to read the batch", fontsize=9)
    ax1.legend(fontsize=7)
    b1 = ax2.bar(x - 0.2, summary["bytes_requested"] / 1024, 0.4, color=colors, label="requested by the lanes")
    b2 = ax2.bar(x + 0.2, summary["bytes_fetched"] / 1024, 0.4, color=colors, hatch="//", edgecolor="white",
                 label="fetched (whole sectors)")  # fmt: skip
    ax2.bar_label(b1, fmt="%.0f", fontsize=7, padding=1)
    ax2.bar_label(b2, fmt="%.0f", fontsize=7, padding=1)
    ax2.set_xticks(x)
    ax2.set_xticklabels(summary["layout"], fontsize=8)
    ax2.set_ylabel("KiB for the whole batch")
    ax2.set_title("Bytes requested vs bytes moved", fontsize=9)
    ax2.legend(fontsize=7)
    return fig


# --- T2: Little's law ---------------------------------------------------------------------------------------

#: Bytes one warp's row-load instruction reads, per kernel family of ``results/*/profile.csv`` (T1: the paper's
#: per-feature layout reads 32 x 4 B; the fast kernel's 16-byte vectors read 32 x 16 B).
BYTES_PER_INSTRUCTION = {"paper": 128, "torch": 128, "fast": 512}


def kernel_family(kernel: str) -> str:
    """``paper``, ``torch`` or ``fast`` from a profiled kernel's name."""
    k = str(kernel)
    if k.startswith("EmbeddingBag"):
        return "torch"
    return "fast" if ("fused" in k or "fast" in k) else "paper"


def littles_law(bandwidth_gbps: float, latency_ns: float, sms: int = 132) -> dict:
    """Little's law for memory: bytes that must be in flight = bandwidth x latency (whole GPU and per SM)."""
    total = bandwidth_gbps * latency_ns  # GB/s x ns = bytes
    return {"bandwidth_gbps": bandwidth_gbps, "latency_ns": latency_ns, "bytes_in_flight": total,
            "bytes_in_flight_per_sm": total / sms}  # fmt: skip


def achievable_gbps(bytes_in_flight_per_sm, latency_ns: float, peak_gbps: float, sms: int = 132):
    """Bandwidth that ``bytes_in_flight_per_sm`` sustain at ``latency_ns``, capped at ``peak_gbps``."""
    return np.minimum(np.asarray(bytes_in_flight_per_sm, dtype=float) * sms / latency_ns, peak_gbps)


def in_flight_table(profile: pd.DataFrame, latency_ns: float, sms: int = 132, warps_per_sm: int = 64) -> pd.DataFrame:
    """Little's law read backwards from Nsight Compute profiles (``results/<gpu>/profile.csv``): per profiled
    launch, the bandwidth it achieved (bytes its lookups read / its GPU time), the bytes that must have been in
    flight per SM to sustain it at ``latency_ns``, the warps resident (achieved occupancy), and so how many
    row-load instructions each warp must have had in flight on average."""
    p = profile.copy()
    p["family"] = p["kernel"].map(kernel_family)
    tables = np.where(p["family"] == "fast", p["tables"], 1)  # the fast kernel serves every table at once
    p["bytes_read"] = tables * p["batch"] * p["pooling"] * p["dim"] * np.where(p["dtype"] == "float32", 4, 2)
    p["achieved_gbps"] = p["bytes_read"] / (p["gpu_time_us"] * 1e3)
    p["needed_bytes_per_sm"] = p["achieved_gbps"] * latency_ns / sms
    p["warps_per_sm"] = p["achieved_occupancy"] * warps_per_sm
    p["bytes_per_instruction"] = p["family"].map(BYTES_PER_INSTRUCTION)
    p["loads_in_flight_per_warp"] = p["needed_bytes_per_sm"] / (p["warps_per_sm"] * p["bytes_per_instruction"])
    cols = ["variant", "dataset", "family", "registers", "theoretical_occupancy", "achieved_occupancy",
            "warps_per_sm", "bytes_per_instruction", "gpu_time_us", "achieved_gbps", "dram_throughput_pct",
            "needed_bytes_per_sm", "loads_in_flight_per_warp", "stall_long_scoreboard_share"]  # fmt: skip
    return p[cols].reset_index(drop=True)


def plot_littles_law(table: pd.DataFrame, latency_ns: float, peak_gbps: float, sms: int = 132,
                     title: str = "", stamp: str = "") -> Figure:
    """The bandwidth Little's law allows for each number of bytes in flight per SM (curve, capped at
    ``peak_gbps``), with each profiled kernel placed at its achieved bandwidth and the bytes in flight that
    needs; a second axis marks what one load per resident warp would give."""
    fig = _figure(8.5, 4.2)
    ax = fig.add_subplot()
    x = np.linspace(0, max(64_000, float(table["needed_bytes_per_sm"].max()) * 1.3), 400)
    ax.plot(x / 1024, achievable_gbps(x, latency_ns, peak_gbps, sms), color="0.4",
            label=f"Little's law at {latency_ns:.0f} ns, capped at {peak_gbps:.0f} GB/s")  # fmt: skip
    knee = peak_gbps * latency_ns / sms
    ax.axvline(knee / 1024, color="0.6", ls=":", lw=1, label=f"knee: {knee / 1024:.1f} KiB in flight per SM")
    for r in table.itertuples():
        c = style.color(r.variant)
        ax.plot([r.needed_bytes_per_sm / 1024], [r.achieved_gbps], "o", color=c, ms=8, label=f"{r.variant} (needed)")
        one = r.warps_per_sm * r.bytes_per_instruction
        ax.plot([one / 1024], [r.achieved_gbps], "o", mfc="white", mec=c, mew=1.5, ms=8,
                label=f"{r.variant}: one load per resident warp")  # fmt: skip
        ax.annotate("", xy=(r.needed_bytes_per_sm / 1024, r.achieved_gbps), xytext=(one / 1024, r.achieved_gbps),
                    arrowprops={"arrowstyle": "->", "color": c, "lw": 0.8})  # fmt: skip
    ax.set_xlabel("bytes in flight per SM (KiB)")
    ax.set_ylabel("DRAM-side bandwidth (GB/s)")
    ax.set_ylim(0, peak_gbps * 1.5)
    ax.set_title(title or "Bytes in flight buy bandwidth until the memory system is full", fontsize=10)
    style.legend(ax)
    return style.finish(fig, stamp) if stamp else fig
