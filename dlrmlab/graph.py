"""CUDA-graph capture and replay of any enqueued stage (the fused path's, cuEmbed's calls, a pinning pass).

>>> g = StageGraph.capture(lambda s: fused_forward(tables, jagged_dev, out=out, stream=s), inputs=[out])
>>> g.replay()                                               # a few microseconds of host time per batch
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from dlrmlab import backend, cudart
from dlrmlab.backend import cuda
from dlrmlab.errors import DlrmlabError


class StageGraph:
    """A captured stage (CUDA graph) replayed with ``cuGraphLaunch``: launch cost off the critical path.

    The graph holds raw device pointers: replay refuses if any array registered in ``inputs`` has been
    reallocated (its pointer or size changed) since capture. A context manager: leaving it frees the graph.
    """

    def __init__(self, exe: Any, graph: Any, stream: Any, fingerprint: list[tuple]):
        self._exe, self._graph, self.stream, self._fingerprint = exe, graph, stream, fingerprint

    @staticmethod
    def _fp(arrays: Sequence[Any]) -> list[tuple]:
        return [(a.device_ctypes_pointer.value, int(a.nbytes)) for a in arrays]

    @classmethod
    def capture(cls, enqueue: Callable[[Any], Any], inputs: Sequence[Any], stream: Any = None) -> StageGraph:
        """Record what ``enqueue(stream)`` launches (run once first, outside capture, to compile it)."""
        if backend.SIMULATOR:
            raise DlrmlabError("CUDA graphs need a CUDA GPU (simulator mode)")

        stream = stream or cuda.stream()
        enqueue(stream)
        stream.synchronize()
        cudart.begin_capture(stream)
        try:
            enqueue(stream)
        finally:
            exe, graph = cudart.end_capture(stream)
        return cls(exe, graph, stream, cls._fp(inputs))

    def replay(self, current_inputs: Sequence[Any] | None = None) -> None:
        """Launch the graph on its stream. Pass the arrays you mean to use to have them checked."""
        if self._exe is None:
            raise DlrmlabError("graph was destroyed")
        if current_inputs is not None and self._fp(current_inputs) != self._fingerprint:
            raise DlrmlabError("graph inputs were reallocated since capture: capture the stage again")
        cudart.graph_launch(self._exe, self.stream)

    def close(self) -> None:
        if self._exe is not None:
            cudart.graph_destroy(self._exe, self._graph)
            self._exe = None

    def __enter__(self) -> StageGraph:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def captured(enqueues: Sequence[Callable[[Any], Any]], stream: Any, inputs: Sequence[Any]) -> Iterator[list]:
    """One captured graph per enqueue function (per batch), all freed on exit (those made so far, if a
    capture fails)."""
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(StageGraph.capture(e, inputs=inputs, stream=stream)) for e in enqueues]
