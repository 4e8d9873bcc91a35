"""What a variant is: ``prepare(case, **params) -> Prepared``.

A variant does everything that is not part of serving a request (compiling kernels, allocating outputs,
capturing graphs, setting L2 windows) in ``prepare`` and returns closures that do the part that is.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

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
    #: Nsight Compute kernel-name filter (a regex)
    kernel_regex: str | None = None
    #: optional: enqueue the stage for batch ``i`` with a CUDA event pair around EACH launch (events from
    #: :func:`dlrmlab.backend.event`, recorded on ``case.stream``) and return the pairs, in
    #: launch order; no sync inside. The harness sums each run's pairs into ``kernel_ms``.
    per_kernel: Callable[[int], EventPairs] | None = None
    #: restore any GPU state the variant changed (L2 windows, persisting-L2 limit, graphs)
    close: Callable[[], None] = lambda: None


#: ``prepare(case, knobs)``: knobs sorted by family (see :data:`dlrmlab.config.KNOBS`), validated.
PrepareFn = Callable[[Any, dict[str, dict]], Prepared]


@dataclass(frozen=True)
class Variant:
    """One named configuration: what it runs, which knob families it takes, and the knobs it fixes."""

    name: str
    description: str
    prepare: PrepareFn
    #: knob families the variant accepts, e.g. ("paper", "pin")
    families: tuple[str, ...] = ()
    #: knobs the variant sets unless the caller overrides them, by family
    fixed: dict = field(default_factory=dict)
    gpu_only: bool = False
    #: regex of its embedding kernels' names (for Nsight Compute)
    kernels: str = "embedding_bag"
    #: why the variant cannot run here (None: it can); checked before anything is allocated
    unavailable: Callable[[], str | None] = lambda: None
