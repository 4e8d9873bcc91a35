# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: jupyter,tags,-all
#     formats: ipynb,py:percent
#     main_language: python
#     notebook_metadata_filter: -all
# ---

# %% [markdown]
# # 04 — RPF: software prefetching
#
# RPF (register prefetching) loads the rows a thread will add next while it adds the current one: distance
# 2 in the paper, which also tried prefetching into L1 (`prefetch.global.L1`) and staging rows in shared
# memory. The claim `rpf` sweeps the distance and compares the three kinds against PyTorch's kernel.
#
# In the simulator (`tiny`) each claim runs its kernels on the tiny preset and checks their outputs; no
# timing is claimed there, and the figure says so. The CPU analyses (hotness, the occupancy calculator, the L2
# model) give real numbers in both modes. Every section ends with the same claim as measured on the H100,
# from the committed report when there is one, and from earlier H100 sweeps (`results/h100/*.csv`).
# Notebook T2 explains the idea (loads in flight per warp).

# %% tags=["parameters"]
PRESET = None  # "tiny" or "paper"; None picks tiny without a CUDA GPU, paper with one
DATASETS = None  # e.g. ["trace:medium", "random"]; None: the suite's (the artifact's traces where found, high, random)

# %%
from dlrmlab import explore

ctx = explore.claim_context(PRESET, DATASETS, "notebook 04_rpf")
print(f"preset {ctx.preset}, datasets {ctx.datasets}, skipped {ctx.skipped_datasets}, {ctx.env['gpu']}")

# %% [markdown]
# ## Prefetch kind and distance

# %%
res = explore.show_claim("rpf", ctx)

# %% [markdown]
# The same claim in the report committed for the H100 (`results/h100/`, made with `dlrmlab reproduce --preset
# paper`):

# %%
explore.show_committed_claim("rpf")

# %% [markdown]
# ## Earlier H100 measurements
#
# `results/h100/reproduce.csv` (H100, 2026-11-26, interleaved timing): kernel time of the prefetching
# variants against PyTorch's kernel (`baseline`), per dataset.

# %%
from dlrmlab.bench.results import load_results
from dlrmlab.report import style

rows = load_results("../results/h100/reproduce.csv")
rows = rows[rows["variant"].isin(["baseline", "rpf", "rpf_l1", "rpf_shared", "optmt_rpf"])]
rows = rows.assign(label=rows["dataset"].map(style.dataset_label))
kernel = rows.pivot_table(index="variant", columns="label", values="kernel_ms", aggfunc="median")
(kernel.loc["baseline"] / kernel).round(2)  # speedup over PyTorch's kernel, kernel time
