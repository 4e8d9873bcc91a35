"""Every notebook runs top to bottom (here: in simulator mode) and shows its figures.

The notebooks of one test process share one Jupyter kernel, started as JupyterLab starts it (from
``notebooks/``, figures inline), and each runs from an empty namespace (``%reset -f``): the kernel's start and
its imports (numba, torch, pandas, matplotlib: about 5 s of CPU) are paid once per process, not once per
notebook. A notebook that fails restarts the kernel, so the next one starts clean.

``DLRMLAB_NOTEBOOK_PRESET=paper`` (on a GPU) runs them with that preset: the value is appended to each
notebook's ``parameters`` cell, as papermill would inject it. ``DLRMLAB_NOTEBOOK_TIMEOUT`` sets the
per-cell timeout in seconds (default 300).
"""

from __future__ import annotations

import os

import pytest
from helpers import ROOT, subprocess_env

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
run_sync = pytest.importorskip("jupyter_core.utils").run_sync

#: The first cell of every run: the namespace of a fresh kernel (``%reset -f`` drops ``__spec__`` and the other
#: module attributes of ``__main__`` too, which multiprocessing's spawn reads: they are put back). Imported
#: modules stay loaded.
RESET = """\
get_ipython().fresh_main = {k: globals()[k] for k in ("__doc__", "__loader__", "__package__", "__spec__")}
get_ipython().run_line_magic("reset", "-f")
globals().update(get_ipython().fresh_main)
"""


@pytest.fixture(scope="session")
def kernel():
    """One kernel for the notebooks of this process. It draws inline, as in JupyterLab, even where the caller
    set a headless MPLBACKEND (CI sets Agg), and imports this checkout's dlrmlab, whichever copy the
    environment has installed."""
    env = {**os.environ, "MPLBACKEND": "module://matplotlib_inline.backend_inline",
           "PYTHONPATH": subprocess_env()["PYTHONPATH"]}  # fmt: skip
    boot = nbclient.NotebookClient(nbformat.v4.new_notebook(), kernel_name="python3")
    boot.km = boot.create_kernel_manager()
    boot.start_new_kernel(env=env, cwd=str(ROOT / "notebooks"))
    yield boot.km
    boot._cleanup_kernel()


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 3


def test_every_notebook_has_its_jupytext_pair_a_preset_parameter_and_no_outputs():
    for path in NOTEBOOKS:
        assert path.with_suffix(".py").is_file(), f"{path.name} has no jupytext .py beside it"
        nb = nbformat.read(path, as_version=4)
        params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert params and "PRESET" in params[0].source, f"{path.name}: no parameters cell with PRESET"
        assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code"), f"{path.name} has outputs"


def _inject_preset(nb) -> None:
    preset = os.environ.get("DLRMLAB_NOTEBOOK_PRESET")
    if not preset:
        return
    for cell in nb.cells:
        if "parameters" in cell.metadata.get("tags", []):
            cell.source += f"\nPRESET = {preset!r}  # injected by tests/notebooks/test_notebooks.py"
            return


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, kernel):
    nb = nbformat.read(path, as_version=4)
    _inject_preset(nb)
    nb.cells.insert(0, nbformat.v4.new_code_cell(RESET))
    client = nbclient.NotebookClient(nb, km=kernel, timeout=int(os.environ.get("DLRMLAB_NOTEBOOK_TIMEOUT", "300")),
                                     kernel_name="python3")  # fmt: skip
    try:
        client.execute()
    except BaseException:
        run_sync(kernel.restart_kernel)(now=True)  # a cell that timed out may still be running
        raise
    finally:
        if client.kc is not None:
            client.kc.stop_channels()
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})]
    assert images, f"{path.name} showed no figure"
    logic = [c.source for c in nb.cells if c.cell_type == "code" and ("def " in c.source or "class " in c.source)]
    assert not logic, f"{path.name}: notebooks hold calls, prose and plots only; move logic into dlrmlab/"
