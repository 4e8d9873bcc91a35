# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: jupyter,tags,-all
#     formats: ipynb,py:percent
#     main_language: python
#     notebook_metadata_filter: -all
# ---

# %% [markdown]
# # Quantized tables: fewer bytes per row, at what error, for what speed
#
# The embedding stage is bound by the bytes it moves, so production DLRM inference does not serve fp32
# tables: FBGEMM's inference kernels (what TorchRec's `quantize_inference_model` uses, int8 by default)
# store each row in a few bits per value plus a per-row scale and bias. dlrmlab reads three such formats
# in its fast kernel (`dlrmlab.quant`, `dlrmlab/kernels/quantized.py`):
#
# * **int8**: FBGEMM's `FloatToFused8BitRowwiseQuantized` rows, byte for byte: `dim` codes, then an fp32
#   scale and an fp32 bias;
# * **int4**: FBGEMM's `FloatToFusedNBitRowwiseQuantizedSBHalf` (bit rate 4): two codes per byte, low
#   nibble first, then an fp16 scale and an fp16 bias;
# * **fp8**: OCP E4M3 values (`torch.float8_e4m3fn`) and an fp32 scale per row (FBGEMM has no CPU op for
#   this one).
#
# In the packed buffer each row starts on a 16-byte boundary (as FBGEMM's inference kernels pad them), so
# a lane reads 16 int8 codes or 32 int4 codes with one 16-byte load. The codes stay packed while the row
# is in flight and are turned into `scale * q + bias` only when the row is added, in fp32.

# %% tags=["parameters"]
PRESET = None  # "tiny" or "paper"; None picks tiny without a CUDA GPU, paper with one

# %%
from pathlib import Path

import numpy as np
import pandas as pd
from IPython.display import display

from dlrmlab import accuracy, api, backend, quant, reference
from dlrmlab.bench.quantized import latest_run
from dlrmlab.bench.results import load_results
from dlrmlab.report import figures
from dlrmlab.workload import preset

PRESET = PRESET or backend.default_preset()
stage = preset(PRESET)
formats = ["float32", "float16", "fp8", "int8", "int4"]
pd.DataFrame([{"format": f, **quant.storage(f, stage.embedding_dim)} for f in formats])

# %% [markdown]
# ## 1. The bytes are FBGEMM's, and the kernel adds exactly what they hold
#
# A table quantized by `dlrmlab.quant.quantize` (or by `torch.ops.fbgemm` itself: the tests compare both,
# byte for byte) goes into `api.embedding_bag` as uint8 rows with `weight_dtype`; the result matches the
# NumPy reference over the dequantized rows.

# %%
rng = np.random.default_rng(0)
weight = rng.standard_normal((1000, stage.embedding_dim)).astype(np.float32)
ids, offsets = rng.integers(0, 1000, 40), np.arange(0, 41, 5)
check = []
for fmt in quant.FORMATS:
    rows = quant.quantize(weight, fmt)
    out = api.embedding_bag(ids, rows, offsets, mode="sum", include_last_offset=True, weight_dtype=fmt)
    ref = reference.embedding_bag(ids, rows, offsets, mode="sum", include_last_offset=True, weight_format=fmt)
    exact = reference.embedding_bag(ids, weight, offsets, mode="sum", include_last_offset=True)
    check.append({"format": fmt, "row bytes": rows.shape[1],
                  "kernel vs dequantized reference": float(np.abs(out.copy_to_host() - ref).max()),
                  "dequantized vs fp32": float(np.abs(ref - exact).max())})
pd.DataFrame(check)

# %% [markdown]
# ## 2. What each format costs in accuracy
#
# The DLRM of the paper's artifact (bottom MLP 256-128-dim, top MLP 128-64-1, DLRM's seeded initialisation)
# with its tables stored in each format, against the same model in fp32, on the same batches: the pooled
# embeddings' error, how far the click probabilities move, and the share of samples whose predicted click
# (p >= 0.5) flips. `dlrmlab quantize accuracy` writes the same table to a CSV.

# %%
acc = accuracy.accuracy(formats[1:], ["random", "zipf:1.05"], stage, seed=0)
acc[["format", "dataset", "row_bytes", "pooled_max_abs_err", "pooled_mean_abs_err", "prob_max_abs_diff",
     "click_flip_share"]]

# %% [markdown]
# ## 3. What it buys in speed
#
# `dlrmlab quantize speed` times fp32 `fast_graph`, each quantized format, and torch's and cuEmbed's fp16
# `embedding_bag` in one run (the serving loop, uniform random ids, the paper's shape). Here we draw the
# H100's newest run when it is in the checkout's results; without it (and without a GPU) the speed panel stays
# empty: simulator timings mean nothing.

# %%
measured = Path("../results/h100/quantized.csv")
speed = latest_run(load_results(measured)) if measured.exists() else None  # the newest run: one set of ratios
if speed is not None:
    speed = speed[speed["dataset"] == "random"]
    print(speed[["variant", "format", "median_ms", "rows_per_s", "row_bytes_per_s", "speedup_vs_fp32"]])
fig = figures.quantized_tradeoff(
    acc.assign(pooled_mean_abs_err=acc["pooled_mean_abs_err"].clip(lower=1e-12)), speed,
    title="Fewer bytes per row: error grows as the bytes shrink; speed follows the sectors read",
    stamp=f"{PRESET} preset" + ("" if speed is None else "; speed: H100 (results/h100/quantized.csv)"),
)
display(fig)

# %% [markdown]
# ## Reading it
#
# * A row of 128 fp32 values is 512 bytes, sixteen 32-byte sectors. int8 is 136 bytes (5 sectors, 3.2x
#   fewer), fp8 132 bytes (5 sectors), int4 68 bytes (3 sectors, 5.3x fewer). The speedup the memory
#   system allows is the ratio of sectors, not of bytes: the last sector of a row is read whole for the
#   few bytes of scale and bias in it.
# * The ids, offsets and the output (still fp32) do not shrink, and unpacking costs instructions: int4's
#   32 codes per 16-byte load are two masks per word, then 32 permute-subtract-FMA sequences per lane.
# * On an H100 (2026-12-06) int8 ran 2.48x faster than fp32 where its sectors allow 3.2x, and int4 2.80x
#   where they allow 5.3x. Nsight Compute shows why int8 falls short: its lanes hold 16 sums and rows in
#   flight in 126 registers, so a quarter of an SM's threads are resident and DRAM runs at 73.5% of peak
#   (fp32: 90%).
# * int8's error is a fraction of a percent of the pooled values and leaves the click probabilities where
#   they were; int4's is more than ten times larger; fp8's relative error is set by its 3 mantissa bits, so it
#   sits between them.
