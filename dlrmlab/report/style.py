"""Figure conventions of the report, in one place, so every figure reads the same way in a paper or a lecture.

* One colour per technique, whatever the figure (:data:`dlrmlab.variants.TECHNIQUES`; each variant's row
  names its own): PyTorch and its kernel in greys, OptMT blue, RPF orange, L2P green, the paper's
  combination purple, the L2 window cyan, the fused fast path red, cuEmbed brown. A variant that adds a
  technique to another keeps the first one's colour and takes the second one's as a hatch
  (``fast_graph+window``: red bars hatched in cyan). Sweeps of one technique use shades of its colour
  (:func:`shades`).
* The paper's number sits beside ours, drawn in black: a dashed line (:func:`paper_line`) or a hatched bar
  (:data:`PAPER_BAR`), labelled "paper (A100)".
* Datasets are named by what they are, never by a path (:func:`dataset_label`).
* Axis titles carry units; every figure carries the GPU and the date in its bottom-right corner
  (:func:`finish`).

Figures are ``matplotlib.figure.Figure`` objects built without pyplot (no global state, headless safe); they
display inline in Jupyter (:class:`ReportFigure`, also used by :mod:`dlrmlab.dlrm.plots`).
"""

from __future__ import annotations

import colorsys
from io import BytesIO
from pathlib import Path

from matplotlib import colors as mcolors
from matplotlib.figure import Figure

from dlrmlab.datasets import PAPER_TRACES
from dlrmlab.variants import TECHNIQUES, VARIANTS, Technique

#: Stages of a DLRM batch: the embedding stage in gold (no technique's colour), the rest in greys.
STAGE_COLORS: dict[str, str] = {"bottom_mlp": "#d9d9d9", "embedding": "#e7ba52", "interaction": "#bdbdbd",
                                "top_mlp": "#8c8c8c"}  # fmt: skip
STAGE_LABELS: dict[str, str] = {"bottom_mlp": "bottom MLP", "embedding": "embedding", "interaction": "interaction",
                                "top_mlp": "top MLP"}  # fmt: skip

PAPER_COLOR = "black"
PAPER_LABEL = "paper (A100)"
#: Keyword arguments of a bar that shows the paper's number beside ours.
PAPER_BAR: dict = {"color": "white", "edgecolor": PAPER_COLOR, "hatch": "///", "linewidth": 0.8}
SIMULATOR_NOTE = "not measured (simulator)"


def technique(variant: str) -> Technique:
    """The technique of a variant name (its row's: ``optmt_rpf`` -> RPF) or of a technique name; PyTorch's
    kernel for a name that is neither."""
    name = str(variant)
    if name in TECHNIQUES:
        return TECHNIQUES[name]
    row = VARIANTS.get(name)
    return row.technique if row is not None else TECHNIQUES["baseline"]


def color(variant: str) -> str:
    """The colour of a variant's (or a technique's) bars and lines."""
    return technique(variant).color


def bar_style(variant: str) -> dict:
    """``ax.bar`` keywords for a variant: its technique's colour, and the hatch of the technique it adds, in
    that one's colour (``+window`` cyan, ``+l2p`` green), so combinations read as combinations."""
    style = {"color": color(variant), "edgecolor": "white", "linewidth": 0.6}
    row = VARIANTS.get(str(variant))
    if row is not None and row.adds is not None:
        style.update(hatch=row.adds.hatch, edgecolor=row.adds.color)
    return style


def shades(variant: str, n: int) -> list[tuple[float, float, float]]:
    """``n`` shades of a technique's colour, light to dark (for a sweep of one knob)."""
    r, g, b = mcolors.to_rgb(color(variant))
    h, lum, s = colorsys.rgb_to_hls(r, g, b)
    if n <= 0:
        return []
    if n == 1:
        return [(r, g, b)]
    lo, hi = min(lum + 0.25, 0.85), max(lum - 0.2, 0.2)
    return [colorsys.hls_to_rgb(h, lo + (hi - lo) * i / (n - 1), s) for i in range(n)]


# --- datasets -------------------------------------------------------------------------------------------------


def _trace_level(spec: str) -> str | None:
    """``low``/``medium`` when a trace spec names one of the artifact's traces (by level or file name)."""
    spec = spec.replace("\\", "/").strip()
    for level, f in PAPER_TRACES.items():
        name = spec.rsplit("/", 1)[-1]
        if spec in (level, f.repo_path) or name == f.file or spec.endswith("/" + f.repo_path):
            return level
    return None


def dataset_label(dataset: str) -> str:
    """What a dataset is, for a figure or a table: ``trace:/x/y/reuse_low_500K.txt`` -> ``low-reuse trace``,
    ``synthetic-high`` -> ``high reuse (synthetic)``, ``zipf:1.05`` -> ``Zipf 1.05 (synthetic)``; never a path."""
    d = str(dataset).strip()
    if d.startswith("trace:"):
        level = _trace_level(d[6:])
        if level:
            return f"{level}-reuse trace"
        name = d[6:].replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
        return f"trace {name.rsplit('.', 1)[0] or name}"
    if d.startswith("synthetic-"):
        return f"{d[len('synthetic-'):]} reuse (synthetic)"
    if d in ("low", "medium", "high"):
        return f"{d} reuse (synthetic)"
    if d in ("random", "uniform"):
        return "uniform random"
    if d.startswith("zipf:"):
        return f"Zipf {d[5:]} (synthetic)"
    return d


# --- figures --------------------------------------------------------------------------------------------------


class ReportFigure(Figure):
    """A Figure that shows itself in Jupyter without pyplot (IPython looks for ``_repr_png_``)."""

    def _repr_png_(self) -> bytes:
        buf = BytesIO()
        self.savefig(buf, format="png", dpi=100, bbox_inches="tight")
        return buf.getvalue()


def new_figure(width: float = 7.0, height: float = 4.2) -> ReportFigure:
    """A blank figure with constrained layout (legends and long labels do not overlap)."""
    return ReportFigure(figsize=(width, height), layout="constrained")


def finish(fig: Figure, stamp: str) -> Figure:
    """Put the GPU and the date (``stamp``) in the bottom-right corner, below the axes."""
    fig.text(0.995, -0.01, stamp, ha="right", va="top", fontsize=7, color="0.45")
    return fig


def paper_line(ax, value: float, text: str | None = None) -> None:
    """The paper's number as a dashed black line across the axes, labelled in the legend."""
    ax.axhline(value, color=PAPER_COLOR, ls="--", lw=1.2, label=text or f"{PAPER_LABEL}: {value:g}x")


def unity_line(ax, text: str = "no change (1x)") -> None:
    """The 1x reference of a speedup axis (thin, dotted)."""
    ax.axhline(1.0, color="0.3", ls=":", lw=0.9, label=text)


def not_measured(ax, text: str = SIMULATOR_NOTE) -> None:
    """Say in the plot area that nothing was measured there (the simulator takes no timings)."""
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=11, color="0.35",
            bbox={"boxstyle": "round", "facecolor": "0.95", "edgecolor": "0.7"})  # fmt: skip


def legend(ax, **kw) -> None:
    """Legend outside the plot on the right, small, without duplicate labels."""
    handles, labels = ax.get_legend_handles_labels()
    seen: dict[str, object] = {}
    for h, lab in zip(handles, labels, strict=True):
        seen.setdefault(lab, h)
    if seen:
        ax.legend(list(seen.values()), list(seen), fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0),
                  borderaxespad=0.0, **kw)  # fmt: skip


def save(fig: Figure, directory: str | Path, stem: str) -> list[Path]:
    """Write ``<stem>.png`` (150 dpi) and ``<stem>.svg``; return their paths."""
    d = Path(directory)
    paths = [d / f"{stem}.png", d / f"{stem}.svg"]
    fig.savefig(paths[0], dpi=150, bbox_inches="tight")
    fig.savefig(paths[1], bbox_inches="tight")
    return paths
