"""Benchmark peers: other projects' embedding-lookup kernels, run beside dlrmlab's on the same inputs.

A peer is never part of dlrmlab: it is built at run time from a copy the user names (for cuEmbed, the
directory in ``DLRMLAB_CUEMBED_DIR``), and when it cannot be built or run here its variants raise
:class:`PeerUnavailable`, which the harness turns into a row that says why while the other variants run.

Every peer is one module with the same shape, and one row per variant in :data:`dlrmlab.variants.VARIANTS`:
``prepare(case, knobs) -> Prepared`` (:mod:`dlrmlab.prepared`; a peer that can replay a CUDA graph takes
``graph=True``), ``KNOBS`` (the knobs it takes), ``KERNEL_REGEX`` (its kernels' names for Nsight Compute)
and ``unavailable() -> str | None`` (why it cannot run here). Peers do not import the variants table.

* :mod:`dlrmlab.peers.torch` — ``torch.nn.functional.embedding_bag``, one call per table: variant ``torch``
  (the baseline every ratio uses).
* :mod:`dlrmlab.peers.cuembed` — NVIDIA cuEmbed (header-only CUDA, Apache-2.0), through a small C shim
  compiled with nvcc and called with ctypes: variants ``cuembed`` and ``cuembed_graph``.
"""

from __future__ import annotations

from dlrmlab.errors import DlrmlabError


class PeerUnavailable(DlrmlabError):
    """A peer library cannot run on this machine (no nvcc, no source directory, simulator mode)."""


__all__ = ["PeerUnavailable"]
