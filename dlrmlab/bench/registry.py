"""Variant registry: a variant registers itself at import, so the harness never changes to add one.

A variant is a ``prepare(case, **params) -> Prepared`` function: it does everything that is not part of
serving a request (compiling kernels, allocating outputs, capturing graphs, setting L2 windows) and
returns closures that do the part that is.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from dlrmlab.errors import DlrmlabError

if TYPE_CHECKING:
    from dlrmlab.bench.case import BenchCase

#: One (start, end) CUDA event pair per launch, as returned by ``Prepared.per_kernel``.
EventPairs = Sequence[tuple[Any, Any]]


@dataclass
class Prepared:
    """A variant ready to run on one :class:`~dlrmlab.bench.case.BenchCase`."""

    #: enqueue the whole embedding stage for batch ``i`` on ``case.stream`` (async: no sync inside)
    run: Callable[[int], None]
    #: run batch ``i``, synchronize, return host outputs, one (batch, dim) array per table
    result: Callable[[int], list[np.ndarray]]
    #: variant parameters; they go into result rows
    params: dict = field(default_factory=dict)
    #: Nsight Compute kernel-name filter (a regex)
    kernel_regex: str | None = None
    #: optional: enqueue the stage for batch ``i`` with a CUDA event pair around EACH launch (events from
    #: :func:`dlrmlab.bench.timing.make_event`, recorded on ``case.stream``) and return the pairs, in
    #: launch order; no sync inside. The harness sums each run's pairs into ``kernel_ms``.
    per_kernel: Callable[[int], EventPairs] | None = None
    #: restore any GPU state the variant changed (L2 windows, persisting-L2 limit, graphs)
    close: Callable[[], None] = lambda: None


@dataclass(frozen=True)
class VariantSpec:
    name: str
    prepare: Callable[..., Prepared]
    description: str
    gpu_only: bool = False
    origin: str = ""


_REGISTRY: dict[str, VariantSpec] = {}
_LOADED = False
#: Modules whose import registers the built-in variants. ``dlrmlab.variants`` may not exist yet.
_BUILTIN_MODULES = ("dlrmlab.bench.torch_variant", "dlrmlab.variants")


def _origin(fn: Callable) -> str:
    return f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', repr(fn))}"


def register_variant(
    name: str, prepare: Callable[..., Prepared], description: str, gpu_only: bool = False
) -> VariantSpec:
    """Make ``name`` runnable by the harness and the CLI.

    Registering the same name again from the same function (a module reload in Jupyter) replaces the
    entry; a different function under a taken name is an error, so two variants never shadow each other.
    """
    if not isinstance(name, str) or not name.strip() or name != name.strip():
        raise DlrmlabError(f"variant name must be a non-empty string without surrounding spaces, got {name!r}")
    if any(c in name for c in ", \t\n"):
        raise DlrmlabError(f"variant name {name!r} must not contain commas or whitespace (the CLI splits on ',')")
    if not callable(prepare):
        raise DlrmlabError(f"prepare for variant {name!r} must be callable")
    origin = _origin(prepare)
    old = _REGISTRY.get(name)
    if old is not None and old.origin != origin:
        raise DlrmlabError(f"variant {name!r} is already registered by {old.origin}")
    spec = VariantSpec(name, prepare, str(description), bool(gpu_only), origin)
    _REGISTRY[name] = spec
    return spec


def unregister_variant(name: str) -> None:
    """Remove a variant (tests register throwaway ones)."""
    _REGISTRY.pop(name, None)


def load_builtin_variants() -> None:
    """Import the modules that register variants (once). A missing ``dlrmlab.variants`` is fine."""
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    try:
        for module in _BUILTIN_MODULES:
            try:
                importlib.import_module(module)
            except ModuleNotFoundError as e:
                if e.name != module:  # the module exists but one of its imports does not: a real error
                    raise
    except BaseException:
        _LOADED = False
        raise


def variant_names(available_only: bool = False) -> list[str]:
    """Registered variant names, sorted; ``available_only`` drops GPU-only ones in simulator mode."""
    load_builtin_variants()
    names = sorted(_REGISTRY)
    if available_only:
        from dlrmlab import backend

        names = [n for n in names if not (_REGISTRY[n].gpu_only and backend.SIMULATOR)]
    return names


def variants() -> list[VariantSpec]:
    """Every registered variant's spec, sorted by name."""
    return [_REGISTRY[n] for n in variant_names()]


def get_variant(name: str) -> VariantSpec:
    load_builtin_variants()
    spec = _REGISTRY.get(name)
    if spec is None:
        valid = ", ".join(sorted(_REGISTRY)) or "(none registered)"
        raise DlrmlabError(f"unknown variant {name!r}; valid: {valid}")
    return spec


def prepare_variant(name: str, case: BenchCase, **params: Any) -> Prepared:
    """Prepare variant ``name`` on ``case``: compile, allocate, set up; return its closures."""
    spec = get_variant(name)
    from dlrmlab import backend

    if spec.gpu_only and backend.SIMULATOR:
        raise DlrmlabError(f"variant {name!r} needs a CUDA GPU; this is {backend.describe_mode()}")
    prepared = spec.prepare(case, **params)
    if not isinstance(prepared, Prepared):
        raise DlrmlabError(f"variant {name!r}: prepare returned {type(prepared).__name__}, not Prepared")
    prepared.params = {**params, **(prepared.params or {})}
    return prepared
