# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: jupyter,tags,-all
#     formats: ipynb,py:percent
#     main_language: python
#     notebook_metadata_filter: -all
# ---

# %% [markdown]
# # 02 — Why PyTorch's kernel is slow: occupancy and stalls
#
# The paper's characterisation: PyTorch's embedding-bag kernel runs at low occupancy, limited by registers,
# and its warps spend most of their time stalled on long-latency global loads ("long scoreboard"). Two claims
# of `dlrmlab reproduce`: `occupancy` (registers and theoretical occupancy from the compiled kernel and the
# occupancy calculator, achieved occupancy from Nsight Compute) and `stalls` (Nsight Compute's stall reasons).
# Registers need a GPU and stalls need `ncu` as well: in the simulator, `stalls` is skipped and says why.
#
# In the simulator (`tiny`) each claim runs its kernels on the tiny preset and checks their outputs; no
# timing is claimed there, and the figure says so. The CPU analyses (hotness, the occupancy calculator, the L2
# model) give real numbers in both modes. Every section ends with the same claim as measured on the H100,
# from the committed report when there is one, and from earlier H100 sweeps (`results/h100/*.csv`).
# Notebook T2 explains what the numbers mean (Little's law).

# %% tags=["parameters"]
PRESET = None  # "tiny" or "paper"; None picks tiny without a CUDA GPU, paper with one
DATASETS = None  # e.g. ["trace:medium", "random"]; None: the suite's (the artifact's traces where found, high, random)

# %%
from dlrmlab import explore

ctx = explore.claim_context(PRESET, DATASETS, "notebook 02_occupancy_and_stalls")
print(f"preset {ctx.preset}, datasets {ctx.datasets}, skipped {ctx.skipped_datasets}, {ctx.env['gpu']}")

# %% [markdown]
# ## Occupancy

# %%
res = explore.show_claim("occupancy", ctx)

# %% [markdown]
# The same claim in the report committed for the H100 (`results/h100/`, made with `dlrmlab reproduce --preset
# paper`):

# %%
explore.show_committed_claim("occupancy")

# %% [markdown]
# ## Stall reasons

# %%
res = explore.show_claim("stalls", ctx)

# %% [markdown]
# The same claim in the report committed for the H100 (`results/h100/`, made with `dlrmlab reproduce --preset
# paper`):

# %%
explore.show_committed_claim("stalls")

# %% [markdown]
# ## Earlier H100 measurements
#
# `results/h100/profile.csv` (Nsight Compute on an H100, 2026-11-26, uniform random ids): torch's own kernel,
# its Numba copy (`baseline`), OptMT and the fast kernel.

# %%
from dlrmlab.bench import ncu
from dlrmlab.bench.results import load_results
from dlrmlab.report import figures

prof = ncu.latest(load_results("../results/h100/profile.csv"))  # the newest capture of each kernel
prof = prof[(prof["dataset"] == "random") & prof["variant"].isin(["torch", "baseline", "optmt", "fast"])]
prof[["variant", "registers", "theoretical_occupancy", "achieved_occupancy", "occupancy_limiter", "gpu_time_us",
      "dram_throughput_pct", "stall_long_scoreboard_share"]].round(3)

# %%
shares = prof.melt(id_vars=["variant"], value_vars=[c for c in prof.columns if c.endswith("_share")],
                   var_name="reason", value_name="share")
shares["reason"] = shares["reason"].str.removeprefix("stall_").str.removesuffix("_share")
shares["kernel"] = shares["variant"]
figures.stall_bars(shares.dropna(), title="Long scoreboard dominates every kernel's stalls (H100, random ids)",
                   stamp="measured on an H100, 2026-11-26 (results/h100/profile.csv)")
