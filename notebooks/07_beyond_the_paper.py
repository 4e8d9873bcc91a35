# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: jupyter,tags,-all
#     formats: ipynb,py:percent
#     main_language: python
#     notebook_metadata_filter: -all
# ---

# %% [markdown]
# # 07 — Beyond the paper: the L2 window, the fast path, cuEmbed
#
# What the paper did not try: a persisting L2 **access-policy window** over frequency-ranked rows (the hot
# rows made contiguous), the **fused one-launch path** (all tables in one kernel, 16-byte loads, rows in
# flight; notebook `fast_path`), and NVIDIA's **cuEmbed** beside them. The claim `beyond` times them against
# torch's `embedding_bag` (whole stage), with the L2 model's predicted hit rates for the window.
#
# In the simulator (`tiny`) each claim runs its kernels on the tiny preset and checks their outputs; no
# timing is claimed there, and the figure says so. The CPU analyses (hotness, the occupancy calculator, the L2
# model) give real numbers in both modes. Every section ends with the same claim as measured on the H100,
# from the committed report when there is one, and from earlier H100 sweeps (`results/h100/*.csv`).
# Windows, CUDA graphs and cuEmbed need a GPU; the simulator runs the fast path only.

# %% tags=["parameters"]
PRESET = None  # "tiny" or "paper"; None picks tiny without a CUDA GPU, paper with one
DATASETS = None  # e.g. ["trace:medium", "random"]; None: the suite's (the artifact's traces where found, high, random)

# %%
from dlrmlab import explore

ctx = explore.claim_context(PRESET, DATASETS, "notebook 07_beyond_the_paper")
print(f"preset {ctx.preset}, datasets {ctx.datasets}, skipped {ctx.skipped_datasets}, {ctx.env['gpu']}")

# %% [markdown]
# ## Window, fast path and cuEmbed against torch

# %%
res = explore.show_claim("beyond", ctx)

# %% [markdown]
# The same claim in the report committed for the H100 (`results/h100/`, made with `dlrmlab reproduce --preset
# paper`):

# %%
explore.show_committed_claim("beyond")

# %% [markdown]
# ## Earlier H100 measurements
#
# `results/h100/peers.csv` (H100, 2026-11-26, serving-loop timing, shipped fast-kernel configuration):

# %%
from dlrmlab.bench.results import load_results
from dlrmlab.report import figures, style

peers = load_results("../results/h100/peers.csv")
peers = peers.assign(label=peers["dataset"].map(style.dataset_label))
order = ["fast_graph", "fast_graph+window", "cuembed_graph"]
table = peers.pivot_table(index="label", columns="variant", values="speedup_vs_torch", aggfunc="median")[order]
figures.speedup_bars(table, {v: style.bar_style(v) for v in order},
                     title="The fast path in a CUDA graph against cuEmbed, both against torch (H100)",
                     ylabel="speedup over torch's embedding_bag, stage time (x)", unity="torch (1x)",
                     stamp="measured on an H100, 2026-11-26 (results/h100/peers.csv)")

# %%
table.round(2)
