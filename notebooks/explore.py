# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: jupyter,tags,-all
#     formats: ipynb,py:percent
#     main_language: python
#     notebook_metadata_filter: -all
# ---

# %% [markdown]
# # Explore: turn the paper's knobs and see what they do
#
# Pick a variant and its knobs; each change re-runs a small benchmark and re-draws three panels
# (`dlrmlab.explore.explore`):
#
# 1. **stage time** of your configuration beside PyTorch's kernel (`baseline`) and torch — on a GPU; in
#    Numba's CUDA simulator the outputs are checked against the reference and nothing is timed;
# 2. **warps and loads in flight**: what the register cap (OptMT) allows by the occupancy calculator, times the
#    rows each warp keeps in flight (the prefetch distance of RPF), against the bytes in flight an H100 needs
#    (Little's law, notebook T2);
# 3. **the hot-set size** of L2 pinning (L2P) in the CPU L2 model: predicted hit rate, and the DRAM traffic
#    including the pin kernel's own (notebook T3).
#
# Knobs a variant does not take are ignored (the register cap for every kernel; the prefetch distance for
# `rpf`, `rpf_l1`, `rpf_shared`, `optmt_rpf`, `combined`; the hot-set size for `l2p`, `combined`).

# %% tags=["parameters"]
PRESET = None  # "tiny" or "paper"; None picks tiny without a CUDA GPU, paper with one

# %%
import ipywidgets as widgets
from IPython.display import display

from dlrmlab import backend, explore

PRESET = PRESET or backend.default_preset()
print(backend.describe_mode(), f"- preset {PRESET}")

# %%
label = {"style": {"description_width": "initial"}}  # descriptions in full, not cut at the default width
slide = {**label, "continuous_update": False}  # one redraw when the handle is released, not one per step dragged
controls = {
    "variant": widgets.Dropdown(options=list(explore.EXPLORE_VARIANTS), value="rpf", description="variant", **label),
    "max_registers": widgets.IntSlider(value=0, min=0, max=96, step=8, description="reg. cap (0: none)", **slide),
    "prefetch_distance": widgets.IntSlider(value=2, min=1, max=8, description="prefetch dist.", **slide),
    "hot_rows": widgets.IntSlider(value=15_000, min=1_000, max=60_000, step=1_000, description="hot rows/table",
                                  **slide),
    "dataset": widgets.Dropdown(options=list(explore.EXPLORE_DATASETS), value="medium", description="dataset",
                                **label),
    "preset": widgets.fixed(PRESET),
}
ui = widgets.VBox([widgets.HBox([controls["variant"], controls["dataset"]]),
                   widgets.HBox([controls["max_registers"], controls["prefetch_distance"], controls["hot_rows"]])])
out = widgets.interactive_output(explore.show, controls)
out.add_class("explore-knobs")  # each widget output named, so that either can be found on the page
display(ui, out)

# %% [markdown]
# Above: live controls (a running Jupyter kernel redraws when a choice changes or a slider is released; in the
# simulator each redraw takes several seconds). Below: the same function with the default values, drawn once, so
# that the notebook shows its figure in a static rendering (GitHub, CI).

# %%
explore.explore(variant="rpf", max_registers=0, prefetch_distance=2, hot_rows=15_000, dataset="medium",
                preset=PRESET)

# %% [markdown]
# ## The shape picker: what the fused path chooses for your shape
#
# Pick a row width, batch, pooling and ids: the text above the figure says what `fast_graph` would serve that
# shape with on this GPU, as a fresh install configures it (`dlrmlab.explore.shape_choice`): plain rows or the
# split-hot layout behind an L2 window, and why (the share of lookups the rows that fit the persisting carve-out
# take, and the bytes a bag reads), and the knobs (from a tuned entry, else the rule derived from the shape and
# the GPU, `dlrmlab.rules`). Only the ids are generated: no kernel runs, so it answers at once, anywhere. Below
# it, the committed H100 grid: the fused path against cuEmbed and torch at each measured shape.

# %%
shape = {
    "dim": widgets.Dropdown(options=list(explore.SHAPE_DIMS), value=128, description="row width", **label),
    "batch": widgets.Dropdown(options=list(explore.SHAPE_BATCHES), value=2048, description="batch", **label),
    "pooling": widgets.IntSlider(value=150, min=1, max=500, description="pooling", **slide),
    "dataset": widgets.Dropdown(options=list(explore.SHAPE_DATASETS), value="random", description="ids", **label),
    "results_dir": widgets.fixed("../results/h100"),
}
shape_out = widgets.interactive_output(explore.show_shape, shape)
shape_out.add_class("explore-shape")
display(widgets.HBox([shape["dim"], shape["batch"], shape["pooling"], shape["dataset"]]), shape_out)

# %% [markdown]
# Things to try:
#
# * `optmt` with caps 32, 40, 48: the warps per SM step at 32 (64 warps), 40 (48) and 48 (40) registers
#   — the paper's 42 gives the same as 48, registers being allocated in steps of 8.
# * `rpf` with distance 1 to 8: each step adds one row per warp in flight; on the H100 the measured kernel
#   did not get faster (T2, section 3): the bound is not the only limit.
# * `l2p` with 1,000 to 60,000 hot rows per table on `high` and `random`: the hit rate rises with the hot set
#   on skewed data, while the pin kernel's DRAM traffic grows with it; on `random` there is no hot set to
#   keep.
# * the shape picker at width 32, batch 16384, pooling 20 on `zipf:1.1`: a skewed batch whose bags read only
#   2.5 KiB each stays plain; at width 128 (10 KiB bags) it goes split-hot.
