"""CUDA GPU or Numba's CUDA simulator: decided once, here, before ``numba.cuda`` is imported.

Numba picks the simulator at import time from ``NUMBA_ENABLE_CUDASIM``. We honour that variable when the
user set it; otherwise we ask the CUDA driver (through cuda-python) whether a GPU exists and switch to the
simulator when none does, so a laptop without a GPU runs every kernel, slowly, with the same results.

Everything that exists only on a real GPU gets its simulator stand-in in this module (``max_registers``,
timing events); custom PTX lives in :mod:`dlrmlab.intrinsics`, which also picks its stand-ins from
:data:`SIMULATOR`.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

_ENV = "NUMBA_ENABLE_CUDASIM"
#: The user's own setting of NUMBA_ENABLE_CUDASIM at import (None: not set), to say why we are in the simulator.
_USER_ENV: str | None = os.environ.get(_ENV)


def _driver_problem() -> str | None:
    """Why the CUDA driver gives no GPU, in words (None when it sees one)."""
    try:
        from cuda.bindings import driver  # may be missing or broken: then the simulator
    except Exception as e:
        return f"cuda-bindings cannot be imported ({type(e).__name__}: {e}); pip install 'cuda-bindings>=12.6'"
    try:
        (err,) = driver.cuInit(0)
    except Exception:
        return "no NVIDIA driver: libcuda.so was not found (install the NVIDIA driver on a machine with a GPU)"
    if int(err) != 0:
        return f"the NVIDIA driver did not start (cuInit: {getattr(err, 'name', err)})"
    try:
        err, count = driver.cuDeviceGetCount()
        if int(err) == 0 and int(count) > 0:
            return None
    except Exception:  # a broken driver counts as none
        pass
    return "the NVIDIA driver sees no CUDA device"


# dlrmlab picks its grids on purpose (tiny ones in the simulator and in tests): Numba's low-occupancy
# warning would only be noise. A user's own setting wins.
os.environ.setdefault("NUMBA_CUDA_LOW_OCCUPANCY_WARNINGS", "0")


def _decide() -> bool:
    if _ENV in os.environ:
        return os.environ[_ENV] not in ("", "0")
    if "numba.cuda" in sys.modules:  # the user imported numba.cuda first: it has already decided
        from numba import config  # numba: only when the user imported it already

        return bool(config.ENABLE_CUDASIM)
    simulator = _driver_problem() is not None
    if simulator:
        os.environ[_ENV] = "1"
    if "numba" in sys.modules:
        from numba.core import config  # numba: only when the user imported it already

        config.reload_config()
    return simulator


#: True when kernels run in Numba's CUDA simulator (no GPU, or NUMBA_ENABLE_CUDASIM=1).
SIMULATOR: bool = _decide()

from numba import cuda  # noqa: E402  (must follow the decision above)


def mode() -> str:
    """``"gpu"`` or ``"simulator"``."""
    return "simulator" if SIMULATOR else "gpu"


def describe_mode() -> str:
    return "no CUDA GPU: simulator mode" if SIMULATOR else "CUDA GPU"


def missing_toolkit() -> list[str]:
    """The CUDA toolkit pieces numba-cuda compiles kernels with that cannot be found: NVVM, libdevice, NVRTC.

    Without them a GPU is detected but the first kernel fails to compile; ``pip install -e ".[gpu]"``
    (numba-cuda[cu12]) installs them as wheels.
    """
    missing = []
    try:
        from cuda import pathfinder  # comes with the gpu extra only
    except Exception:
        return ["NVVM", "libdevice", "NVRTC"]
    for lib, label in (("nvvm", "NVVM"), ("nvrtc", "NVRTC")):
        try:
            pathfinder.load_nvidia_dynamic_lib(lib)
        except Exception:
            missing.append(label)
    try:
        from numba.cuda import cuda_paths  # numba-cuda's private module: may change

        found = cuda_paths._get_libdevice_path().info
        if not (found and os.path.isfile(found)):
            missing.append("libdevice")
    except Exception:
        missing.append("libdevice")
    return missing


def simulator_reasons() -> list[str]:
    """Why kernels run in the simulator here, one sentence each (empty on a GPU)."""
    if not SIMULATOR:
        return []
    if _USER_ENV not in (None, "", "0"):
        return [f"{_ENV}={_USER_ENV} is set in the environment"]
    why = _driver_problem()
    return [why or "numba.cuda was imported in simulator mode before dlrmlab"]


def default_preset() -> str:
    """The workload shape worth running here: ``paper`` on a GPU, ``tiny`` in the simulator."""
    return "tiny" if SIMULATOR else "paper"


def jit(*args: Any, max_registers: int | None = None, **kwargs: Any) -> Callable:
    """``numba.cuda.jit`` that accepts ``max_registers`` everywhere.

    The simulator rejects the keyword (it has no registers); there the cap is dropped, which changes
    speed only, never results.
    """
    if max_registers is not None and not SIMULATOR:
        kwargs["max_registers"] = int(max_registers)
    return cuda.jit(*args, **kwargs)


# --- timing events ---------------------------------------------------------------------------------------


class HostEvent:
    """Stand-in for a CUDA timing event in simulator mode (same methods; host clock). The simulator runs
    launches synchronously, so it measures simulated-kernel host time: never meaningful as speed."""

    def __init__(self) -> None:
        self.t: float | None = None

    def record(self, stream: Any = 0) -> None:
        self.t = time.perf_counter()

    def synchronize(self) -> None:
        pass

    def query(self) -> bool:
        return True

    def elapsed_time(self, end: HostEvent) -> float:
        if self.t is None or end.t is None:
            raise RuntimeError("event not recorded")
        return (end.t - self.t) * 1e3


def event() -> Any:
    """A timing event: ``cuda.event(timing=True)`` on a GPU, :class:`HostEvent` in the simulator."""
    return HostEvent() if SIMULATOR else cuda.event(timing=True)


# --- torch tensors seen by Numba -------------------------------------------------------------------------


def numba_view(t: Any) -> Any:
    """A Numba device array over torch tensor ``t``'s memory, no copy: CUDA tensors through
    ``__cuda_array_interface__`` (v2: no stream, so no implicit sync), CPU tensors (simulator) by wrapping
    their NumPy view. (Takes a tensor without importing torch: torch is an optional dependency.)"""
    bf16 = str(t.dtype) == "torch.bfloat16"
    if bf16:
        import torch  # heavy optional dependency: already imported by whoever made the tensor

        t = t.view(torch.int16)
    if SIMULATOR:
        from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray  # the simulator's array type: simulator only

        a = t.detach().numpy()
        return FakeCUDAArray(a.view(np.uint16) if bf16 else a)
    a = cuda.as_cuda_array(t.detach())
    return a.view(np.uint16) if bf16 else a
