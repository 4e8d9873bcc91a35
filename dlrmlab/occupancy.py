"""Occupancy (the paper's OptMT): a calculator, compiled-kernel resource queries, and a register-cap sweep.

Occupancy = resident warps per SM / the SM's maximum. A block is resident only if the SM has room for
its threads, its registers (allocated per warp in 256-register units), its shared memory (plus a
per-block reservation) and a block slot. The scarcest resource is the limiter. PyTorch's kernel is
register-limited on A100; capping registers (``max_registers``, the paper's ``-maxrregcount 42``) trades
possible spills for more warps in flight to hide memory latency.

Without a GPU, :func:`ptxas_resources` still gets the paper kernels' registers, shared memory and spills:
Numba compiles them to PTX for ``sm_90`` and NVIDIA's ``ptxas`` assembles it (``-v``), where the toolkit's
wheels are installed (the ``gpu`` extra: nvidia-cuda-nvcc holds NVVM, libdevice and ptxas). The driver
links with LTO, so a GPU's own count can differ by a register or two.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd

from dlrmlab import backend, device
from dlrmlab.config import Combine
from dlrmlab.errors import DlrmlabError
from dlrmlab.fused import configure
from dlrmlab.kernels.fused import FastConfig
from dlrmlab.kernels.fused import build as build_fused
from dlrmlab.kernels.paper import PaperConfig, build
from dlrmlab.variants import knobs_for

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


# --- register counts without a GPU: Numba -> PTX -> ptxas ------------------------------------------------

#: The architecture ptxas compiles for where no GPU says its own: the H100's (the reference GPU's).
PTXAS_CC = (9, 0)
_PTXAS_LINE = re.compile(r"Used (\d+) registers")
_SPILL_LINE = re.compile(r"(\d+) bytes spill stores, (\d+) bytes spill loads")
_SMEM = re.compile(r"(\d+) bytes smem")


def ptxas_path() -> str | None:
    """``ptxas`` from NVIDIA's toolkit wheels (nvidia-cuda-nvcc, the ``gpu`` extra) or else the PATH."""
    try:
        from cuda import pathfinder  # comes with the gpu extra only

        found = pathfinder.find_nvidia_binary_utility("ptxas")
        if found:
            return str(found)
    except Exception:  # no pathfinder, or one without the utility finder
        pass
    return shutil.which("ptxas")


def why_no_ptxas() -> str | None:
    """Why the kernels cannot be compiled to machine code here without a GPU (None: they can)."""
    missing = backend.missing_toolkit()  # NVVM and libdevice make the PTX; numba-cuda asks NVRTC for the archs
    if ptxas_path() is None:
        missing.append("ptxas")
    if not missing:
        return None
    return (f"NVIDIA's toolkit wheels are not installed here (missing: {', '.join(missing)}); "
            'pip install -e ".[gpu]" installs them (about 450 MB installed, no GPU needed)')  # fmt: skip


def parse_ptxas(text: str) -> dict:
    """Registers, static shared memory and spill bytes from ``ptxas -v``'s report of one kernel."""
    regs = _PTXAS_LINE.search(text)
    if regs is None:
        raise DlrmlabError(f"ptxas -v printed no register count: {text.strip()[:200]!r}")
    spill = _SPILL_LINE.search(text)
    smem = _SMEM.search(text)
    return {"registers": int(regs.group(1)), "shared_bytes": int(smem.group(1)) if smem else 0,
            "local_bytes": int(spill.group(1)) if spill else 0}  # fmt: skip


def _paper_signature(dtype: str, index_dtype: str) -> tuple:
    """The paper kernel's argument types as a launch passes them (:func:`dlrmlab.launch.paper`)."""
    from numba import typeof  # numba: the child process compiles with the real CUDA target

    args = (np.zeros(1, dtype), 0, np.zeros(1, index_dtype), np.zeros(2, np.int64), np.zeros(1, np.float32), -1,
            np.zeros((1, 1), np.float32))  # fmt: skip
    return tuple(typeof(a) for a in args)


def _fused_signature(cfg: FastConfig) -> tuple:
    """The fused kernel's argument types as :func:`dlrmlab.fused.fused_forward` passes them."""
    from numba import types  # numba: the child process compiles with the real CUDA target

    table = types.uint8 if cfg.quantized else (types.float32 if cfg.dtype == "float32" else types.uint16)
    i64 = types.Array(types.int64, 1, "C")
    return (types.Array(table, 1, "C"), i64, i64, i64, i64, i64, i64, types.Array(types.float32, 1, "C"),
            types.int64, types.Array(types.float32, 2, "C"), i64, i64)  # fmt: skip


def _kernels(req: dict):
    """(row label, Python kernel, signature, register cap, threads per block) of each requested kernel."""
    for variant in req.get("variants", []):
        cfg = PaperConfig.from_knobs(req["dtype"], Combine(req["mode"], req["weighted"]),
                                     **knobs_for(variant, {})["paper"])  # fmt: skip
        sig = _paper_signature(req["dtype"], req["index_dtype"])
        yield {"variant": variant}, build(cfg).py_func, sig, cfg.max_registers, cfg.block[0] * cfg.block[1]
    for dim, dtype, params in req.get("fused", []):
        cfg = configure(dim, dtype, tuned_params=params)
        label = {"variant": "fast", "dim": dim, "dtype": dtype, **{k: getattr(cfg, k) for k in sorted(params)}}
        yield label, build_fused(cfg).py_func, _fused_signature(cfg), cfg.max_registers, cfg.threads


def _ptxas_child() -> None:
    """In a child process with the real CUDA target and no GPU: each requested kernel (paper variants, fused
    configurations) to PTX (Numba) and through ``ptxas -v``; prints one JSON row per kernel. Numba asks the
    current device for its compute capability when it types a call to a device function: a stand-in answers."""
    from numba import cuda  # numba: the child process compiles with the real CUDA target
    from numba.cuda import dispatcher  # numba-cuda's module: its device query, answered without a GPU

    req = json.load(sys.stdin)
    cc = tuple(req["cc"])
    dispatcher.get_current_device = lambda: SimpleNamespace(compute_capability=cc)
    rows, arch = [], f"sm_{cc[0]}{cc[1]}"
    with tempfile.TemporaryDirectory() as tmp:
        for n, (label, func, sig, max_registers, threads) in enumerate(_kernels(req)):
            ptx, _ = cuda.compile_ptx(func, sig, cc=cc)
            src = Path(tmp) / f"k{n}.ptx"
            src.write_text(ptx)
            cap = ["-maxrregcount", str(max_registers)] if max_registers else []
            done = subprocess.run([req["ptxas"], f"-arch={arch}", "-v", *cap, str(src), "-o", str(src) + ".cubin"],
                                  capture_output=True, text=True, timeout=60)  # fmt: skip
            if done.returncode != 0:
                raise DlrmlabError(f"ptxas failed on {label}: {done.stderr.strip()[:300]}")
            rows.append({**label, "arch": arch, "threads_per_block": threads, **parse_ptxas(done.stdout + done.stderr)})
    print(json.dumps(rows))


def ptxas_resources(variants: list[str], dtype: str = "float32", index_dtype: str = "int64", mode: str = "sum",
                    weighted: bool = False, cc: tuple[int, int] = PTXAS_CC, timeout: float = 300,
                    fused: list[tuple[int, str, dict]] = ()) -> pd.DataFrame:
    """Registers, shared memory and spill bytes of paper-family ``variants``' kernels, and of the fused kernel
    at each ``fused`` (width, table dtype, knobs), as ptxas compiles them for ``cc``, on a machine without a GPU
    (a child process with Numba's real CUDA target, since this one may run the simulator). Raises
    DlrmlabError saying why where the toolkit is missing or a step fails."""
    why = why_no_ptxas()
    if why:
        raise DlrmlabError(why)
    req = {"variants": list(variants), "dtype": dtype, "index_dtype": index_dtype, "mode": mode,
           "weighted": weighted, "cc": list(cc), "ptxas": ptxas_path(), "fused": [list(f) for f in fused]}  # fmt: skip
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "0"}
    code = "from dlrmlab import occupancy; occupancy._ptxas_child()"
    try:
        done = subprocess.run([sys.executable, "-c", code], input=json.dumps(req), capture_output=True, text=True,
                              env=env, timeout=timeout)  # fmt: skip
    except subprocess.TimeoutExpired:
        raise DlrmlabError(f"compiling the kernels to PTX took over {timeout:g} s") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise DlrmlabError(f"compiling the kernels for sm_{cc[0]}{cc[1]} without a GPU failed: {last}")
    return pd.DataFrame(json.loads(done.stdout.strip().splitlines()[-1]))
