# %% [markdown]
# # 00 — Quickstart
#
# dlrmlab runs the embedding-bag stage of DLRM inference (12 tables, sum pooling) with PyTorch's kernel,
# the paper's variants (OptMT, RPF, L2P; Jain et al., MICRO 2024) and its own fast path, all written in Numba,
# and measures them against `torch.nn.functional.embedding_bag`. Without a CUDA GPU everything runs in
# Numba's CUDA simulator: the results are the same, the speed is not a GPU's.
#
# This notebook: is the install working, one `embedding_bag` call checked against torch, one benchmark.
# The other notebooks: `01`–`07` one per claim of the paper, `fast_path`, `explore` (widgets), and the
# teaching notebooks `T1`–`T3`.

# %% tags=["parameters"]
PRESET = None  # "tiny" or "paper"; None picks tiny without a CUDA GPU, paper with one

# %%
import numpy as np
import pandas as pd

from dlrmlab import api, backend, reference
from dlrmlab.cli import info_dict

PRESET = PRESET or backend.default_preset()
info = info_dict()  # what `dlrmlab info` prints
print(info.get("message") or info["gpu"]["name"])
pd.Series(info["versions"], name="version").fillna("not installed")

# %% [markdown]
# ## 1. One call, as `torch.nn.functional.embedding_bag` takes it
#
# A table of 1,000 rows x 128 fp32 columns, 64 bags of 20 ids each, CSR offsets with the last one included.
# `variant` picks the kernel: `fast` is dlrmlab's fast kernel; `baseline` is PyTorch 2.1's kernel, `rpf` the
# paper's register prefetching (`prefetch_distance=2`), `optmt` its register cap (`max_registers=42`). In the
# simulator the paper's kernels are slow to run (one Python thread per GPU thread, grid 1024): try them here
# on a smaller batch, or on a GPU.

# %%
rng = np.random.default_rng(0)
weight = rng.standard_normal((1000, 128), dtype=np.float32)
indices = rng.integers(0, 1000, 64 * 20)
offsets = np.arange(0, 64 * 20 + 1, 20)
ours = api.embedding_bag(indices, weight, offsets, mode="sum", include_last_offset=True, variant="fast").copy_to_host()
expected = reference.embedding_bag(indices, weight, offsets, mode="sum", include_last_offset=True)
print("shape", ours.shape, "max abs difference from the NumPy reference:", float(np.abs(ours - expected).max()))

# %%
import torch

t = torch.nn.functional.embedding_bag(torch.from_numpy(indices), torch.from_numpy(weight),
                                      torch.from_numpy(offsets), mode="sum", include_last_offset=True)
print("max abs difference from torch:", float(np.abs(ours - t.numpy()).max()))

# %% [markdown]
# ## 2. One benchmark
#
# `run_bench` prepares the stage of the preset (`tiny`: 3 small tables; `paper`: the paper's 12 tables of
# 500,000 rows), checks every variant's output against the reference, then times them interleaved with
# torch (on a GPU; the simulator times nothing meaningful). The same as `dlrmlab bench --variant
# baseline,fast --dataset medium`.

# %%
from dlrmlab.bench import format_table, run_bench

live = run_bench(["baseline", "fast"], ["medium"], PRESET, repeats=1 if backend.SIMULATOR else None,
                 warmup_s=0.0 if backend.SIMULATOR else None)
print(format_table(live.rows))

# %% [markdown]
# The headline as measured on an H100 (2026-11-26, `results/h100/peers.csv`, committed; the newest run):
# stage time per batch of the `paper` workload in a serving loop, CUDA events around all 12 tables, speedup
# over torch's `embedding_bag`, beside NVIDIA's cuEmbed (its 12 calls in one CUDA graph). `fast_graph` is
# the fast kernel replayed from a CUDA graph; `+window` adds an L2 access-policy window over the hot rows.

# %%
from dlrmlab.bench.results import load_results
from dlrmlab.report import figures, style

h100 = load_results("../results/h100/peers.csv")
h100 = h100[h100["run_id"] == h100.sort_values("timestamp")["run_id"].iloc[-1]]  # the newest run
h100["label"] = h100["dataset"].map(style.dataset_label)
shown = ["cuembed_graph", "fast_graph", "fast_graph+window"]
table = h100.pivot_table(index="label", columns="variant", values="speedup_vs_torch", aggfunc="median", sort=False)
table = table[[v for v in shown if v in table.columns]]
bar_styles = {v: style.bar_style(v) for v in shown}
best = table[["fast_graph", "fast_graph+window"]].max(axis=1)
figures.speedup_bars(table, bar_styles,
                     title=f"dlrmlab's fast path is {best.min():.1f}-{best.max():.1f}x faster than torch on the H100",
                     ylabel="speedup over torch's embedding_bag, stage time (x)", unity="torch (1x)",
                     stamp="measured on an H100, 2026-11-26 (results/h100/peers.csv, serving loop)")

# %%
table.round(2)

# %% [markdown]
# Next: `dlrmlab reproduce` runs every claim of the paper and writes a report; the notebooks `01`–`07` run
# one claim each and show the committed H100 report's section beside it.
