"""Every notebook runs top to bottom (here: in simulator mode) and shows its figures.

Each notebook gets a kernel of its own, started as JupyterLab starts it: a kernel shared by the notebooks of
one test process saved about 5 s of start-up each, but once left the test waiting on an idle kernel (after
the gloo notebook) until killed, and a hang costs more than the start-ups.

``DLRMLAB_NOTEBOOK_PRESET=paper`` (on a GPU) runs them with that preset: the value is appended to each
notebook's ``parameters`` cell, as papermill would inject it. The claim notebooks (those with a ``DATASETS``
parameter) run on one skewed dataset, ``DLRMLAB_NOTEBOOK_DATASETS`` (comma-separated; default
``synthetic-high``; ``suite`` keeps the notebook's own default): every claim already runs on the suite's
datasets in the tiny ``reproduce`` test, and one dataset halves these notebooks' time in the simulator.
``DLRMLAB_NOTEBOOK_TIMEOUT`` sets the per-cell timeout in seconds (default 300).
"""

from __future__ import annotations

import os
import re

import pytest
from helpers import ROOT, subprocess_env

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 3


def test_every_notebook_has_its_jupytext_pair_a_preset_parameter_and_no_outputs():
    for path in NOTEBOOKS:
        assert path.with_suffix(".py").is_file(), f"{path.name} has no jupytext .py beside it"
        nb = nbformat.read(path, as_version=4)
        params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert params and "PRESET" in params[0].source, f"{path.name}: no parameters cell with PRESET"
        assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code"), f"{path.name} has outputs"


def _inject_parameters(nb) -> None:
    preset = os.environ.get("DLRMLAB_NOTEBOOK_PRESET")
    datasets = os.environ.get("DLRMLAB_NOTEBOOK_DATASETS", "synthetic-high")
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    if preset:
        cell.source += f"\nPRESET = {preset!r}  # injected by tests/notebooks/test_notebooks.py"
    if datasets != "suite" and re.search(r"^DATASETS = ", cell.source, re.M):
        cell.source += f"\nDATASETS = {datasets.split(',')!r}  # injected by tests/notebooks/test_notebooks.py"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, monkeypatch):
    # The kernel draws inline, as in JupyterLab, even where the caller set a headless MPLBACKEND (CI sets Agg).
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    # The kernel imports this checkout's dlrmlab, whichever copy the environment has installed.
    monkeypatch.setenv("PYTHONPATH", subprocess_env()["PYTHONPATH"])
    nb = nbformat.read(path, as_version=4)
    _inject_parameters(nb)
    client = nbclient.NotebookClient(
        nb, timeout=int(os.environ.get("DLRMLAB_NOTEBOOK_TIMEOUT", "300")), kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute()
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})]
    assert images, f"{path.name} showed no figure"
    logic = [c.source for c in nb.cells if c.cell_type == "code" and ("def " in c.source or "class " in c.source)]
    assert not logic, f"{path.name}: notebooks hold calls, prose and plots only; move logic into dlrmlab/"
