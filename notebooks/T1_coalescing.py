# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: jupyter,tags,-all
#     formats: ipynb,py:percent
#     main_language: python
#     notebook_metadata_filter: -all
# ---

# %% [markdown]
# # T1 — Coalescing: which addresses one warp touches
#
# A GPU does not load bytes one thread at a time. The 32 threads of a **warp** execute a load instruction
# together, and the load/store unit turns the 32 addresses into as few memory transactions as it can:
#
# * memory moves in **32-byte sectors**; the L1 and L2 caches keep **128-byte lines** of four sectors;
# * if the 32 addresses fall in 4 sectors of one line, the warp's request costs 4 sector reads (the
#   *coalesced* case); if they fall in 32 different lines, it costs 32 sectors, of which each lane uses only
#   4 bytes (the *uncoalesced* case: 7/8 of the bytes moved are thrown away).
#
# One embedding row of the paper's tables is 128 fp32 values = 512 bytes = 4 lines = 16 sectors.
#
# Questions for this session:
#
# 1. How do the paper's kernel (PyTorch 2.1's) and dlrmlab's fast kernel map threads onto a row, and which
#    sectors does one warp instruction touch?
# 2. Are they coalesced? If both are, why is the fast kernel's layout still better?
# 3. What happens with rows that are not a multiple of 128 bytes?
#
# We do not guess the addresses: a tiny **instrumented kernel** per layout (`dlrmlab.teach`), with exactly
# the thread-to-work mapping of the real kernel, runs in Numba's CUDA simulator (on a laptop; on a GPU it runs
# on the GPU) and writes, instead of loading, the element index each thread would load at each load
# instruction. Everything below is counted from that record.

# %% tags=["parameters"]
PRESET = None  # "tiny" or "paper"; None picks tiny without a CUDA GPU, paper with one

# %%
import pandas as pd

from dlrmlab import backend, teach
from dlrmlab.workload import preset

PRESET = PRESET or backend.default_preset()
print(backend.describe_mode())
pd.Series(teach.LAYOUTS, name="what one thread (lane) loads")

# %% [markdown]
# ## 1. Record one small batch
#
# 32 bags of 4 row ids each, from a table of 4096 rows of the paper's width (128 fp32 columns), 16 warps.
# Each layout's kernel records, per thread and per load instruction, the first element it loads; a 16-byte
# vector load covers 4 consecutive fp32 elements.

# %%
dim = preset("paper").embedding_dim
indices, offsets = teach.tiny_batch(bags=32, pooling=4, rows=4096, seed=0)
loads = teach.record_all(indices, offsets, dim=dim, warps=16)
first = loads[(loads["warp"] == 0) & (loads["instruction"] == 0)]
first.groupby("layout", sort=False).head(6)[["layout", "lane", "row", "col", "address", "bytes"]]

# %% [markdown]
# Read the `address` column layout by layout: in `per-feature` lane *i* reads column *i* of one row (4 bytes
# apart); in `vector16` lane *i* reads columns 4*i* to 4*i*+3 (16 bytes apart); in `thread-per-bag` each
# lane reads column 0 of *its own bag's* row, so the addresses are whole rows (multiples of 512 B) apart.
#
# ## 2. One warp's request, drawn
#
# Each panel shows the table rows this warp's first load instruction touches, cut into 32-byte sectors
# (cells) and 128-byte lines (black frames). A filled cell is a sector the request needs; the numbers are the
# lanes that read it.

# %%
teach.plot_warp_request(loads, dim=dim, warp=0, instruction=0)

# %% [markdown]
# * **per-feature** (the paper's kernel): 32 lanes x 4 B = 128 B, one line, 4 sectors, every byte used.
#   The remaining 3/4 of the row are read by three *other* warps (the block's other `threadIdx.y`), or by
#   this warp's later instructions when the block is too small.
# * **vector16** (the fast kernel): 32 lanes x 16 B = 512 B, the whole row in one instruction: 4 lines,
#   16 sectors, every byte used.
# * **thread-per-bag**: 32 lanes read 4 bytes from 32 different rows: 32 sectors in 32 lines for 128 useful
#   bytes.
#
# ## 3. Counting transactions for the whole batch

# %%
summary = teach.transaction_summary(loads)
summary.round(2)

# %%
teach.plot_transactions(summary)

# %% [markdown]
# Both real layouts are **perfectly coalesced**: they fetch exactly the bytes they need (efficiency 1.0),
# 2048 sectors for 32 x 4 rows of 512 B. The naive layout moves 8x the bytes.
#
# The difference between the two good layouts is the number of **load instructions**: the fast kernel
# needs a quarter of them. Each instruction occupies an issue slot and a load/store-unit entry, and a warp
# can only have so many outstanding; fewer, wider instructions mean more bytes in flight per warp for the
# same occupancy. That is the subject of T2 (latency hiding).
#
# What Nsight Compute measured for the real kernels on an H100 (`results/h100/profile.csv`, measured on an
# H100, 2026-11-26) agrees: `sectors_per_request` averages all global loads of the kernel, including the
# 8-byte row ids (one sector per request, since a warp's lanes read the same id or neighbouring ids), which
# pulls both below the 4 and 16 of a row load:

# %%
from dlrmlab.bench import ncu
from dlrmlab.bench.results import load_results

prof = ncu.latest(load_results("../results/h100/profile.csv"))  # the newest capture of each kernel
prof = prof[prof["dataset"] == "random"]
measured = prof[prof["variant"].isin(["torch", "baseline", "fast"])][["variant", "kernel", "sectors_per_request"]]
measured.round(2)

# %% [markdown]
# ## 4. Rows that do not fill lines
#
# Your preset's rows are `dim` = the preset's `sparse_feature_size` columns wide (`tiny`: 32 columns =
# 128 B, one line; `paper`: 128 columns). Try a narrower, odd width too: 24 fp32 columns = 96 B, so row
# *r* starts at byte 96*r*: rows starting 64 or 96 bytes into a line (half of them) straddle two lines.

# %%
widths = sorted({preset(PRESET).embedding_dim, 24})
by_width = pd.concat(
    [teach.transaction_summary(teach.record_all(indices, offsets, dim=w, warps=16)).assign(dim=w) for w in widths],
    ignore_index=True,
)
by_width[["dim", "layout", "instructions", "bytes_per_request", "sectors_per_request", "lines_per_request",
          "efficiency"]].round(2)

# %%
narrow = teach.record_all(indices, offsets, dim=24, warps=16, layouts=("per-feature", "vector16"))
teach.plot_warp_request(narrow, dim=24, warp=0, instruction=0)

# %% [markdown]
# With 24 columns, the per-feature layout leaves 8 of the 32 lanes idle (`lanes` < 32 in
# `teach.warp_requests`), and a row of 96 bytes that straddles a line boundary costs two lines' tags in L1
# and L2 for less than one line of data. The vector layout packs 6 lanes per row (rounded up to 8, a power of
# 2: two lanes idle per bag) and four bags per warp, so one instruction still reads 384 useful bytes.
# Sectors stay fully used in both (96 is a multiple of 32): a width that is *not* a multiple of 8 fp32
# values would waste parts of sectors too.
#
# ## Exercises
#
# 1. Record the `paper` width (128) in fp16 or bf16 (`element_bytes=2`). How many lanes does the fast
#    kernel give each bag, how many bags share a warp, and how many bytes does one instruction read?
# 2. The per-feature layout is fully coalesced. Why does PyTorch's kernel still end up with
#    `sectors_per_request` = 2.0 on the H100 and the paper's kernel (dlrmlab's copy) 2.49? What does that tell
#    you about the share of its load instructions that are row loads?
# 3. In the `thread-per-bag` layout, the next 7 instructions of a warp read columns 1..7 of the same 32 rows,
#    which are in the same sectors. What could save the layout, and why is that a poor bet for embedding
#    tables on a GPU?

# %% [markdown] jupyter={"source_hidden": true}
# **Answers**
#
# 1. A 16-byte vector holds 8 half-precision values, so a 128-wide row needs 16 lanes
#    (`teach.lanes_for(128, 8)` = 16): two bags share a warp, and one instruction reads 2 rows x 256 B =
#    512 B, 16 sectors (`teach.record_loads("vector16", indices, offsets, 128, element_bytes=2)`). Per-feature
#    still reads 32 x 2 B = 64 B per instruction: 2 sectors, half a line; the fast layout's advantage doubles.
# 2. The kernel also loads the bag's offsets and its row ids (int64): every lane of a warp reads the same
#    id, so those requests touch one sector. If a fraction *f* of the requests are row loads at 4 sectors
#    and the rest id loads at 1 sector, 4*f* + (1 - *f*) = 2.49 gives *f* ≈ 0.5: about one id load per row
#    load (each thread reads the id, then the row). PyTorch's own build (2.0) has more id-side requests per
#    row load (*f* ≈ 0.33). The fast kernel stages ids in shared memory, so most of its global requests are
#    16-sector row loads: 16*f* + (1 - *f*) = 13.7 gives *f* ≈ 0.85.
# 3. The L1 cache: if the 32 lines survive in L1 until the next instructions, those read from L1 instead
#    of L2/DRAM. But a thread block would need 32 lanes x 4 lines = 16 KiB of L1 per warp held for the whole
#    row walk, and with tens of warps per SM and random rows the lines are evicted before they are reused;
#    even when it works, every instruction still costs 32 L1 tag lookups. Coalescing by layout (lanes
#    across the columns of a row) makes it unnecessary.
