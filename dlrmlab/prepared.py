"""What preparing a variant (:mod:`dlrmlab.variants`) or a peer (:mod:`dlrmlab.peers`) returns: everything that
is not part of serving a request (compiling, allocating, capturing graphs, setting L2 windows) done, and closures
that do the part that is. Below both, so peers need not import the variants table that lists them."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dlrmlab import backend

#: One (start, end) CUDA event pair per launch, as returned by ``Prepared.per_kernel``.
EventPairs = Sequence[tuple[Any, Any]]


@dataclass
class Prepared:
    """A variant ready to run on one :class:`~dlrmlab.bench.case.BenchCase`."""

    #: enqueue the whole embedding stage for batch ``i`` on ``case.stream`` (async: no sync inside)
    run: Callable[[int], None]
    #: run batch ``i``, synchronize, return host outputs, one (batch, dim) array per table
    result: Callable[[int], list[np.ndarray]]
    #: variant parameters; they go into result rows
    params: dict = field(default_factory=dict)
    #: optional: enqueue the stage for batch ``i`` with a CUDA event pair around EACH launch (events from
    #: :func:`dlrmlab.backend.event`, recorded on ``case.stream``) and return the pairs, in
    #: launch order; no sync inside. The harness sums each run's pairs into ``kernel_ms``.
    per_kernel: Callable[[int], EventPairs] | None = None
    #: restore any GPU state the variant changed (L2 windows, persisting-L2 limit, graphs)
    close: Callable[[], None] = lambda: None


#: ``prepare(case, knobs)``: knobs sorted by family (see :data:`dlrmlab.variants.KNOBS`), validated.
PrepareFn = Callable[[Any, dict[str, dict]], Prepared]


def event_pairs(stream: Any, launches: Iterable[Callable[[], Any]]) -> list[tuple[Any, Any]]:
    """Each launch between a CUDA event pair recorded on ``stream`` (a ``Prepared.per_kernel``'s pairs)."""
    pairs = []
    for launch in launches:
        start, end = backend.event(), backend.event()
        start.record(stream)
        launch()
        end.record(stream)
        pairs.append((start, end))
    return pairs
