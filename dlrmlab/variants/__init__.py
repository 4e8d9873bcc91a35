"""dlrmlab's variants: one explicit table of every named configuration the harness, the CLI and the API run.

A variant is a kernel family (the paper's per-table kernel, the fast path, or a peer library) plus the
knobs it fixes and what runs around its launches (pinning, a persisting L2 window, graph replay). Each row
(:class:`~dlrmlab.variants.base.Variant`) also says how figures draw it, which kernels Nsight Compute
profiles and which L2-model policy predicts it: adding a variant is one row here (and its module, if it
brings new code). Knobs are validated once, here (:func:`split_knobs`), before anything is allocated.

>>> prep = prepare("rpf", case, prefetch_distance=4)   # compile, allocate, set up; returns closures
>>> prep.run(0); prep.close()                           # close() restores every GPU state it changed
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import partial
from typing import Any

from dlrmlab import backend
from dlrmlab.errors import DlrmlabError
from dlrmlab.kernels import fused as fast_kernel
from dlrmlab.kernels import paper as paper_kernel
from dlrmlab.peers import cuembed, torch
from dlrmlab.prepared import Prepared
from dlrmlab.variants import around, fused, paper, placed
from dlrmlab.variants.base import TECHNIQUES, Technique, Variant

#: Knobs each kernel family and each piece around a launch accepts (see the README's variant table).
KNOBS: dict[str, frozenset[str]] = {"paper": paper_kernel.KNOBS, "fast": fast_kernel.KNOBS, **around.KNOBS,
                                    "layout": fused.LAYOUT_KNOBS, "torch": torch.KNOBS,
                                    "cuembed": cuembed.KNOBS}  # fmt: skip
#: The fused path choosing its row layout: plain, or split-hot behind the window (whose knobs it takes).
AUTO = {"layout": {"layout": "auto"}, "window": {}}

OPTMT = {"max_registers": 42}  # the paper's -maxrregcount 42; `dlrmlab tune optmt` sweeps the GPU's caps
RPF = {"prefetch": "register", "prefetch_distance": 2}
_T = TECHNIQUES


def _row(kind: str, prepare: Any, kernels: str, name: str, description: str, technique: str, l2_policy: str | None,
         label: str = "", adds: str | None = None, graph: bool = False, gpu_only: bool = False,
         unavailable: Any = None, **fixed: dict) -> tuple[str, Variant]:
    """One row of family ``kind``: it takes that family's knobs and those of each piece ``fixed`` names (pinning,
    window); a ``graph`` row is prepared with ``graph=True`` (its prepare function replays a CUDA graph: GPU only)."""
    families = (kind, *(f for f in fixed if f != kind))
    run = partial(prepare, graph=True) if graph else prepare
    extra = {"unavailable": unavailable} if unavailable else {}
    return name, Variant(name, description, run, families, fixed, gpu_only or graph, kernels, kind=kind, graph=graph,
                         technique=_T[technique], adds=_T[adds] if adds else None, l2_policy=l2_policy, label=label,
                         **extra)  # fmt: skip


_paper = partial(_row, "paper", paper.prepare, paper.KERNEL_REGEX)
_fast = partial(_row, "fast", fused.prepare, fused.KERNEL_REGEX)

VARIANTS: dict[str, Variant] = dict([
    _row("torch", torch.prepare, torch.KERNEL_REGEX, "torch", "torch.nn.functional.embedding_bag, one call per "
         "table, on the case's stream (the baseline)", "torch", "per-table", unavailable=torch.unavailable),
    _row("cuembed", cuembed.prepare, cuembed.KERNEL_REGEX, "cuembed", "NVIDIA cuEmbed (peer, built at run time with "
         "nvcc from $DLRMLAB_CUEMBED_DIR): one call per table", "cuembed", None, gpu_only=True,
         unavailable=cuembed.unavailable),
    _row("cuembed", cuembed.prepare, cuembed.KERNEL_REGEX, "cuembed_graph", "cuembed's per-table calls captured in "
         "one CUDA graph per batch", "cuembed", None, "cuEmbed, graph", graph=True, unavailable=cuembed.unavailable),
    _paper("baseline", "PyTorch 2.1's kernel in Numba: block (32, 8), grid 1024, one launch per table", "baseline",
           "per-table", "PyTorch's kernel (baseline)"),
    _paper("optmt", "baseline with a register cap (OptMT; default 42, the paper's -maxrregcount)", "optmt",
           "per-table", "OptMT", paper=OPTMT),
    _paper("rpf", "baseline with register prefetching (distance 2 by default)", "rpf", "per-table", paper=RPF),
    _paper("rpf_l1", "baseline with prefetch.global.L1 ahead of use", "rpf", "per-table",
           paper={"prefetch": "l1", "prefetch_distance": 2}),
    _paper("rpf_shared", "baseline with rows staged in shared memory", "rpf", "per-table",
           paper={"prefetch": "shared", "prefetch_distance": 2}),
    _paper("optmt_rpf", "OptMT + RPF", "rpf", "per-table", "OptMT+RPF", paper={**OPTMT, **RPF}),
    _paper("l2p", "pin kernel (evict_last prefetch of 60K hot rows) before each table's kernel", "l2p",
           "per-table+l2p", pin={}),
    _paper("optmt_l2p", "OptMT + L2P", "l2p", "per-table+l2p", "OptMT+L2P", paper=OPTMT, pin={}),
    _paper("combined", "OptMT + RPF + L2P (the paper's combination)", "combined", "per-table+l2p", "OptMT+RPF+L2P",
           paper={**OPTMT, **RPF}, pin={}),
    _paper("l2window", "frequency-ranked rows + persisting L2 window per table", "window", "per-table+window",
           "L2 window (per table)", gpu_only=True, window={}),
    _paper("combined_window", "OptMT + RPF + persisting window", "window", "per-table+window", gpu_only=True,
           paper={**OPTMT, **RPF}, window={}),
    _fast("fast", "fast kernel: all tables in one launch, 16-byte loads, rows in flight; plain rows or split-hot "
          "rows behind an L2 window, chosen from the ids' hotness (layout='auto')", "fast", "fast",
          "fast path (one launch)", **AUTO),
    _fast("fast_graph", "fast, replayed from a CUDA graph", "fast", "fast", "fast path, graph", graph=True, **AUTO),
    _fast("fast+l2p", "fast after pinning the hottest rows of all tables in L2", "fast", "fast+l2p", adds="l2p",
          pin={}),
    _fast("fast_graph+l2p", "fast+l2p, replayed from a CUDA graph", "fast", "fast+l2p", adds="l2p", graph=True,
          pin={}),
    _fast("fast+window", "fast on frequency-ranked tables, hot rows behind one L2 window", "fast", "fast+window",
          adds="window", gpu_only=True, window={}),
    _fast("fast_graph+window", "fast+window, replayed from a CUDA graph", "fast", "fast+window",
          "fast path + L2 window, graph", adds="window", graph=True, window={}),
    _row("fast", partial(placed.prepare, placement="host"), placed.KERNEL_REGEX, "fast@host", "fast over tables in "
         "pinned host memory, every row read zero-copy over the host link", "fast", "fast", "fast path, host tables"),
    _row("fast", partial(placed.prepare, placement=placed.BENCH_CACHE), placed.KERNEL_REGEX, "fast@cached", "fast "
         "over host tables behind an HBM cache (10% of the tables, LRU), the next batch prefetched", "fast", "fast",
         "fast path, cached host tables"),
])  # fmt: skip


def get(name: str) -> Variant:
    """The variant called ``name``, or a DlrmlabError listing the valid names."""
    if name not in VARIANTS:
        raise DlrmlabError(f"unknown variant {name!r}; valid: {', '.join(sorted(VARIANTS))}")
    return VARIANTS[name]


def why_not_here(name: str) -> str | None:
    """Why variant ``name`` cannot run on this machine, or None."""
    v = get(name)
    if v.gpu_only and backend.SIMULATOR:
        return f"variant {name!r} needs a CUDA GPU; this is {backend.describe_mode()}"
    return v.unavailable()


def names(available_only: bool = False) -> list[str]:
    """Variant names, sorted; ``available_only`` keeps those that can run here."""
    return sorted(n for n in VARIANTS if not (available_only and why_not_here(n)))


def split_knobs(variant: str, families: Iterable[str], params: Mapping[str, Any]) -> dict[str, dict]:
    """``params`` sorted by family; a knob none of ``families`` takes is refused, naming the variant."""
    families = list(families)
    out: dict[str, dict] = {f: {} for f in families}
    for key, value in params.items():
        owner = next((f for f in families if key in KNOBS[f]), None)
        if owner is None:
            takes = sorted(set().union(*(KNOBS[f] for f in families)))
            raise DlrmlabError(
                f"variant {variant!r} does not take {key!r}; it takes: {', '.join(takes) or 'no parameters'}"
            )
        out[owner][key] = value
    return out


def knobs_for(name: str, params: dict) -> dict[str, dict]:
    """The variant's fixed knobs overridden by ``params``, by family; a knob it does not take is refused."""
    v = get(name)
    given = split_knobs(name, v.families, params)
    return {f: {**v.fixed.get(f, {}), **given.get(f, {})} for f in v.families}


def prepare(name: str, case: Any, **params: Any) -> Prepared:
    """Prepare variant ``name`` on ``case``: validate its knobs, compile, allocate, set up."""
    knobs = knobs_for(name, params)
    why = why_not_here(name)
    if why:
        raise DlrmlabError(why)
    prepared = get(name).prepare(case, knobs)
    prepared.params = {**params, **prepared.params}
    return prepared


__all__ = ["KNOBS", "TECHNIQUES", "VARIANTS", "Prepared", "Technique", "Variant", "get", "knobs_for", "names",
           "prepare", "split_knobs", "why_not_here"]
