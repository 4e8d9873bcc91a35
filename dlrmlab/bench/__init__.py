"""The measurement layer: benchmark cases (``case``), the timing primitives (``timing``, ``env``), the order
of timed runs (``schedule``), running it (``runs``), one comparison (``comparison``), a sweep (``sweep``),
the row schema and its upgrades (``schema``), the results store (``results``), text output (``text``),
Nsight Compute (``ncu``).

Names are imported lazily so that ``import dlrmlab.bench.<module>`` stays cheap (no pandas, no torch).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "BenchCase": "dlrmlab.bench.case",
    "BenchResult": "dlrmlab.bench.comparison",
    "compare": "dlrmlab.bench.comparison",
    "check_result": "dlrmlab.bench.comparison",
    "run_bench": "dlrmlab.bench.sweep",
    "format_table": "dlrmlab.bench.text",
    "append_results": "dlrmlab.bench.results",
    "load_results": "dlrmlab.bench.results",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'dlrmlab.bench' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
