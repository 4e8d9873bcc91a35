"""Every cuda-python (cuda.bindings) call dlrmlab makes, wrapped once, with its error checked.

Numba owns the CUDA context (the device's primary context); the driver and runtime calls here act on that
same context. Nothing here is usable in simulator mode: callers check :data:`dlrmlab.backend.SIMULATOR`.
"""

from __future__ import annotations

import importlib.metadata as md
from functools import lru_cache
from typing import Any


class CudaError(RuntimeError):
    """A CUDA driver/runtime call failed."""


def _check(result: Any, what: str) -> Any:
    """cuda-python returns ``(err, *values)``; raise on error, return the values."""
    if not isinstance(result, tuple):
        result = (result,)
    err, rest = result[0], result[1:]
    if int(err) != 0:
        name = getattr(err, "name", str(err))
        raise CudaError(f"{what} failed: {name}")
    if not rest:
        return None
    return rest[0] if len(rest) == 1 else rest


def _driver():
    from cuda.bindings import driver  # cuda-python at the first call: importing cudart stays cheap

    return driver


def _runtime():
    from cuda.bindings import runtime  # cuda-python at the first call: importing cudart stays cheap

    return runtime


def _ensure_context() -> None:
    """Make Numba create/activate the primary context so driver calls have one."""
    from numba import cuda  # numba.cuda at the first call: importing cudart stays cheap

    cuda.current_context()


@lru_cache(maxsize=8)
def device_properties(device: int = 0) -> dict:
    """Properties dlrmlab needs (names follow cudaDeviceProp)."""
    rt = _runtime()
    _ensure_context()
    p = _check(rt.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
    attr = rt.cudaDeviceAttr

    def attribute(name: str) -> int | None:
        a = getattr(attr, name, None)
        if a is None:
            return None
        err, v = rt.cudaDeviceGetAttribute(a, device)
        return int(v) if int(err) == 0 else None

    name = p.name.decode() if isinstance(p.name, bytes) else str(p.name)
    return {
        "name": name.rstrip("\x00"),
        "compute_capability": f"{p.major}.{p.minor}",
        "major": int(p.major),
        "minor": int(p.minor),
        "sms": int(p.multiProcessorCount),
        "l2_bytes": int(p.l2CacheSize),
        "persisting_l2_max_bytes": int(p.persistingL2CacheMaxSize),
        "access_policy_max_window_bytes": int(p.accessPolicyMaxWindowSize),
        "regs_per_sm": int(p.regsPerMultiprocessor),
        "regs_per_block": int(p.regsPerBlock),
        "threads_per_sm": int(p.maxThreadsPerMultiProcessor),
        "threads_per_block": int(p.maxThreadsPerBlock),
        "blocks_per_sm": int(p.maxBlocksPerMultiProcessor),
        "smem_per_sm": int(p.sharedMemPerMultiprocessor),
        "smem_per_block_optin": int(p.sharedMemPerBlockOptin),
        "smem_reserved_per_block": int(p.reservedSharedMemPerBlock),
        "warp_size": int(p.warpSize),
        "global_mem_bytes": int(p.totalGlobalMem),
        "sm_clock_khz": attribute("cudaDevAttrClockRate"),
        "mem_clock_khz": attribute("cudaDevAttrMemoryClockRate"),
        "mem_bus_bits": attribute("cudaDevAttrGlobalMemoryBusWidth"),
    }


def driver_version() -> str:
    v = _check(_driver().cuDriverGetVersion(), "cuDriverGetVersion")
    return f"{v // 1000}.{(v % 1000) // 10}"


def runtime_version() -> str:
    v = _check(_runtime().cudaRuntimeGetVersion(), "cudaRuntimeGetVersion")
    return f"{v // 1000}.{(v % 1000) // 10}"


def pci_bus_id(device: int = 0) -> str:
    """The device's PCI bus id (``domain:bus:device.function``), to find the same GPU in NVML/nvidia-smi."""
    raw = _check(_runtime().cudaDeviceGetPCIBusId(32, int(device)), "cudaDeviceGetPCIBusId")
    text = raw.decode(errors="replace") if isinstance(raw, bytes | bytearray) else str(raw)
    return text.split("\x00", 1)[0].strip()


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for pkg in ("numba", "numba-cuda", "cuda-bindings", "numpy", "torch"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    if out["torch"] is None:  # torch used from a checkout or an image without dist-info
        try:
            import torch  # torch: optional and slow to import

            out["torch"] = torch.__version__
        except Exception:
            pass
    return out


# --- L2 persistence --------------------------------------------------------------------------------------


def _cu_stream(stream: Any):
    drv = _driver()
    handle = getattr(stream, "handle", stream)
    handle = getattr(handle, "value", handle)  # ctypes c_void_p from older numba
    return drv.CUstream(int(handle or 0))


def stream_ptr(stream: Any) -> int:
    """A Numba stream (or raw handle) as the integer ``cudaStream_t`` other libraries take (0: default)."""
    return int(_cu_stream(stream))


def get_persisting_l2_limit() -> int:
    drv = _driver()
    _ensure_context()
    limit = drv.CUlimit.CU_LIMIT_PERSISTING_L2_CACHE_SIZE
    return int(_check(drv.cuCtxGetLimit(limit), "cuCtxGetLimit(persisting L2)"))


def set_persisting_l2_limit(nbytes: int) -> None:
    drv = _driver()
    _ensure_context()
    limit = drv.CUlimit.CU_LIMIT_PERSISTING_L2_CACHE_SIZE
    _check(drv.cuCtxSetLimit(limit, int(nbytes)), "cuCtxSetLimit(persisting L2)")


def reset_persisting_l2() -> None:
    """Demote every persisting L2 line to normal (cuCtxResetPersistingL2Cache)."""
    _check(_driver().cuCtxResetPersistingL2Cache(), "cuCtxResetPersistingL2Cache")


def set_access_policy_window(
    stream: Any, base_ptr: int, num_bytes: int, hit_ratio: float, persist: bool = True
) -> None:
    """Set (or, with ``num_bytes == 0``, clear) a stream's L2 access-policy window.

    Hits are persisting (or normal when ``persist`` is False), misses streaming.
    """
    drv = _driver()
    v = drv.CUstreamAttrValue()
    w = v.accessPolicyWindow
    w.base_ptr = int(base_ptr)
    w.num_bytes = int(num_bytes)
    w.hitRatio = float(hit_ratio)
    prop = drv.CUaccessProperty
    w.hitProp = prop.CU_ACCESS_PROPERTY_PERSISTING if persist and num_bytes else prop.CU_ACCESS_PROPERTY_NORMAL
    w.missProp = prop.CU_ACCESS_PROPERTY_STREAMING if num_bytes else prop.CU_ACCESS_PROPERTY_NORMAL
    v.accessPolicyWindow = w
    attr = drv.CUlaunchAttributeID.CU_LAUNCH_ATTRIBUTE_ACCESS_POLICY_WINDOW
    _check(drv.cuStreamSetAttribute(_cu_stream(stream), attr, v), "cuStreamSetAttribute(access policy window)")


# --- graphs ----------------------------------------------------------------------------------------------


def begin_capture(stream: Any) -> None:
    drv = _driver()
    mode = drv.CUstreamCaptureMode.CU_STREAM_CAPTURE_MODE_THREAD_LOCAL
    _check(drv.cuStreamBeginCapture(_cu_stream(stream), mode), "cuStreamBeginCapture")


def end_capture(stream: Any) -> Any:
    """End a capture; return an instantiated executable graph (CUgraphExec) and its graph."""
    drv = _driver()
    graph = _check(drv.cuStreamEndCapture(_cu_stream(stream)), "cuStreamEndCapture")
    exe = _check(drv.cuGraphInstantiate(graph, 0), "cuGraphInstantiate")
    return exe, graph


def graph_launch(exe: Any, stream: Any) -> None:
    _check(_driver().cuGraphLaunch(exe, _cu_stream(stream)), "cuGraphLaunch")


def graph_destroy(exe: Any, graph: Any) -> None:
    drv = _driver()
    _check(drv.cuGraphExecDestroy(exe), "cuGraphExecDestroy")
    _check(drv.cuGraphDestroy(graph), "cuGraphDestroy")


# --- pinned, mapped host memory ----------------------------------------------------------------------------

#: cudaHostAllocPortable | cudaHostAllocMapped: pinned for every context, mapped into the GPU's address space
HOST_ALLOC_MAPPED = 0x01 | 0x02
#: cudaHostRegisterPortable | cudaHostRegisterMapped
HOST_REGISTER_MAPPED = 0x01 | 0x02


def host_alloc_mapped(nbytes: int) -> int:
    """Pinned host memory mapped into the device's address space (cudaHostAlloc); its host address."""
    _ensure_context()
    return int(_check(_runtime().cudaHostAlloc(int(nbytes), HOST_ALLOC_MAPPED), f"cudaHostAlloc({nbytes} bytes)"))


def host_free(ptr: int) -> None:
    """Unpin and unmap memory from :func:`host_alloc_mapped` (cudaFreeHost)."""
    _check(_runtime().cudaFreeHost(int(ptr)), "cudaFreeHost")


def host_register_mapped(ptr: int, nbytes: int) -> None:
    """Pin and map existing host memory (cudaHostRegister)."""
    _ensure_context()
    _check(_runtime().cudaHostRegister(int(ptr), int(nbytes), HOST_REGISTER_MAPPED), "cudaHostRegister")


def host_unregister(ptr: int) -> None:
    _check(_runtime().cudaHostUnregister(int(ptr)), "cudaHostUnregister")


def host_device_pointer(ptr: int) -> int:
    """The device address of mapped host memory (cudaHostGetDevicePointer); fails once it is unmapped."""
    return int(_check(_runtime().cudaHostGetDevicePointer(int(ptr), 0), "cudaHostGetDevicePointer"))


def mem_get_info() -> tuple[int, int]:
    """``(free, total)`` bytes of the current device (cudaMemGetInfo)."""
    _ensure_context()
    free, total = _check(_runtime().cudaMemGetInfo(), "cudaMemGetInfo")
    return int(free), int(total)
