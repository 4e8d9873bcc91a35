# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: jupyter,tags,-all
#     formats: ipynb,py:percent
#     main_language: python
#     notebook_metadata_filter: -all
# ---

# %% [markdown]
# # 05 — L2P: pinning the hot rows in L2
#
# L2P runs a small kernel before each embedding kernel that prefetches the 60K hottest rows with
# `prefetch.global.L2::evict_last`, hoping they stay in L2. The artifact timed the embedding kernel alone, so the
# pin kernel's cost was not counted. The claim `l2p` reports it three ways: cost excluded (kernel time, as the
# artifact), included (stage time), and amortised (pinned every 4th batch), with the L2 model's predicted hit
# rates beside (notebook T3 explains the model).
#
# In the simulator (`tiny`) each claim runs its kernels on the tiny preset and checks their outputs; no
# timing is claimed there, and the figure says so. The CPU analyses (hotness, the occupancy calculator, the L2
# model) give real numbers in both modes. Every section ends with the same claim as measured on the H100,
# from the committed report when there is one, and from earlier H100 sweeps (`results/h100/*.csv`).

# %% tags=["parameters"]
PRESET = None  # "tiny" or "paper"; None picks tiny without a CUDA GPU, paper with one
DATASETS = None  # e.g. ["trace:medium", "random"]; None: the suite's (the artifact's traces where found, high, random)

# %%
from dlrmlab import explore

ctx = explore.claim_context(PRESET, DATASETS, "notebook 05_l2p")
print(f"preset {ctx.preset}, datasets {ctx.datasets}, skipped {ctx.skipped_datasets}, {ctx.env['gpu']}")

# %% [markdown]
# ## Pinning, with and without its cost

# %%
res = explore.show_claim("l2p", ctx)

# %% [markdown]
# The same claim in the report committed for the H100 (`results/h100/`, made with `dlrmlab reproduce --preset
# paper`):

# %%
explore.show_committed_claim("l2p")

# %% [markdown]
# ## Earlier H100 measurements
#
# `results/h100/amortise.csv` (H100, 2026-11-26): `l2p` pinned every batch and every 8th batch
# (`pin_every`), stage and kernel time, beside torch.

# %%
from dlrmlab.bench.results import load_results
from dlrmlab.report import style

am = load_results("../results/h100/amortise.csv")
am = am.assign(label=am["dataset"].map(style.dataset_label), pin_every=am.get("param_pin_every"))
am[["label", "variant", "pin_every", "median_ms", "kernel_ms", "speedup_vs_torch"]].round(3)
