"""What happens around a stage's launches, as small context managers composed with ``ExitStack``:
L2 pinning (the paper's L2P), a persisting L2 window, CUDA-graph replay. Each one undoes on exit what it
did on entry, so an exception or a KeyboardInterrupt anywhere leaves the GPU as it was found (graph replay:
:func:`dlrmlab.graph.captured`)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from dlrmlab import backend, cudart, l2pin, l2window
from dlrmlab.backend import cuda
from dlrmlab.config import positive_int

#: Knobs of the pieces around a launch: pinning (the hot set, and how often it is pinned) and the window.
KNOBS: dict[str, frozenset[str]] = {
    "pin": frozenset({"hot_rows", "hot_file", "pin_every"}),
    "window": frozenset({"l2_budget", "hit_ratio"}),
}


@contextlib.contextmanager
def pinned(
    tables: Sequence[Any], dim: int, hot: Sequence[np.ndarray], element_bytes: int, pin_every: int = 1
) -> Iterator[Callable[[int, int, Any], None]]:
    """Yields ``pin(batch, table, stream)``: the pin kernel over table ``table``'s hot rows, on every
    ``pin_every``-th batch (the cost amortised while the hot set stays in L2). On exit, persisting lines
    are reset so later kernels do not inherit the pinned rows' priority."""
    every = positive_int("pin_every", pin_every)
    hot_dev = [cuda.to_device(np.ascontiguousarray(h, np.int64)) for h in hot]

    def pin(batch: int, table: int, stream: Any) -> None:
        if batch % every == 0:
            l2pin.pin(tables[table], dim, hot_dev[table], element_bytes, stream)

    try:
        yield pin
    finally:
        if not backend.SIMULATOR:
            cudart.reset_persisting_l2()


def persisting_window(budget_bytes: int | None) -> contextlib.AbstractContextManager[l2window.PersistingL2]:
    """The persisting-L2 carve-out (default: the device maximum) for the block; see
    :func:`dlrmlab.l2window.persisting_l2`, which restores the limit, windows and persisting lines."""
    lim = l2window.l2_limits()
    return l2window.persisting_l2(int(budget_bytes or lim["persisting_l2_max_bytes"]))
