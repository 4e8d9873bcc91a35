"""dlrmlab's variants: one explicit table of every named configuration the harness, the CLI and the API run.

A variant is a kernel family (the paper's per-table kernel, the fast path, or a peer library) plus the
knobs it fixes and what runs around its launches (pinning, a persisting L2 window, graph replay). Knobs
are validated once, here (:func:`dlrmlab.config.split_knobs`), before anything is allocated.

>>> prep = prepare("rpf", case, prefetch_distance=4)   # compile, allocate, set up; returns closures
>>> prep.run(0); prep.close()                           # close() restores every GPU state it changed
"""

from __future__ import annotations

from functools import partial
from typing import Any

from dlrmlab import backend
from dlrmlab.config import split_knobs
from dlrmlab.errors import DlrmlabError
from dlrmlab.peers import cuembed, torch
from dlrmlab.variants import fused, paper, placed
from dlrmlab.variants.base import Prepared, Variant

_P, _FAST = ("paper",), ("fast",)
OPTMT = {"max_registers": 42}  # the paper's -maxrregcount 42; `dlrmlab tune optmt` sweeps the GPU's caps
RPF = {"prefetch": "register", "prefetch_distance": 2}


def _v(name: str, description: str, prepare: Any, families: tuple[str, ...], fixed: dict | None = None,
       gpu_only: bool = False, **kw: Any) -> tuple[str, Variant]:
    return name, Variant(name, description, prepare, families, fixed or {}, gpu_only, **kw)


VARIANTS: dict[str, Variant] = dict([
    _v("torch", "torch.nn.functional.embedding_bag, one call per table, on the case's stream (the baseline)",
       torch.prepare, (), unavailable=torch.unavailable, kernels="EmbeddingBag"),
    _v("cuembed", "NVIDIA cuEmbed (peer, built at run time with nvcc from $DLRMLAB_CUEMBED_DIR): one call per table",
       cuembed.prepare, ("cuembed",), gpu_only=True, kernels=cuembed.KERNEL_REGEX),
    _v("cuembed_graph", "cuembed's per-table calls captured in one CUDA graph per batch", cuembed.prepare_graph,
       ("cuembed",), gpu_only=True, kernels=cuembed.KERNEL_REGEX),
    _v("baseline", "PyTorch 2.1's kernel in Numba: block (32, 8), grid 1024, one launch per table",
       paper.prepare, _P),
    _v("optmt", "baseline with a register cap (OptMT; default 42, the paper's -maxrregcount)", paper.prepare, _P,
       {"paper": OPTMT}),
    _v("rpf", "baseline with register prefetching (distance 2 by default)", paper.prepare, _P, {"paper": RPF}),
    _v("rpf_l1", "baseline with prefetch.global.L1 ahead of use", paper.prepare, _P,
       {"paper": {"prefetch": "l1", "prefetch_distance": 2}}),
    _v("rpf_shared", "baseline with rows staged in shared memory", paper.prepare, _P,
       {"paper": {"prefetch": "shared", "prefetch_distance": 2}}),
    _v("optmt_rpf", "OptMT + RPF", paper.prepare, _P, {"paper": {**OPTMT, **RPF}}),
    _v("l2p", "pin kernel (evict_last prefetch of 60K hot rows) before each table's kernel", paper.prepare,
       ("paper", "pin"), {"pin": {}}),
    _v("combined", "OptMT + RPF + L2P (the paper's combination)", paper.prepare, ("paper", "pin"),
       {"paper": {**OPTMT, **RPF}, "pin": {}}),
    _v("l2window", "frequency-ranked rows + persisting L2 window per table", paper.prepare, ("paper", "window"),
       {"window": {}}, gpu_only=True),
    _v("combined_window", "OptMT + RPF + persisting window", paper.prepare, ("paper", "window"),
       {"paper": {**OPTMT, **RPF}, "window": {}}, gpu_only=True),
    _v("fast", "fast kernel: all tables in one launch, 16-byte loads, rows in flight", fused.prepare, _FAST),
    _v("fast_graph", "fast, replayed from a CUDA graph", partial(fused.prepare, graph=True), _FAST, gpu_only=True),
    _v("fast+l2p", "fast after pinning the hottest rows of all tables in L2", fused.prepare, ("fast", "pin"),
       {"pin": {}}),
    _v("fast_graph+l2p", "fast+l2p, replayed from a CUDA graph", partial(fused.prepare, graph=True),
       ("fast", "pin"), {"pin": {}}, gpu_only=True),
    _v("fast+window", "fast on frequency-ranked tables, hot rows behind one L2 window", fused.prepare,
       ("fast", "window"), {"window": {}}, gpu_only=True),
    _v("fast_graph+window", "fast+window, replayed from a CUDA graph", partial(fused.prepare, graph=True),
       ("fast", "window"), {"window": {}}, gpu_only=True),
    _v("fast@host", "fast over tables in pinned host memory, every row read zero-copy over the host link",
       partial(placed.prepare, placement="host"), _FAST, kernels=placed.KERNEL_REGEX),
    _v("fast@cached", "fast over host tables behind an HBM cache (10% of the tables, LRU), next batch prefetched",
       partial(placed.prepare, placement=placed.BENCH_CACHE), _FAST, kernels=placed.KERNEL_REGEX),
])


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


__all__ = ["VARIANTS", "Prepared", "Variant", "get", "knobs_for", "names", "prepare", "why_not_here"]
