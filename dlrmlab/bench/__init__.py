"""The measurement layer: benchmark cases, the timing harness, Nsight Compute, results and plots.

Names are imported lazily so that ``import dlrmlab.bench.<module>`` stays cheap (no pandas, no torch).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "BenchCase": "dlrmlab.bench.case",
    "BenchResult": "dlrmlab.bench.harness",
    "compare": "dlrmlab.bench.harness",
    "run_bench": "dlrmlab.bench.harness",
    "append_results": "dlrmlab.bench.results",
    "load_results": "dlrmlab.bench.results",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'dlrmlab.bench' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
