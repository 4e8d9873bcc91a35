# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: jupyter,tags,-all
#     formats: ipynb,py:percent
#     main_language: python
#     notebook_metadata_filter: -all
# ---

# %% [markdown]
# # T4 — The memory hierarchy: L2, HBM, host memory, and one skew curve
#
# Notebook T3 asked which embedding rows earn a place in the GPU's 50 MiB of L2. This one asks the same
# question one and two levels down:
#
# | level | size (H100) | rate | who decides what lives there |
# |---|---|---|---|
# | L2 | 50 MiB | several TB/s | the hardware (LRU-like), a persisting window, a pin kernel |
# | HBM | 80 GB | about 3 TB/s | the program: tables that fit, or a **cache** of a larger table's hot rows |
# | host memory | 128 GiB here, TBs on servers | the host link: tens of GB/s | everything that does not fit above |
#
# When the tables are larger than the GPU's memory (the 61 GB of this notebook's full size would leave an
# 80 GB GPU little room for anything else; real models are terabytes), they live in host memory, and an
# HBM cache keeps the hot rows close, as FBGEMM's `MANAGED_CACHING` does. dlrmlab's placements:
#
# * `device`: the tables in HBM (everything before this notebook);
# * `host`: the tables in pinned host memory mapped into the GPU's address space; the kernel reads every
#   row over the host link (zero-copy);
# * `cached`: the host tables plus an HBM cache (set-associative, LRU or LFU). For each batch the ids are
#   looked up in the cache on the GPU (torch tensor ops), the missed rows fetched into it, and the kernel
#   reads every row from HBM. With the pipeline, batch i+1's rows are fetched while batch i computes.
#
# The question at every level is the same: how much of the lookups do the hottest rows take? One curve,
# the **skew curve**, answers it for all three. Everything here runs on the CPU (the cache's decisions
# are the same code the GPU path runs); only the bandwidth figures come from a GPU.

# %% tags=["parameters"]
PRESET = None  # "tiny" or "paper"; None picks tiny without a CUDA GPU, paper with one

# %%
import matplotlib.pyplot as plt
import pandas as pd

from dlrmlab import hostbench, l2model

stage, n_batches, levels, setup_note = hostbench.teaching_setup(PRESET)
row_bytes = stage.embedding_dim * stage.element_bytes
print(setup_note)
pd.Series({k: f"{v / 2**20:,.1f} MiB" for k, v in levels.items()}, name="capacity")

# %% [markdown]
# ## 1. One skew curve
#
# The datasets: uniform **random** ids, a Zipf distribution with exponent 1.05, and the paper's
# **medium**-reuse trace (the real one when `DLRMLAB_DATA_DIR` holds it, else the synthetic stand-in
# calibrated to it). Trace ids (under 500,000) are spread over the larger tables by a fixed bijection:
# the same reuse, scattered through each table.

# %%
datasets, data_note = l2model.teaching_datasets()
print(data_note)
specs = {"random": "random", "zipf:1.05": "zipf:1.05", "medium": next(v for k, v in datasets.items() if "medium" in k)}
batches = {name: hostbench.make_batches(stage, spec, n_batches)[0] for name, spec in specs.items()}
curves = {name: hostbench.skew_curve(b[-1].table(0).indices, row_bytes) for name, b in batches.items()}

fig, ax = plt.subplots(figsize=(8, 3.6))
for name, c in curves.items():
    ax.plot(c["bytes"] * stage.num_tables, c["share"], label=name)
for i, (level, cap) in enumerate(levels.items()):
    ax.axvline(cap, color=f"C{i + 3}", linestyle="--", linewidth=1)
    ax.text(cap, 0.02 + 0.09 * i, f" {level}", fontsize=8, color=f"C{i + 3}")
ax.set_xscale("log")
ax.set_xlabel("bytes of the hottest rows (all tables)")
ax.set_ylabel("share of one batch's lookups")
ax.set_title("The skew curve, read at each level's capacity")
ax.legend(loc="upper left")
plt.show()

# %% [markdown]
# Read each dashed line where it crosses a curve: that is the share of the lookups a level *could* serve
# if it held exactly the hottest rows. The L2 holds almost nothing of random ids or of the medium trace,
# about half of Zipf 1.05's; an HBM cache of 1% of the tables holds most of Zipf's lookups, the medium
# trace needs 10% to 30%. Real caches do not know the hottest rows in advance: they learn them from the
# stream (LRU keeps what was used recently, LFU what was used often). The table reads the same curve
# against an LRU cache of each size:

# %%
hier = pd.concat([hostbench.hierarchy_table(stage, b, levels).assign(dataset=name) for name, b in batches.items()])
hier.pivot(index="level", columns="dataset", values=["skew_curve_share", "lru_hit_rate"]).loc[list(levels)].round(3)

# %% [markdown]
# ## 2. The HBM cache: LRU against LFU, measured against predicted
#
# Now the cache itself (`dlrmlab.hbmcache`): 32-way sets, one cache per table, a budget from 1% to 30% of
# the tables, the pipeline's locking (the ways of the batch in flight are never evicted). It runs its
# decisions only, on the CPU: the same torch code the GPU runs, so the counters are exactly what the GPU
# run counts. Beside them, the LRU model (the L2 model's core, one row per line), the LFU model (the
# hottest rows, less the first fetch of each) and the skew curve at the cache's size.

# %%
budgets = [0.01, 0.03, 0.1, 0.3]
sweep = pd.concat([hostbench.hit_rate_sweep(stage, b, budgets).assign(dataset=name) for name, b in batches.items()])
sweep[["dataset", "budget", "policy", "hit_rate", "resident_rate", "predicted_hit_rate_lru", "predicted_hit_rate_lfu",
       "skew_curve_hit_rate", "evictions", "staged"]].round(3)

# %%
fig, axes = plt.subplots(1, len(batches), figsize=(12, 3.4), sharey=True)
for ax, (name, df) in zip(axes, sweep.groupby("dataset", sort=False), strict=True):
    for policy, d in df.groupby("policy"):
        ax.plot(d["budget"] * 100, d["hit_rate"], marker="o", label=f"cache, {policy}")
    d = df[df["policy"] == "lru"]
    ax.plot(d["budget"] * 100, d["predicted_hit_rate_lru"], linestyle="--", label="LRU model")
    ax.plot(d["budget"] * 100, d["predicted_hit_rate_lfu"], linestyle="-.", label="LFU model")
    ax.plot(d["budget"] * 100, d["skew_curve_hit_rate"], linestyle=":", color="k", label="skew curve")
    ax.set_xscale("log")
    ax.set_title(name)
    ax.set_xlabel("cache budget (% of the tables)")
axes[0].set_ylabel("lookups served without a fetch")
axes[0].legend(fontsize=8)
plt.show()

# %% [markdown]
# `hit_rate` counts what a cache simulator counts: every lookup but the first of each missed row.
# `resident_rate` counts only rows that were in the cache before the batch began. `staged` rows missed
# and found every way of their set in use by the two batches in flight, so they were fetched into a
# staging area for this batch only: a cache smaller than two batches' distinct rows cannot hold them.

# %% [markdown]
# ## 3. What a hit rate is worth: the host link
#
# A hit costs a read from HBM; a miss costs a fetch over the host link *and* the read. With a share `h` of
# hits, the best effective bandwidth is
#
# $$ \frac{B}{B / \text{HBM rate} + (1-h)\,B / \text{host rate}} \qquad (B: \text{the bytes looked up}) $$
#
# and the host link is some fifty times slower than HBM: the misses dominate long before `h` is small.

# %%
rates, rates_note = hostbench.measured_rates()
print(rates_note, rates)
fig, ax = plt.subplots(figsize=(7, 3.4))
for name, df in sweep[sweep["policy"] == "lru"].groupby("dataset", sort=False):
    ax.plot(df["budget"] * 100, hostbench.bound_gbps(df["hit_rate"], rates["hbm"], rates["host"]), marker="o",
            label=name)
ax.axhline(rates["hbm"], color="k", linestyle="--", linewidth=1, label="all from HBM")
ax.axhline(rates["host"], color="tab:red", linestyle="--", linewidth=1, label="all over the host link")
ax.set_xscale("log")
ax.set_yscale("log")
ax.set_xlabel("cache budget (% of the tables)")
ax.set_ylabel("best effective GB/s")
ax.set_title("The bound of a cached placement")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# On a GPU, `dlrmlab host-tables` measures all of this for real: the host link's rates (bulk copies and
# zero-copy gathers of 128- to 1024-byte rows), then every placement and budget on 61 GB of host tables,
# each run's effective GB/s beside this bound (`results/h100/host_tables.csv` when it has been run).
#
# ## Exercises
#
# 1. Uniform ids over a table of R rows, a cache of C rows: what hit rate do you expect? Check it against
#    the `random` rows of the sweep. Why does the skew curve promise much more for the same ids?
# 2. At a 10% budget, what hit rate would the Zipf data need for the bound to reach half the HBM rate?
#    (Solve the formula above for `h`.)
# 3. LFU beats LRU only by a little here. When would it win clearly? Think about a batch that touches
#    many rows once (a scan) between two batches of the usual hot rows.

# %% [markdown] jupyter={"source_hidden": true}
# **Answers**
#
# 1. About C / R: every row is equally likely, so a cache of any C rows holds C / R of the lookups (0.10
#    at a 10% budget; `resident_rate` shows it, `hit_rate` adds the repeats of a row within the batch that
#    fetched it). The skew curve is read from the same few batches it is scored on: it knows in advance
#    which rows those batches happen to repeat, and with fewer lookups than rows, rows drawn twice by
#    chance look hot. It is an oracle's bound, not a cache; with skewed ids the two come closer, because
#    the hot rows are hot in every batch.
# 2. Half the HBM rate means 1/HBM + (1-h)/host = 2/HBM, so 1 - h = host/HBM: with 64 and 3,350 GB/s,
#    h ≈ 0.981. Only very skewed ids (or very large budgets) get there: the host link is the bottleneck of
#    every cached placement, so a miss is worth ~50 hits.
# 3. LRU lets a scan of one-off rows evict the hot set, which then misses again on the next batch; LFU
#    keeps rows with many lookups and evicts the scan's rows first (each counted once). Streams whose hot
#    set is stable but interrupted by cold traffic favour LFU; streams whose hot set drifts favour LRU
#    (LFU's old counts keep stale rows).
