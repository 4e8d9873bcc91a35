"""What a variant is: one row of :data:`dlrmlab.variants.VARIANTS`, holding every fact about it.

A row names what runs (``prepare``, its kernel family or peer in ``kind``), the knobs it takes and fixes,
its kernels' names for Nsight Compute, the policy of the CPU L2 model (:mod:`dlrmlab.l2model`) that
predicts its hit rates, and how figures draw it (its :class:`Technique` and the one it adds). Preparing a
row returns a :class:`~dlrmlab.prepared.Prepared`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from dlrmlab.prepared import EventPairs, Prepared, PrepareFn


@dataclass(frozen=True)
class Technique:
    """A technique as figures show it: one colour in every figure, and the hatch it lends a combination
    (``fast_graph+window``: the fast path's red, hatched in the window's cyan)."""

    name: str
    label: str
    color: str
    hatch: str = "//"


#: The techniques, in the paper's order: PyTorch and its kernel in greys, OptMT blue, RPF orange, L2P green,
#: the paper's combination purple, the L2 window cyan, the fused fast path red, cuEmbed brown.
TECHNIQUES: dict[str, Technique] = {t.name: t for t in (
    Technique("torch", "PyTorch (torch)", "#4d4d4d"),
    Technique("baseline", "PyTorch's kernel (baseline)", "#a6a6a6"),
    Technique("optmt", "OptMT", "#1f77b4"),
    Technique("rpf", "RPF", "#ff7f0e"),
    Technique("l2p", "L2P", "#2ca02c"),
    Technique("combined", "OptMT+RPF+L2P", "#9467bd"),
    Technique("window", "L2 access-policy window", "#17becf"),
    Technique("fast", "fused fast path", "#d62728"),
    Technique("cuembed", "cuEmbed", "#8c564b"),
)}  # fmt: skip


@dataclass(frozen=True)
class Variant:
    """One named configuration and everything about it."""

    name: str
    description: str
    prepare: PrepareFn
    #: knob families the variant accepts, e.g. ("paper", "pin")
    families: tuple[str, ...] = ()
    #: knobs the variant sets unless the caller overrides them, by family
    fixed: dict = field(default_factory=dict)
    gpu_only: bool = False
    #: regex of its embedding kernels' names (Nsight Compute's filter; never a pin kernel beside them)
    kernels: str = "embedding_bag"
    #: why the variant cannot run here (None: it can); checked before anything is allocated
    unavailable: Callable[[], str | None] = lambda: None
    #: the kernel family or peer that runs it: "paper", "fast", "torch", "cuembed" ("" for none of them)
    kind: str = ""
    #: each batch is replayed from a CUDA graph captured when the variant is prepared
    graph: bool = False
    #: the colour it wears (the technique it adds last, in the paper's order)
    technique: Technique = TECHNIQUES["baseline"]
    #: a second technique it adds on top (``+window``, ``+l2p``), drawn as a hatch in that one's colour
    adds: Technique | None = None
    #: name of the :data:`dlrmlab.l2model.POLICIES` entry that models how it touches L2 (None: not modelled)
    l2_policy: str | None = None
    #: how figures and the report name it (the paper's configuration label where it is one); default: the name
    label: str = ""

    @property
    def title(self) -> str:
        """The label figures use: :attr:`label`, else the name."""
        return self.label or self.name

    @property
    def standalone(self) -> bool:
        """Its kernel family alone: no pinning, window or graph replay around its launches (so a caller that
        launches the family itself, as :mod:`dlrmlab.api` and :mod:`dlrmlab.dlrm` do, can run it)."""
        return not self.graph and set(self.families) - {"layout", "window"} <= {self.kind} and (
            "window" not in self.families or "layout" in self.families)  # a layout choice may stay plain


__all__ = ["TECHNIQUES", "EventPairs", "PrepareFn", "Prepared", "Technique", "Variant"]
