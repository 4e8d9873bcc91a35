# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: jupyter,tags,-all
#     formats: ipynb,py:percent
#     main_language: python
#     notebook_metadata_filter: -all
# ---

# %% [markdown]
# # The fast path: one launch for every table, at the memory roofline
#
# The paper keeps PyTorch's kernel and tunes around it. dlrmlab's fast path changes the kernel
# (`dlrmlab/kernels/fused.py`) and how it is launched (`dlrmlab/fused.py`):
#
# * **one launch for all 12 tables** (the tables packed in one buffer, the bags of all tables one list),
#   instead of 12 launches, and optionally **replayed from a CUDA graph** (`fast_graph`), so the CPU's cost of
#   launching is off the critical path;
# * **16-byte vector loads**: a lane loads 4 fp32 values, a warp a whole 512-byte row per instruction (T1);
# * **rows in flight**: each lane issues the loads of 8 rows before adding any (T2), ids staged in shared
#   memory.
#
# Two questions: how close does it get to the **roofline** (the bytes a batch must move divided by the
# memory bandwidth), and how much of a stage is **launch overhead**?

# %% tags=["parameters"]
PRESET = None  # "tiny" or "paper"; None picks tiny without a CUDA GPU, paper with one

# %%
import matplotlib.pyplot as plt
import pandas as pd

from dlrmlab import backend
from dlrmlab.bench import format_table, run_bench
from dlrmlab.bench.results import load_results
from dlrmlab.fused import configure_here
from dlrmlab.report import style
from dlrmlab.variants import why_not_here
from dlrmlab.workload import preset

PRESET = PRESET or backend.default_preset()
stage = preset(PRESET)
cfg, source = configure_here(stage.embedding_dim, stage.dtype, stage.pooling.mean)
print(f"preset {PRESET}: {stage.num_tables} tables, dim {stage.embedding_dim}; fast kernel configuration ({source}):")
pd.Series(cfg.params())

# %% [markdown]
# ## 1. Run it here
#
# The fast path beside PyTorch's kernel (`baseline`, one launch per table) and torch, on uniform random ids.
# In the simulator this checks the outputs (CUDA graphs need a GPU); on a GPU it also times them, and the
# figures below draw this machine's numbers instead of the H100's.

# %%
variants = [v for v in ["baseline", "fast", "fast_graph"] if not why_not_here(v)]
live = run_bench(variants, ["random"], PRESET, repeats=1 if backend.SIMULATOR else None,
                 warmup_s=0.0 if backend.SIMULATOR else None)
print(format_table(live.rows))
timed_here = bool(live.rows["timing_valid"].astype(bool).any())
if timed_here:
    rows, where = live.rows, f"measured here ({live.rows['gpu_name'].iloc[0]})"
else:
    h100 = load_results("../results/h100/fast.csv")
    rows = h100[(h100["dataset"] == "random") & ~h100["cold_l2"].astype(bool)]
    where = "measured on an H100, 2026-11-26 (results/h100/fast.csv, 3 repeats)"
print(where)

# %% [markdown]
# ## 2. The roofline
#
# A batch must read every looked-up row once and write the output once: `stage.bytes_per_batch()` (for the
# `paper` preset 12 x 2048 x 150 rows of 512 B, 1.9 GB). No kernel can do that faster than the memory
# moves it. Two ceilings: the **copy bandwidth** `dlrmlab.bench` measures with a device-to-device copy
# (`copy_gbps`; a copy reads *and* writes, so a gather that mostly reads, with some L2 hits, can pass it) and
# the datasheet's DRAM peak (H100 SXM: 3.35 TB/s).

# %%
variant_order = ["torch", "baseline", "optmt", "rpf", "fast", "fast_graph"]
med = rows.groupby("variant")[["median_ms", "host_ms", "effective_gbps", "copy_gbps", "bytes_requested"]].median()
med = med.reindex([v for v in variant_order if v in med.index])
bytes_per_batch = float(med["bytes_requested"].iloc[0])
copy_floor_ms = bytes_per_batch / (med["copy_gbps"].median() * 1e9) * 1e3
peak_floor_ms = bytes_per_batch / 3350e9 * 1e3
med.assign(x_roofline_copy=med["median_ms"] / copy_floor_ms).round(3)

# %%
fig, ax = plt.subplots(figsize=(8, 3.6), layout="constrained")
ax.barh(med.index, med["median_ms"], color=[style.color(v) for v in med.index])
for y, v in enumerate(med["median_ms"]):
    ax.text(v, y, f" {v:.2f} ms ({v / copy_floor_ms:.1f}x)", va="center", fontsize=8)
ax.axvline(copy_floor_ms, color="black", ls="--", lw=1.2,
           label=f"roofline at the copy bandwidth ({med['copy_gbps'].median() / 1e3:.2f} TB/s): {copy_floor_ms:.2f} ms")
ax.axvline(peak_floor_ms, color="black", ls=":", lw=1.2,
           label=f"roofline at the DRAM peak (3.35 TB/s): {peak_floor_ms:.2f} ms")
ax.invert_yaxis()
ax.set_xlim(0, med["median_ms"].max() * 1.35)
ax.set_xlabel(f"stage time per batch (ms), {bytes_per_batch / 1e9:.2f} GB moved")
best, ref = med["median_ms"].idxmin(), "torch" if "torch" in med.index else med.index[0]
ax.set_title(f"{best} runs at {med.loc[best, 'median_ms'] / peak_floor_ms:.2f}x the DRAM-peak roofline, "
             f"{ref} at {med.loc[ref, 'median_ms'] / peak_floor_ms:.1f}x", fontsize=10)
ax.legend(fontsize=8, loc="lower right")
fig.text(0.99, -0.02, where, ha="right", fontsize=7, color="0.45")
plt.show()

# %% [markdown]
# ## 3. Launch overhead, made visible
#
# The stage time (CUDA events around the whole stage) includes the time the CPU takes to launch it. `host_ms`
# is that CPU time: Python, Numba's argument handling and the driver, per stage. One launch per table costs
# 12 of them; the fast kernel one; a CUDA graph replays the whole stage with one call.

# %%
fig, ax = plt.subplots(figsize=(8, 3.4), layout="constrained")
y = range(len(med))
ax.barh([i - 0.2 for i in y], med["median_ms"], 0.4, color=[style.color(v) for v in med.index],
        label="stage time (GPU events)")
ax.barh([i + 0.2 for i in y], med["host_ms"], 0.4, color="white", edgecolor=[style.color(v) for v in med.index],
        hatch="//", label="host time to launch it (CPU)")
for i, (s, h) in enumerate(zip(med["median_ms"], med["host_ms"], strict=True)):
    ax.text(h, i + 0.2, f" {h:.3f} ms ({h / s:.0%} of the stage)", va="center", fontsize=8)
ax.set_yticks(list(y))
ax.set_yticklabels(med.index)
ax.invert_yaxis()
ax.set_xlim(0, med["median_ms"].max() * 1.45)
ax.set_xlabel("time per batch (ms)")
ax.set_title("A CUDA graph takes the launch cost off the critical path", fontsize=10)
ax.legend(fontsize=8, loc="lower right")
fig.text(0.99, -0.02, where, ha="right", fontsize=7, color="0.45")
plt.show()

# %% [markdown]
# When the host time approaches the stage time, the GPU waits for the CPU between launches: the fused
# kernel's plain launch (`fast`) costs a few tenths of a millisecond of Python and driver time per batch,
# a quarter to a third of its stage; replayed from a graph (`fast_graph`) that drops to about 0.01 ms,
# and the stage time falls to the roofline. PyTorch's kernel in Numba (`baseline`) pays 12 launches.
#
# Per-run spread of the same comparison (every timed batch, `results/h100/fast_runs.csv`):

# %%
runs = load_results("../results/h100/fast_runs.csv")
runs = runs[(runs["dataset"] == "random") & runs["variant"].isin(["baseline", "fast", "fast_graph"])]
fig, ax = plt.subplots(figsize=(8, 3.2), layout="constrained")
for v, grp in runs.groupby("variant"):
    ax.scatter(grp["host_ms"], grp["stage_ms"], s=6, alpha=0.5, color=style.color(v),
               marker="o" if v != "fast_graph" else "^", label=v)
ax.set_xlabel("host time to launch the stage (ms)")
ax.set_ylabel("stage time (ms)")
ax.set_xlim(left=0)
ax.set_ylim(bottom=0)
ax.set_title("Each timed batch on the H100: launch cost against stage time (random ids)", fontsize=10)
ax.legend(fontsize=8)
plt.show()
