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
from dlrmlab.variants import around, fused, paper
from dlrmlab.variants.base import TECHNIQUES, Technique, Variant

#: Knobs each kernel family and each piece around a launch accepts (see the README's variant table).
KNOBS: dict[str, frozenset[str]] = {"paper": paper_kernel.KNOBS, "fast": fast_kernel.KNOBS, **around.KNOBS,
                                    "cuembed": cuembed.KNOBS}  # fmt: skip

OPTMT = {"max_registers": 42}  # the paper's -maxrregcount 42; `dlrmlab tune optmt` sweeps the GPU's caps
RPF = {"prefetch": "register", "prefetch_distance": 2}
_T = TECHNIQUES
_PAPER = {"kind": "paper", "kernels": paper.KERNEL_REGEX}
_FAST = {"kind": "fast", "kernels": fused.KERNEL_REGEX}
_CUEMBED = {"kind": "cuembed", "kernels": cuembed.KERNEL_REGEX, "technique": _T["cuembed"], "gpu_only": True,
            "unavailable": cuembed.unavailable}  # fmt: skip


def _v(name: str, description: str, prepare: Any, families: tuple[str, ...], fixed: dict | None = None,
       technique: Technique = _T["baseline"], graph: bool = False, **kw: Any) -> tuple[str, Variant]:
    """One row; ``graph`` rows are prepared with ``graph=True`` (their prepare function replays a graph)."""
    run = partial(prepare, graph=True) if graph else prepare
    return name, Variant(name, description, run, families, fixed or {}, technique=technique, graph=graph, **kw)


VARIANTS: dict[str, Variant] = dict([
    _v("torch", "torch.nn.functional.embedding_bag, one call per table, on the case's stream (the baseline)",
       torch.prepare, (), None, _T["torch"], kind="torch", kernels=torch.KERNEL_REGEX, unavailable=torch.unavailable,
       l2_policy="per-table"),
    _v("cuembed", "NVIDIA cuEmbed (peer, built at run time with nvcc from $DLRMLAB_CUEMBED_DIR): one call per table",
       cuembed.prepare, ("cuembed",), **_CUEMBED),
    _v("cuembed_graph", "cuembed's per-table calls captured in one CUDA graph per batch", cuembed.prepare,
       ("cuembed",), graph=True, label="cuEmbed, graph", **_CUEMBED),
    _v("baseline", "PyTorch 2.1's kernel in Numba: block (32, 8), grid 1024, one launch per table",
       paper.prepare, ("paper",), l2_policy="per-table", label="PyTorch's kernel (baseline)", **_PAPER),
    _v("optmt", "baseline with a register cap (OptMT; default 42, the paper's -maxrregcount)", paper.prepare,
       ("paper",), {"paper": OPTMT}, _T["optmt"], l2_policy="per-table", label="OptMT", **_PAPER),
    _v("rpf", "baseline with register prefetching (distance 2 by default)", paper.prepare, ("paper",),
       {"paper": RPF}, _T["rpf"], l2_policy="per-table", **_PAPER),
    _v("rpf_l1", "baseline with prefetch.global.L1 ahead of use", paper.prepare, ("paper",),
       {"paper": {"prefetch": "l1", "prefetch_distance": 2}}, _T["rpf"], l2_policy="per-table", **_PAPER),
    _v("rpf_shared", "baseline with rows staged in shared memory", paper.prepare, ("paper",),
       {"paper": {"prefetch": "shared", "prefetch_distance": 2}}, _T["rpf"], l2_policy="per-table", **_PAPER),
    _v("optmt_rpf", "OptMT + RPF", paper.prepare, ("paper",), {"paper": {**OPTMT, **RPF}}, _T["rpf"],
       l2_policy="per-table", label="OptMT+RPF", **_PAPER),
    _v("l2p", "pin kernel (evict_last prefetch of 60K hot rows) before each table's kernel", paper.prepare,
       ("paper", "pin"), {"pin": {}}, _T["l2p"], l2_policy="per-table+l2p", **_PAPER),
    _v("optmt_l2p", "OptMT + L2P", paper.prepare, ("paper", "pin"), {"paper": OPTMT, "pin": {}}, _T["l2p"],
       l2_policy="per-table+l2p", label="OptMT+L2P", **_PAPER),
    _v("combined", "OptMT + RPF + L2P (the paper's combination)", paper.prepare, ("paper", "pin"),
       {"paper": {**OPTMT, **RPF}, "pin": {}}, _T["combined"], l2_policy="per-table+l2p", label="OptMT+RPF+L2P",
       **_PAPER),
    _v("l2window", "frequency-ranked rows + persisting L2 window per table", paper.prepare, ("paper", "window"),
       {"window": {}}, _T["window"], gpu_only=True, l2_policy="per-table+window", label="L2 window (per table)",
       **_PAPER),
    _v("combined_window", "OptMT + RPF + persisting window", paper.prepare, ("paper", "window"),
       {"paper": {**OPTMT, **RPF}, "window": {}}, _T["window"], gpu_only=True, l2_policy="per-table+window",
       **_PAPER),
    _v("fast", "fast kernel: all tables in one launch, 16-byte loads, rows in flight", fused.prepare, ("fast",),
       None, _T["fast"], l2_policy="fast", label="fast path (one launch)", **_FAST),
    _v("fast_graph", "fast, replayed from a CUDA graph", fused.prepare, ("fast",), None, _T["fast"], graph=True,
       gpu_only=True, l2_policy="fast", label="fast path, graph", **_FAST),
    _v("fast+l2p", "fast after pinning the hottest rows of all tables in L2", fused.prepare, ("fast", "pin"),
       {"pin": {}}, _T["fast"], adds=_T["l2p"], l2_policy="fast+l2p", **_FAST),
    _v("fast_graph+l2p", "fast+l2p, replayed from a CUDA graph", fused.prepare, ("fast", "pin"), {"pin": {}},
       _T["fast"], graph=True, adds=_T["l2p"], gpu_only=True, l2_policy="fast+l2p", **_FAST),
    _v("fast+window", "fast on frequency-ranked tables, hot rows behind one L2 window", fused.prepare,
       ("fast", "window"), {"window": {}}, _T["fast"], adds=_T["window"], gpu_only=True, l2_policy="fast+window",
       **_FAST),
    _v("fast_graph+window", "fast+window, replayed from a CUDA graph", fused.prepare, ("fast", "window"),
       {"window": {}}, _T["fast"], graph=True, adds=_T["window"], gpu_only=True, l2_policy="fast+window",
       label="fast path + L2 window, graph", **_FAST),
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
