"""Helpers of the notebooks (which hold calls, prose and plots only).

* :func:`explore` — the ``explore`` notebook's one function behind its widgets: run a small benchmark of one
  variant with the knobs chosen (register cap, prefetch distance, hot-set size) beside PyTorch's kernel and
  torch, and draw what each knob does: the stage time (on a GPU; the simulator checks the outputs only), the
  warps and bytes in flight the register cap and prefetch distance allow (the occupancy calculator and
  Little's law, notebook T2), and the L2 hit rate the hot-set size buys (the CPU L2 model, notebook T3).
* :func:`claim_context` and :func:`committed_claim` — the claim notebooks' set-up, and the section of the
  committed report (``results/<gpu>/reproduce.json``) for the same claim, measured on a GPU.
"""

from __future__ import annotations

import json
import textwrap
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from dlrmlab import backend, device, l2model, occupancy, rules
from dlrmlab.bench import shapes
from dlrmlab.bench.results import load_results
from dlrmlab.bench.sweep import run_bench
from dlrmlab.errors import DlrmlabError
from dlrmlab.fused import configure_here
from dlrmlab.report import style
from dlrmlab.report.claims import CLAIMS
from dlrmlab.report.context import Context, resolve_datasets, resolve_preset, run_environment
from dlrmlab.reproduce import run_claim
from dlrmlab.variants import get
from dlrmlab.workload import Pooling, Workload, preset

#: Variants the explore notebook offers: those that run one table at a time in both modes, and the fast path.
EXPLORE_VARIANTS = ("baseline", "optmt", "rpf", "rpf_l1", "rpf_shared", "optmt_rpf", "l2p", "combined", "fast")
EXPLORE_DATASETS = ("medium", "low", "high", "random")
#: Little's law on the H100 (notebook T2): 3.35 TB/s x 600 ns over 132 SMs.
KNEE_BYTES_PER_SM = 3350 * 600 / 132
PAPER_WARP_LOAD, FAST_WARP_LOAD = 128, 512


def variant_params(variant: str, max_registers: int | None = None, prefetch_distance: int | None = None,
                   hot_rows: int | None = None) -> dict:
    """The knobs among these that ``variant`` takes (a cap of 0 or None means no cap; the prefetch distance only
    for variants that prefetch; the hot-set size only for pinning variants)."""
    v = get(variant)
    params: dict[str, Any] = {}
    prefetching = v.fixed.get("paper", {}).get("prefetch", "none") != "none"
    if max_registers and ("paper" in v.families or "fast" in v.families):
        params["max_registers"] = int(max_registers)
    if prefetch_distance and prefetching:
        params["prefetch_distance"] = int(prefetch_distance)
    if hot_rows and "pin" in v.families:
        params["hot_rows"] = int(hot_rows)
    return params


def in_flight(variant: str, registers: int, prefetch_distance: int, threads_per_block: int = 256) -> dict:
    """Warps per SM the register count allows (occupancy calculator) and the row bytes that many warps can keep
    in flight: one warp load per row in flight (1 + the prefetch distance for prefetching variants; 8 rows of
    512 B for the fast kernel, its shipped unroll)."""
    occ = occupancy.occupancy_table([int(registers)], threads_per_block).iloc[0]
    v = get(variant)
    if "fast" in v.families:
        per_warp, rows = FAST_WARP_LOAD, 8
    else:
        prefetching = v.fixed.get("paper", {}).get("prefetch", "none") != "none"
        per_warp, rows = PAPER_WARP_LOAD, 1 + (int(prefetch_distance) if prefetching else 0)
    warps = int(occ["warps_per_sm"])
    return {"registers": int(registers), "warps_per_sm": warps, "occupancy": float(occ["theoretical_occupancy"]),
            "bytes_per_warp_load": per_warp, "rows_in_flight": rows, "bytes_in_flight_per_sm": warps * per_warp * rows}


@lru_cache(maxsize=8)
def _trace(dataset: str, preset: str):
    stage, cfg, _ = l2model.teaching_setup(preset)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return l2model.Trace.from_workload(stage, dataset, seed=0, n_batches=2), cfg


def l2_hit_rates(dataset: str, hot_rows: int, preset: str = "tiny") -> pd.DataFrame:
    """The CPU L2 model's predicted hit rate and DRAM traffic of PyTorch's access order without pinning and with
    ``hot_rows`` rows pinned per table (``tiny``: the paper's workload and L2 at a quarter of the scale)."""
    trace, cfg = _trace(dataset, preset)
    pin = l2model.POLICIES["per-table+l2p"].with_(name=f"pin {int(hot_rows):,} rows/table", hot_rows=int(hot_rows))
    return l2model.hit_rate_table({dataset: trace}, ["per-table", pin], 512, cfg, warmup_batches=1)


def run_small(variant: str, params: dict, dataset: str = "medium", preset: str | None = None,
              repeats: int | None = None) -> pd.DataFrame:
    """Harness rows of ``variant`` (with ``params``) beside PyTorch's kernel (``baseline``) and torch, on
    ``dataset`` (in the simulator: outputs checked, one round, nothing timed)."""
    preset = preset or backend.default_preset()
    specs = [("baseline", {})] + ([(variant, params)] if variant != "baseline" or params else [])
    kw: dict[str, Any] = {"repeats": repeats or (1 if backend.SIMULATOR else 20)}
    if backend.SIMULATOR:
        kw.update(warmup_s=0.0, timing_mode="interleaved")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return run_bench(specs, [dataset], preset, n_batches=2, **kw).rows


def explore(variant: str = "rpf", max_registers: int = 0, prefetch_distance: int = 2, hot_rows: int = 15_000,
            dataset: str = "medium", preset: str | None = None, repeats: int | None = None) -> Figure:
    """Run and draw one configuration (see the module docstring); returns the figure (three panels)."""
    if variant not in EXPLORE_VARIANTS:
        raise DlrmlabError(f"unknown variant {variant!r} for explore; valid: {', '.join(EXPLORE_VARIANTS)}")
    preset = preset or backend.default_preset()
    params = variant_params(variant, max_registers, prefetch_distance, hot_rows)
    rows = run_small(variant, params, dataset, preset, repeats)
    fig = style.new_figure(13, 3.8)
    ax1, ax2, ax3 = fig.subplots(1, 3)

    # 1. stage time (GPU) or the correctness check (simulator)
    names = list(rows["variant"])
    timed = "timing_valid" in rows and bool(rows["timing_valid"].astype(bool).any())
    vals = rows["median_ms"].to_numpy(dtype=float) if timed else np.zeros(len(rows))
    bars = ax1.bar(range(len(rows)), vals, color=[style.color(n) for n in names])
    ax1.set_xticks(range(len(rows)))
    ax1.set_xticklabels(names, fontsize=8)
    ax1.set_ylabel("stage time per batch (ms)")
    if timed:
        ax1.bar_label(bars, fmt="%.3f", fontsize=7)
        ax1.set_title(f"{variant} {params or ''} on {style.dataset_label(rows['dataset'].iloc[0])}", fontsize=9)
    else:
        ax1.set_ylim(0, 1)
        ax1.set_yticks([])
        ok = rows["correct"].astype(bool)
        style.not_measured(ax1, f"{style.SIMULATOR_NOTE}\n{int(ok.sum())} of {len(rows)} outputs match the reference"
                                f"\n(largest rel. error {rows['max_rel_err'].max():.1e})")  # fmt: skip
        ax1.set_title(f"{variant} {params or ''}: outputs checked", fontsize=9)

    # 2. what the register cap and the prefetch distance allow (occupancy calculator + Little's law)
    regs = np.arange(16, 129)
    base = [in_flight(variant, r, prefetch_distance)["bytes_in_flight_per_sm"] / 1024 for r in regs]
    ax2.step(regs, base, where="post", color=style.color(variant), label=f"{variant}, distance {prefetch_distance}")
    chosen = int(max_registers) if max_registers else (64 if variant == "fast" else 45)
    me = in_flight(variant, chosen, prefetch_distance)
    ax2.plot([chosen], [me["bytes_in_flight_per_sm"] / 1024], "o", color="black", ms=7,
             label=f"{'cap' if max_registers else 'uncapped (H100)'}: {chosen} reg, {me['warps_per_sm']} warps")
    ax2.axhline(KNEE_BYTES_PER_SM / 1024, color="0.3", ls="--", lw=1, label="needed on an H100 (T2)")
    ax2.set_ylim(bottom=0)
    ax2.set_xlabel("registers per thread")
    ax2.set_ylabel("row bytes in flight per SM (KiB)")
    ax2.set_title("Warps x loads in flight (upper bound)", fontsize=9)
    ax2.legend(fontsize=7)

    # 3. the hot-set size in the L2 model
    l2 = l2_hit_rates(dataset, hot_rows)
    x = np.arange(len(l2))
    b1 = ax3.bar(x - 0.2, l2["hit_rate"] * 100, 0.4, color=[style.color("baseline"), style.color("l2p")])
    total = (l2["dram_bytes"] + l2["prefill_dram_bytes"]) / 1e6
    ax3b = ax3.twinx()
    b2 = ax3b.bar(x + 0.2, total, 0.4, color="white", edgecolor="0.3", hatch="//")
    ax3.bar_label(b1, fmt="%.0f%%", fontsize=7)
    ax3b.bar_label(b2, fmt="%.0f MB", fontsize=7)
    ax3.set_xticks(x)
    ax3.set_xticklabels(["no pinning", f"pin {int(hot_rows):,}/table"], fontsize=8)
    ax3.set_ylabel("predicted L2 hit rate (%)")
    ax3b.set_ylabel("DRAM reads incl. pin kernel (MB, hatched)")
    ax3.set_ylim(0, 105)
    ax3.set_title(f"L2 model, {style.dataset_label(dataset)} (quarter scale)", fontsize=9)
    return style.finish(fig, f"dlrmlab explore · {backend.mode()} · preset {preset}")


def show(**values: Any) -> None:
    """:func:`explore`, displayed (for ``ipywidgets.interactive_output``, which shows what its function displays)."""
    from IPython.display import display  # IPython: notebooks only

    display(explore(**values))


# --- the claim notebooks ---------------------------------------------------------------------------------------


def claim_context(preset: str | None = None, datasets: list[str] | None = None, command: str = "notebook") -> Any:
    """A :class:`dlrmlab.report.context.Context` for running claims from a notebook: ``preset`` None is ``tiny``
    without a GPU and ``paper`` with one; datasets as ``dlrmlab reproduce --datasets`` takes them."""
    usable, skipped = resolve_datasets(datasets)
    return Context(resolve_preset(preset), usable, skipped, env=run_environment(command))


def committed_claim(name: str, results_dir: str | Path = "../results/h100") -> tuple[str, Path | None]:
    """(markdown, figure path) of claim ``name``'s section in the report committed under ``results_dir``
    (``dlrmlab reproduce --preset paper`` on a GPU), or a note saying there is none yet."""
    d = Path(results_dir)
    try:
        manifest = json.loads((d / "reproduce.json").read_text())
    except (OSError, ValueError):
        return (f"*No committed report in `{d.name}/` yet: run `dlrmlab reproduce --preset paper --out results` on "
                "a GPU to make one.*", None)  # fmt: skip
    entry = manifest.get("claims", {}).get(name)
    if entry is None:
        return f"*The committed report in `{d.name}/` has no section `{name}`.*", None
    env = manifest.get("environment", {})
    where = f"{str(env.get('gpu', d.name)).split(' (')[0]}, {str(entry.get('date') or env.get('date', ''))[:10]}"
    text = "\n".join(line for line in entry.get("section", "").splitlines() if not line.startswith("!["))
    png = next((d / f for f in entry.get("files", []) if f.endswith(".png")), None)
    return f"**Measured on {where}** (committed report, preset {manifest.get('preset')}):\n\n{text}", png


def show_claim(name: str, ctx: Any) -> Any:
    """Run claim ``name`` as ``dlrmlab reproduce`` does and show, in a notebook, its verdict beside the paper's,
    its figure and its table; returns the result."""
    from IPython.display import Markdown, display  # IPython: notebooks only

    claim = CLAIMS[name]
    res, seconds = run_claim(claim, ctx)
    display(Markdown(f"**Paper (A100):** {claim.paper}. **Here:** {res.ours}. **Reproduced:** {res.reproduced}. "
                     f"({seconds:.0f} s)\n\n{res.text or res.error}"))  # fmt: skip
    if res.figure is not None:
        display(res.figure)
    display(res.data[res.key_columns] if res.key_columns else res.data)
    return res


def show_committed_claim(name: str, results_dir: str | Path = "../results/h100") -> None:
    """Show, in a notebook, claim ``name``'s section and figure from the committed report (:func:`committed_claim`)."""
    from IPython.display import Image, Markdown, display  # IPython: notebooks only

    text, png = committed_claim(name, results_dir)
    display(Markdown(text))
    if png:
        display(Image(str(png)))


# --- the shape picker: what the fused path chooses for a shape, and what the committed grid measured ---------

SHAPE_DIMS = (16, 32, 64, 128, 256, 512)
SHAPE_BATCHES = (128, 512, 2048, 4096, 16384, 32768)
#: Ids the picker offers: synthetic, so that it answers anywhere (a trace needs its file).
SHAPE_DATASETS = ("random", "medium", "high", "zipf:1.1")


def shape_choice(dim: int, batch: int, pooling: int, dataset: str = "random", dtype: str = "float32",
                 tables: int = 12, rows: int = 500_000, seed: int = 0) -> dict:
    """The layout and knobs ``fast_graph`` gives this shape on this GPU, as a fresh install would: the layout
    from one batch's hot share (:func:`dlrmlab.rules.choose_layout`), the knobs from the tuned table or the rule.
    Computed on the host from the ids alone: no kernel runs, so it answers at once, with or without a GPU."""
    stage = preset("paper", sparse_feature_size=int(dim), batch_size=int(batch), pooling=Pooling("fixed", pooling),
                   dtype=dtype, tables=int(tables), rows=int(rows))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ids = [t.indices for t in Workload(stage, dataset, seed).batch().tables]
    lim = device.limits()
    choice = rules.choose_layout(ids, stage.embedding_dim * stage.element_bytes, lim["persisting_l2_max_bytes"],
                                 pooling_mean=float(pooling))
    cfg, source = configure_here(stage.embedding_dim, dtype, float(pooling), split_hot=choice.split_hot)
    keys = ("split", "bags_per_block", "unroll", "chunk", "max_registers", "lanes", "vectors", "threads")
    return {**choice.params(), "config_source": source, **{k: cfg.params()[k] for k in keys}}


def explore_shape(dim: int = 128, batch: int = 2048, pooling: int = 150, dataset: str = "random",
                  results_dir: str | Path = "../results/h100") -> Figure:
    """The shape picker's figure: the configuration :func:`shape_choice` gives (as text) above the committed
    grid's heatmap (``shapes_grid.csv`` of ``results_dir``), where it exists."""
    c = shape_choice(dim, batch, pooling, dataset)
    grid = Path(results_dir) / "shapes_grid.csv"
    head = (f"width {dim}, batch {batch}, pooling {pooling}, {style.dataset_label(dataset)}: {c['layout']} rows "
            f"({c['layout_reason']}); knobs from {c['config_source']}: {c['split']} lane group(s) of {c['lanes']} "
            f"per bag, {c['bags_per_block']} bag(s) per block, {c['unroll']} rows in flight, {c['threads']} threads")
    if grid.exists():
        fig = shapes.heatmap(shapes.summary(load_results(grid)), stamp=f"committed grid: {grid.parent.name}")
    else:
        fig = style.finish(style.new_figure(11, 1.5), "dlrmlab explore")
    # the choice as the title's first lines (constrained layout makes room for a title, not for free text)
    grid_title = fig.get_suptitle()
    fig.suptitle("\n".join(textwrap.wrap(head, 150)) + (f"\n\n{grid_title}" if grid_title else ""), fontsize=8)
    return fig


def show_shape(**values: Any) -> None:
    """:func:`explore_shape`, displayed (for ``ipywidgets.interactive_output``)."""
    from IPython.display import display

    display(explore_shape(**values))
