"""Markers: ``gpu`` tests are skipped in simulator mode, ``torch`` tests when PyTorch is not importable,
``browser`` tests are deselected unless ``-m`` names them (``pytest -m browser``: a step of its own in CI).

Every test runs with ``DLRMLAB_CACHE_DIR`` in a temporary directory: no test reads or writes the user's
tuning cache, so kernel configurations depend on the code and the shipped table only."""

from __future__ import annotations

import os

import pytest


def _torch_importable() -> bool:
    try:
        import torch  # noqa: F401
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


@pytest.fixture(scope="session", autouse=True)
def _isolated_tuning_cache(tmp_path_factory):
    old = os.environ.get("DLRMLAB_CACHE_DIR")
    os.environ["DLRMLAB_CACHE_DIR"] = str(tmp_path_factory.mktemp("dlrmlab-cache"))
    yield
    if old is None:
        os.environ.pop("DLRMLAB_CACHE_DIR", None)
    else:
        os.environ["DLRMLAB_CACHE_DIR"] = old
