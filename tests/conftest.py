"""Markers, the Hypothesis profiles, shared fixtures, and the order the suite runs in.

* ``gpu`` tests are skipped in simulator mode, ``torch`` tests when PyTorch is not importable; ``browser``
  tests are deselected unless ``-m`` names them (``pytest -m browser``: a step of its own in CI).
* No test reaches the network: ``DLRMLAB_OFFLINE=1`` (set here, so subprocesses and notebooks inherit it) turns
  off downloading the paper's files on first use; tests of the download pass a fake opener.
* Every test runs with ``DLRMLAB_CACHE_DIR`` in a temporary directory (one per xdist worker): no test reads
  or writes the user's tuning cache, so kernel configurations depend on the code and the shipped table only.
* Hypothesis: the ``ci`` profile (chosen where ``CI=true``, as CI services set it) draws fewer examples per
  property than ``dev`` (the default), always the same ones (``derandomize``), so a landing never depends
  on luck; ``HYPOTHESIS_PROFILE`` picks one by name. Property tests take their example counts from the
  profile through ``helpers.examples``.
* ``-n auto`` (pyproject's addopts): every core in the simulator, one process on a GPU machine. Tests marked
  ``slow`` are collected first, so that the long ones start at once and the short ones fill the other
  workers around them.
* Data checks of committed results live in ``tests/data/``, marked ``data`` (run by default; ``-m "not data"``
  leaves them out).
"""

from __future__ import annotations

import gc
import os

import pytest
from helpers import HYPOTHESIS_EXAMPLES
from hypothesis import HealthCheck, settings

from dlrmlab import backend, download

os.environ[download.OFFLINE_ENV] = "1"  # before any test, worker or subprocess starts: never the network

# --- Hypothesis profiles ----------------------------------------------------------------------------------

for _name, _n in HYPOTHESIS_EXAMPLES.items():
    settings.register_profile(_name, max_examples=_n, deadline=None, database=None, derandomize=True,
                              suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
PROFILE = os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI", "").lower() == "true" else "dev")
settings.load_profile(PROFILE)


# --- workers, markers and order ---------------------------------------------------------------------------


@pytest.hookimpl(tryfirst=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """``-n auto``: one process where a CUDA GPU is present (the GPU tests time kernels and change device-wide
    state, the persisting-L2 limit among it: two workers would disturb each other); else xdist's count."""
    return None if backend.SIMULATOR else 0


def _torch_importable() -> bool:
    try:
        import torch  # noqa: F401  (optional dependency: imported only to see whether it can be)
    except Exception:
        return False
    return True


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    from dlrmlab import backend

    if "browser" not in (config.option.markexpr or ""):
        browser = [item for item in items if item.get_closest_marker("browser")]
        if browser:
            config.hook.pytest_deselected(items=browser)
            items[:] = [item for item in items if not item.get_closest_marker("browser")]

    if backend.SIMULATOR:
        skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU (running in Numba's CUDA simulator)")
        for item in items:
            if item.get_closest_marker("gpu"):
                item.add_marker(skip_gpu)
    torch_items = [item for item in items if item.get_closest_marker("torch")]
    if torch_items and not _torch_importable():
        skip_torch = pytest.mark.skip(reason="needs PyTorch (not importable)")
        for item in torch_items:
            item.add_marker(skip_torch)
    # the long tests first (stable: the rest keep their order), so xdist spreads them over the workers
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


# --- fixtures ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session", autouse=True)
def _isolated_tuning_cache(tmp_path_factory):
    old = os.environ.get("DLRMLAB_CACHE_DIR")
    os.environ["DLRMLAB_CACHE_DIR"] = str(tmp_path_factory.mktemp("dlrmlab-cache"))
    yield
    if old is None:
        os.environ.pop("DLRMLAB_CACHE_DIR", None)
    else:
        os.environ["DLRMLAB_CACHE_DIR"] = old


@pytest.fixture(scope="session", autouse=True)
def _frozen_heap():
    """Move everything alive once the modules are imported out of the garbage collector's way: dlrmlab
    collects between experiments (``gc.collect()`` to free device buffers), and with torch, pandas and
    Numba loaded a full collection of that heap costs most of a second each time."""
    gc.collect()
    gc.freeze()
    yield
    gc.unfreeze()


@pytest.fixture
def host_variant(monkeypatch) -> str:
    """A variant that runs anywhere (with or without torch or a GPU): its result is the case's NumPy
    reference. Added to the table for one test."""
    from dlrmlab import variants

    name = "_host_reference"
    prepared = lambda case, knobs: variants.Prepared(lambda i: None, lambda i: case.reference(i))
    monkeypatch.setitem(variants.VARIANTS, name, variants.Variant(name, "test only", prepared))
    return name
