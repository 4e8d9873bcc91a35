"""What several test modules share: paths, the simulator-only mark, the command run in-process or as a real
process, the CLI's parsers, and the relative error the kernels are judged by.

Imported as ``helpers`` (``tests/`` is on ``sys.path``: pytest puts the directory of ``tests/conftest.py``
there)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings

from dlrmlab import backend, cli

#: The repository root (the checkout the tests run from).
ROOT = Path(__file__).resolve().parents[1]
#: Captured tool outputs the tests parse (ncu CSVs; see tests/fixtures/README.md).
FIXTURES = ROOT / "tests" / "fixtures"

#: Hypothesis examples per property under each profile (registered in conftest.py; ``CI=true`` picks ``ci``).
HYPOTHESIS_EXAMPLES = {"dev": 10, "ci": 4}

#: Tests of what only the simulator does (skipped on a GPU machine).
simulator_only = pytest.mark.skipif(not backend.SIMULATOR, reason="a CUDA GPU is present")


def run_cli(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    """``dlrmlab ARGV`` in-process: its exit code, stdout and stderr."""
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment of a child Python that imports this checkout's dlrmlab (``ROOT`` first on its path)."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, **extra}


def dlrmlab_process(*argv: str, **kw) -> subprocess.Popen:
    """``python -m dlrmlab.cli ARGV`` as a real process (run from ``ROOT``, this checkout's package)."""
    return subprocess.Popen([sys.executable, "-m", "dlrmlab.cli", *argv], cwd=ROOT, env=subprocess_env(), **kw)


def run_dlrmlab(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """``python -m dlrmlab.cli ARGV`` run to the end, text output captured."""
    return subprocess.run([sys.executable, "-m", "dlrmlab.cli", *argv], cwd=ROOT, env=subprocess_env(),
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip


def parsers(parser: argparse.ArgumentParser, name: str = "dlrmlab") -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """``parser`` and every sub-command's parser below it, with the command line that reaches it."""
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from parsers(sub, f"{name} {sub_name}")


def find_paper_dir(files: list[str]) -> Path | None:
    """Where the artifact's ``files`` all are: ``$DLRMLAB_DATA_DIR``, or ``../shared/data/paper_traces`` beside
    the repository (None: not on this machine)."""
    for d in (os.environ.get("DLRMLAB_DATA_DIR"), ROOT.parent / "shared" / "data" / "paper_traces"):
        if d and all((Path(d) / f).is_file() for f in files):
            return Path(d)
    return None


def rel_err(out, ref) -> float:
    """``|out - ref| / |ref|`` (Frobenius norms, in float64): how far a kernel's output is from the reference."""
    ref = np.asarray(ref, np.float64)
    return float(np.linalg.norm(np.asarray(out, np.float64) - ref) / max(np.linalg.norm(ref), 1e-30))


def examples(dev: int) -> int:
    """Hypothesis examples for a property that draws ``dev`` of them under the ``dev`` profile: as many there,
    proportionally fewer (at least 2) under the lighter ``ci`` profile. The properties are the same."""
    return max(2, round(dev * settings.default.max_examples / HYPOTHESIS_EXAMPLES["dev"]))
