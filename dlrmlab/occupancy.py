"""Occupancy (the paper's OptMT): a calculator, compiled-kernel resource queries, and a register-cap sweep.

Occupancy = resident warps per SM / the SM's maximum. A block is resident only if the SM has room for
its threads, its registers (allocated per warp in 256-register units), its shared memory (plus a
per-block reservation) and a block slot. The scarcest resource is the limiter. PyTorch's kernel is
register-limited on A100; capping registers (``max_registers``, the paper's ``-maxrregcount 42``) trades
possible spills for more warps in flight to hide memory latency.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pandas as pd

from dlrmlab import backend, device
from dlrmlab.errors import DlrmlabError

REG_ALLOC_UNIT = 256  # registers are allocated per warp in units of 256
SMEM_ALLOC_UNIT = 128


@dataclass(frozen=True)
class Occupancy:
    blocks_per_sm: int
    warps_per_sm: int
    max_warps_per_sm: int
    limiter: str
    limits: dict

    @property
    def theoretical(self) -> float:
        return self.warps_per_sm / self.max_warps_per_sm


def theoretical(
    registers: int, threads_per_block: int, smem_per_block: int = 0, limits: dict | None = None
) -> Occupancy:
    """Theoretical occupancy of a kernel using ``registers`` per thread (the CUDA occupancy calculator)."""
    lim = limits or device.limits()
    if not 1 <= threads_per_block <= lim["threads_per_block"]:
        raise DlrmlabError(f"threads per block must be in 1..{lim['threads_per_block']}, got {threads_per_block}")
    ws = lim["warp_size"]
    max_warps = lim["threads_per_sm"] // ws
    warps_per_block = math.ceil(threads_per_block / ws)
    regs_per_warp = math.ceil(max(registers, 1) * ws / REG_ALLOC_UNIT) * REG_ALLOC_UNIT
    if regs_per_warp * warps_per_block > lim["regs_per_block"]:
        by_regs = 0
    else:
        # registers live in 4 SM sub-partitions; a warp's registers come from one of them
        by_regs = ((lim["regs_per_sm"] // 4 // regs_per_warp) * 4) // warps_per_block
    smem = math.ceil((smem_per_block + lim["smem_reserved_per_block"]) / SMEM_ALLOC_UNIT) * SMEM_ALLOC_UNIT
    by_smem = lim["smem_per_sm"] // smem if smem_per_block > 0 else lim["blocks_per_sm"]
    limits_ = {
        "warps": max_warps // warps_per_block,
        "registers": by_regs,
        "shared_memory": by_smem,
        "blocks": lim["blocks_per_sm"],
    }
    limiter = min(limits_, key=lambda k: (limits_[k], ["warps", "blocks", "registers", "shared_memory"].index(k)))
    blocks = limits_[limiter]
    return Occupancy(blocks, blocks * warps_per_block, max_warps, limiter, limits_)


# --- compiled kernels ------------------------------------------------------------------------------------


def compiled(kernel: Any) -> Any:
    """The one compiled overload of a Numba CUDA dispatcher (after its first launch)."""
    overloads = list(getattr(kernel, "overloads", {}).values())
    if not overloads:
        raise DlrmlabError("kernel has not been compiled yet: launch it once first")
    return overloads[-1]


def kernel_resources(kernel: Any) -> dict:
    """Registers per thread, static shared memory and local (spill) bytes of a compiled kernel
    (all None in the simulator, which has no registers)."""
    out = {"registers": None, "shared_bytes": None, "local_bytes": None}
    if backend.SIMULATOR:
        return out
    k = compiled(kernel)
    try:
        out["registers"] = int(k.regs_per_thread)
        out["shared_bytes"] = int(k.shared_mem_per_block)
        out["local_bytes"] = int(k.local_mem_per_thread)
    except AttributeError:  # simulator kernels have no resources
        pass
    return out


def occupancy_table(registers, threads_per_block: int = 256, smem_per_block: int = 0, limits: dict | None = None):
    """Theoretical occupancy and its limiter for each register count (a tidy DataFrame)."""
    rows = []
    for r in registers:
        o = theoretical(int(r), threads_per_block, smem_per_block, limits)
        rows.append({"registers": int(r), "threads_per_block": threads_per_block, "blocks_per_sm": o.blocks_per_sm,
                     "warps_per_sm": o.warps_per_sm, "theoretical_occupancy": o.theoretical, "limiter": o.limiter})
    return pd.DataFrame(rows)
