"""Where a measurement was taken: GPU, clocks, driver and package versions (columns of every result row).

A number without its clock is hard to trust (the GPU idles at 375 MHz and boosts to ~1980 MHz), so the
SM clock is read at the start and end of every timed region: from NVML (``pynvml``, nvidia-ml-py) when it
imports, else from ``nvidia-smi``, else not at all (``None``).
"""

from __future__ import annotations

import shutil
import subprocess
from functools import lru_cache
from typing import Any

from dlrmlab import backend, cudart


@lru_cache(maxsize=1)
def _bus_id() -> str | None:
    try:
        return cudart.pci_bus_id(backend.cuda.get_current_device().id)
    except Exception:  # best effort: the clock reader then falls back to the first GPU
        return None


@lru_cache(maxsize=1)
def _nvml_handle() -> Any:
    """NVML handle of the GPU Numba uses (matched by PCI bus id), or None without pynvml."""
    try:
        import pynvml  # pynvml: optional
    except Exception:
        return None
    try:
        pynvml.nvmlInit()
        bus = _bus_id()
        if bus:
            try:
                return pynvml.nvmlDeviceGetHandleByPciBusId(bus.encode())
            except Exception:
                pass
        return pynvml.nvmlDeviceGetHandleByIndex(0)
    except Exception:
        return None


def _nvidia_smi(field: str) -> str | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    base = [exe, f"--query-gpu={field}", "--format=csv,noheader,nounits"]
    bus = _bus_id()
    for cmd in ([*base, "-i", bus], base) if bus else (base,):
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        lines = p.stdout.strip().splitlines()
        if p.returncode == 0 and lines:
            return lines[0].strip()
    return None


def clock_source() -> str | None:
    """``"nvml"``, ``"nvidia-smi"`` or None: where :func:`sm_clock_mhz` reads from."""
    if backend.SIMULATOR:
        return None
    if _nvml_handle() is not None:
        return "nvml"
    return "nvidia-smi" if shutil.which("nvidia-smi") else None


def _sm_clock(nvml_query: str, smi_field: str) -> int | None:
    """An SM clock in MHz, from NVML (``pynvml.<nvml_query>``) or nvidia-smi (``smi_field``); None if unknown."""
    src = clock_source()
    try:
        if src == "nvml":
            import pynvml  # pynvml: optional

            return int(getattr(pynvml, nvml_query)(_nvml_handle(), pynvml.NVML_CLOCK_SM))
        if src == "nvidia-smi":
            v = _nvidia_smi(smi_field)
            return int(float(v)) if v is not None else None
    except Exception:  # no reading is better than a failed measurement
        return None
    return None


def sm_clock_mhz() -> int | None:
    """Current SM clock of the GPU in MHz; None in simulator mode or when nothing can read it."""
    return _sm_clock("nvmlDeviceGetClockInfo", "clocks.sm")


@lru_cache(maxsize=1)
def max_sm_clock_mhz() -> int | None:
    """The GPU's maximum SM clock in MHz (what a warmed-up GPU should approach); None if unknown."""
    return _sm_clock("nvmlDeviceGetMaxClockInfo", "clocks.max.sm")


def _driver_version() -> str | None:
    if _nvml_handle() is not None:
        try:
            import pynvml  # pynvml: optional

            v = pynvml.nvmlSystemGetDriverVersion()
            return v.decode() if isinstance(v, bytes) else str(v)
        except Exception:
            pass
    return _nvidia_smi("driver_version")


@lru_cache(maxsize=1)
def environment() -> dict:
    """Constant per process: device, versions. Column names are those of the result rows."""
    versions = cudart.package_versions()
    gpu = ("gpu_name", "compute_capability", "sms", "l2_bytes", "driver_version", "cuda_driver_version",
           "cuda_runtime_version")
    env: dict = {"device": "simulator", "mode_backend": backend.mode(), **dict.fromkeys(gpu),
                 "clock_source": clock_source()}
    if not backend.SIMULATOR:
        p = cudart.device_properties(backend.cuda.get_current_device().id)
        env.update(
            device=p["name"], gpu_name=p["name"], compute_capability=p["compute_capability"], sms=p["sms"],
            l2_bytes=p["l2_bytes"], driver_version=_driver_version(), cuda_driver_version=cudart.driver_version(),
            cuda_runtime_version=cudart.runtime_version(),
        )
    for pkg, v in versions.items():
        env[f"{pkg.replace('-', '_')}_version"] = v
    return env
