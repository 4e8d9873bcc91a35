# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: jupyter,tags,-all
#     formats: ipynb,py:percent
#     main_language: python
#     notebook_metadata_filter: -all
# ---

# %% [markdown]
# # 01 — The datasets, the embedding stage's share, and end-to-end DLRM
#
# The paper (Jain et al., MICRO 2024) finds the embedding stage the main bottleneck of DLRM inference on
# GPUs, and its techniques make whole-model inference up to 1.77x faster on an A100. Both depend on the data:
# how skewed the row ids are decides what any cache can keep. This notebook runs three claims of
# `dlrmlab reproduce` (`dlrmlab.report.claims`): `hotness`, `embedding_share` and `end_to_end`.
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

ctx = explore.claim_context(PRESET, DATASETS, "notebook 01_dlrm_and_datasets")
print(f"preset {ctx.preset}, datasets {ctx.datasets}, skipped {ctx.skipped_datasets}, {ctx.env['gpu']}")

# %% [markdown]
# ## Datasets: how skewed are the lookups?

# %%
res = explore.show_claim("hotness", ctx)

# %% [markdown]
# The same claim in the report committed for the H100 (`results/h100/`, made with `dlrmlab reproduce --preset
# paper`):

# %%
explore.show_committed_claim("hotness")

# %% [markdown]
# ## The embedding stage's share of a DLRM batch

# %%
res = explore.show_claim("embedding_share", ctx)

# %% [markdown]
# The same claim in the report committed for the H100 (`results/h100/`, made with `dlrmlab reproduce --preset
# paper`):

# %%
explore.show_committed_claim("embedding_share")

# %% [markdown]
# ## End-to-end speedup

# %%
res = explore.show_claim("end_to_end", ctx)

# %% [markdown]
# The same claim in the report committed for the H100 (`results/h100/`, made with `dlrmlab reproduce --preset
# paper`):

# %%
explore.show_committed_claim("end_to_end")

# %% [markdown]
# ## Earlier H100 measurements
#
# `results/h100/dlrm.csv` (measured on an H100, 2026-11-26): the DLRM model of the paper with its stages
# timed apart (CUDA events), eager PyTorch, batch 2048.

# %%
from dlrmlab.bench.results import load_results
from dlrmlab.report import figures, style

dlrm = load_results("../results/h100/dlrm.csv")
eager = dlrm[(dlrm["pipeline"] == "torch") & (dlrm["batch_size"] == 2048)].drop_duplicates("dataset", keep="last")
eager = eager.assign(label=eager["dataset"].map(style.dataset_label))
figures.stage_breakdown(eager, title="The embedding stage takes most of an eager PyTorch DLRM batch (H100)",
                        stamp="measured on an H100, 2026-11-26 (results/h100/dlrm.csv)")

# %%
speedups = dlrm[dlrm["batch_size"] == 2048].assign(label=lambda d: d["dataset"].map(style.dataset_label))
speedups.pivot_table(index="pipeline", columns="label", values="speedup_vs_torch", aggfunc="last").round(2)
