"""The GPU's limits and name, from one function: SMs, L2, registers, threads, shared memory.

In simulator mode there is no GPU: the H100's figures stand in, so occupancy maths, grid sizes and the
L2 model give the answers a user would get on the machine the results were measured on.
"""

from __future__ import annotations

import re
from functools import lru_cache

from dlrmlab.cudart import device_properties

#: NVIDIA H100 80GB HBM3 (sm_90), as cudaGetDeviceProperties reports it (../results/h100).
H100_LIMITS: dict = {
    "name": "simulated (H100 limits)",
    "compute_capability": "9.0",
    "major": 9,
    "minor": 0,
    "sms": 132,
    "l2_bytes": 52_428_800,
    "persisting_l2_max_bytes": 32_768_000,
    "access_policy_max_window_bytes": 134_217_728,
    "regs_per_sm": 65536,
    "regs_per_block": 65536,
    "threads_per_sm": 2048,
    "threads_per_block": 1024,
    "blocks_per_sm": 32,
    "smem_per_sm": 233472,
    "smem_reserved_per_block": 1024,
    "warp_size": 32,
    "mem_clock_khz": 2_619_000,
    "mem_bus_bits": 5120,
}

_FAMILIES = ("h100", "h200", "h800", "gh200", "a100", "a800", "b200", "l40s", "l40", "l4", "v100")


def limits() -> dict:
    """Properties of the current GPU (names follow cudaDeviceProp), or the H100's in simulator mode."""
    return dict(_limits())


@lru_cache(maxsize=1)
def _limits() -> dict:
    from dlrmlab import backend  # numba (backend): the CLI's parser imports device

    if backend.SIMULATOR:
        return dict(H100_LIMITS)

    return device_properties()


def family(name: str | None = None) -> str:
    """Short lower-case GPU family (``h100``, ``a100``, ...) of ``name`` or of this GPU; ``simulator``
    without one. Results directories and the shipped tuning table are keyed by it."""
    from dlrmlab import backend  # numba (backend): the CLI's parser imports device

    if name is None:
        if backend.SIMULATOR:
            return "simulator"
        name = limits()["name"]
    low = name.lower()
    m = re.search("|".join(sorted(_FAMILIES, key=len, reverse=True)), low)
    return m.group(0) if m else re.sub(r"[^a-z0-9]+", "-", low).strip("-")
