# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: jupyter,tags,-all
#     formats: ipynb,py:percent
#     main_language: python
#     notebook_metadata_filter: -all
# ---

# %% [markdown]
# # 08 — Beyond one GPU: sharding the embedding stage
#
# The paper's 12 tables of 500K rows (3 GB) fit one GPU. Production tables hold tens of millions of rows
# each: 12 x 40M rows x 128 fp32 is 246 GB, more than three H100s hold. Then the tables are **sharded**
# over GPUs, as TorchRec does: a table whole on one GPU (`table_wise`), its rows split (`row_wise`), its
# columns split (`column_wise`), or copied everywhere (`data_parallel`). Ids travel to the GPUs that hold
# their rows and pooled embeddings travel back (all-to-all; row-wise partial sums by reduce-scatter).
#
# This notebook (1) compares plans on paper with the planner's cost model, (2) predicts how the stage and
# DLRM scale to 16 GPUs, and says what that prediction assumes, and (3) runs the sharded stage for real on
# `torch.distributed` (gloo, local processes, tiny tables on the CPU), checked against one process.
# The sizes of the 246 GB case are modelled, never allocated.

# %% tags=["parameters"]
PRESET = None  # the live run's stage: "tiny" (default here: CPU processes) or "paper" (on GPUs)
WORLD = 8  # GPUs of the plans compared
BUDGET_GB = 70.0  # shard memory per GPU (an 80 GB H100, room left for buffers)

# %%
from pathlib import Path

import pandas as pd
from IPython.display import display

from dlrmlab.shard import planner, plots, predict, scaling
from dlrmlab.shard.plan import SHARDING_TYPES
from dlrmlab.shard.run import RunConfig, run

stage = predict.named_stage("paper_40M")
print(f"{stage.num_tables} tables x {stage.embedding_sizes[0]:,} rows x {stage.embedding_dim} fp32 = "
      f"{stage.table_bytes() / 1e9:.0f} GB; batch {stage.batch_size}, {stage.pooling} ids per bag")

# %% [markdown]
# ## Plans side by side
#
# Each plan's predicted cost per GPU (lookups: the bytes they read over the gather bandwidth the fast
# kernel reached on one H100; communication: the ids received and the pooled rows sent, over NVLink's
# all-to-all bus bandwidth) and its shard memory. *Imbalance* is the most loaded GPU's cost over the mean.
# `auto` is the planner: tables placed costliest first where they raise the most loaded GPU's cost least,
# within the memory budget.

# %%
summary, costs = predict.compare_plans("paper_40M", WORLD, budget_bytes=BUDGET_GB * 1e9)
display(summary)

# %%
plots.plan_costs(costs, BUDGET_GB)

# %% [markdown]
# Round-robin `table_wise` (12 tables on 8 GPUs) leaves four GPUs with two tables: 4/3 of the mean
# lookup work. Row-wise spreads every table evenly and receives only the ids of its own rows, but returns
# full-width partial sums. Column-wise sends every id to every GPU. Replicating does not fit. The planner's
# own placement, for the record:

# %%
auto = planner.plan_auto(planner.Workload.from_stage(stage), WORLD, budget_bytes=BUDGET_GB * 1e9)
print(auto.spec())

# %% [markdown]
# ## Predicted scaling
#
# Strong scaling (global batch 2048) for the paper's stage and the 246 GB one, every plan, 1 to 16 GPUs
# (two hosts of 8 above 8). Below 4 GPUs the large stage does not fit at all.

# %%
pred = predict.predictions(["paper", "paper_40M"], [1, 2, 4, 8, 16], None, BUDGET_GB * 1e9,
                           planner.CostModel())
plots.scaling(pred)

# %%
display(pred[(pred.scaling == "strong") & (pred.world_size == 8)][
    ["stage", "plan", "fits", "input_dist_ms", "lookup_ms", "output_dist_ms", "latency_ms", "samples_per_s",
     "dlrm_samples_per_s", "imbalance"]])

# %% [markdown]
# **What the prediction assumes** (every number is a parameter of `dlrmlab.shard.scaling.CommModel`,
# `DenseModel` and `planner.CostModel`):
#
# - collectives take `latency + bytes x (n - 1) / n / busbw` (nccl-tests' bus bandwidth); NVLink 4 at
#   370 GB/s (NCCL's effective rate on H100's 450 GB/s per direction), InfiniBand NDR at 48 GB/s per GPU
#   (one 400 Gb/s NIC per GPU), 25 us / 40 us per collective;
# - lookups read `ids x row bytes x (1 - hit rate)` at 3.0 TB/s (the fast kernel's effective rate on one
#   H100, uniform ids, no reuse), the slowest GPU setting the pace;
# - input distribution, lookups and output distribution in series (the run overlaps them where the plan
#   allows, so this is an upper bound), every GPU's links equally loaded;
# - DLRM adds data-parallel dense layers on `batch / GPUs` samples (0.12 ms + 0.025 ms per 1K samples).
#
# With few ids per GPU the fixed latencies dominate: strong scaling of one 2048-sample batch stops paying
# off within one host. The paper's 3 GB stage is best replicated (no communication at all) wherever it fits.

# %% [markdown]
# ## The sharded stage, run
#
# Every plan type and a mixed plan on `torch.distributed` with 2 local processes (gloo; CPU tensors here,
# one process per GPU under `torchrun` with NCCL on a GPU host), each checked against one process's
# EmbeddingBagCollection and DLRM on the global batch. Timings on the CPU mean nothing; the rows have the
# same columns as a GPU run's.

# %%
cfgs = [RunConfig(preset=PRESET or "tiny", plan=p, repeats=2, warmup=0)
        for p in [*SHARDING_TYPES, "0:tw@1,1:rw,2:cw"]]
rows = pd.DataFrame(run(cfgs, 2))
display(rows.groupby(["plan", "plan_spec"])[["correct", "stage_rel_err", "dlrm_rel_err", "imbalance"]].max())

# %%
plots.measured_steps(rows)

# %% [markdown]
# ## Measured on an H100
#
# World size 1 over NCCL (every collective still runs) and 2 ranks over gloo sharing the one GPU, each
# rank's lookups timed alone in turn (`lookup_in_turn`), from `results/h100/shard.csv` where it exists.
# Machines of several GPUs are measured with `dlrmlab shard campaign --gpus N`.

# %%
measured = Path("../results/h100/shard.csv")
if measured.is_file():
    h100 = pd.read_csv(measured)
    display(h100[h100.stage.isin(["lookup_in_turn", "e2e"])].pivot_table(
        index=["world_size", "backend", "plan", "embedding"], columns=["stage", "rank"], values="ms"))
else:
    print("no H100 rows committed yet: dlrmlab shard run --backend nccl --device cuda ... --out results")
print(f"default communication model: {scaling.CommModel()}")
