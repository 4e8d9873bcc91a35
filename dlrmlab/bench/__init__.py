"""The measurement layer: benchmark cases, the variant registry, the timing harness, results and plots.

Names are imported lazily so that ``import dlrmlab.bench.<module>`` stays cheap (no pandas, no torch).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "BenchCase": "dlrmlab.bench.case",
    "Prepared": "dlrmlab.bench.registry",
    "register_variant": "dlrmlab.bench.registry",
    "variant_names": "dlrmlab.bench.registry",
    "get_variant": "dlrmlab.bench.registry",
    "prepare_variant": "dlrmlab.bench.registry",
    "BenchResult": "dlrmlab.bench.harness",
    "compare": "dlrmlab.bench.harness",
    "run_bench": "dlrmlab.bench.harness",
    "append_results": "dlrmlab.bench.results",
    "load_results": "dlrmlab.bench.results",
    "make_event": "dlrmlab.bench.timing",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'dlrmlab.bench' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
