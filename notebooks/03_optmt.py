# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: jupyter,tags,-all
#     formats: ipynb,py:percent
#     main_language: python
#     notebook_metadata_filter: -all
# ---

# %% [markdown]
# # 03 — OptMT: capping registers for occupancy
#
# OptMT compiles PyTorch's kernel with a register cap (the artifact: `-maxrregcount 42`) so that more warps
# fit on an SM: up to 1.53x faster on an A100. The claim `optmt` sweeps the cap
# (`dlrmlab.tune.tune_register_cap`, as `dlrmlab tune optmt` does) and compares kernel times.
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

ctx = explore.claim_context(PRESET, DATASETS, "notebook 03_optmt")
print(f"preset {ctx.preset}, datasets {ctx.datasets}, skipped {ctx.skipped_datasets}, {ctx.env['gpu']}")

# %% [markdown]
# ## The register-cap sweep

# %%
res = explore.show_claim("optmt", ctx)

# %% [markdown]
# The same claim in the report committed for the H100 (`results/h100/`, made with `dlrmlab reproduce --preset
# paper`):

# %%
explore.show_committed_claim("optmt")

# %% [markdown]
# ## Earlier H100 measurements
#
# `results/h100/tune_optmt.csv` (`dlrmlab tune optmt`, H100, 2026-11-26): registers, occupancy and kernel
# time per cap. Notebook T2 (section 2) draws these and explains why 1.6x the warps gave about 3%.

# %%
from dlrmlab.bench.results import load_results
from dlrmlab.report import style

optmt = load_results("../results/h100/tune_optmt.csv")
optmt = optmt.assign(label=optmt["dataset"].map(style.dataset_label), cap=optmt["max_registers"].fillna(0))
optmt.pivot_table(index=["cap", "registers", "theoretical_occupancy"], columns="label", values="kernel_ms").round(3)
