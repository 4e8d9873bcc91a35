"""Whole-batch capture in a torch CUDA graph: the launch cost of every stage off the critical path.

``CapturedCall(model, dense, sparse)`` runs the call a few times on a side stream (kernels compile,
per-batch-size buffers are made, as torch's docs ask before capture), then records one more call with
``torch.cuda.graph``. ``replay()`` re-runs every kernel of that call, torch's and Numba's alike (Numba
launches go to torch's current stream, which during capture is the capturing stream), on the same memory;
``call(dense, sparse)`` first copies a new batch of the same shape into the captured inputs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from dlrmlab import backend
from dlrmlab.dlrm.kjt import KeyedJaggedTensor
from dlrmlab.errors import DlrmlabError


def _copy_into(static: Any, new: Any) -> None:
    if isinstance(static, torch.Tensor):
        if static.shape != new.shape:
            raise DlrmlabError(f"captured input has shape {tuple(static.shape)}, got {tuple(new.shape)}")
        static.copy_(new, non_blocking=True)
    elif isinstance(static, KeyedJaggedTensor):
        static.copy_(new)
    elif isinstance(static, list | tuple):
        for a, b in zip(static, new, strict=True):
            _copy_into(a, b)
    elif static is not new and static != new:
        raise DlrmlabError(f"captured argument {static!r} differs from {new!r}: capture again")


class CapturedCall:
    """``fn(*args)`` recorded once in a torch CUDA graph; see the module docstring.

    The graph holds the addresses of ``args`` and of everything ``fn`` allocated: keep this object (and
    ``args``) alive while replaying. ``output`` is overwritten by every replay; clone it to keep it.
    """

    def __init__(self, fn: Callable[..., Any], *args: Any, warmup: int = 2, capture_error_mode: str = "thread_local"):
        if backend.SIMULATOR or not torch.cuda.is_available():
            raise DlrmlabError("CUDA graph capture needs a CUDA GPU and a CUDA build of torch (simulator mode)")
        self.fn, self.args = fn, args
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(max(1, int(warmup))):
                fn(*args)
        torch.cuda.current_stream().wait_stream(side)
        torch.cuda.synchronize()
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, capture_error_mode=capture_error_mode):
            self.output = fn(*args)

    def replay(self) -> Any:
        """Enqueue the recorded kernels on the current stream (no sync); return the static output."""
        self.graph.replay()
        return self.output

    def call(self, *args: Any) -> Any:
        """Copy a new batch (same shapes) into the captured inputs, then replay."""
        _copy_into(list(self.args), list(args))
        return self.replay()

    def close(self) -> None:
        self.graph.reset()
