"""An interrupt anywhere in a run leaves the GPU as it was: the persisting-L2 limit is read back after a
SIGINT sent mid-run to a child process that runs L2-changing variants (a user's Ctrl-C in Jupyter)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest
from helpers import subprocess_env

pytestmark = pytest.mark.gpu

CHILD = r"""
import sys
from dlrmlab import cudart
from dlrmlab.bench import run_bench
before = cudart.get_persisting_l2_limit()
print("BEFORE", before, flush=True)
try:
    run_bench(["l2window", "fast_graph+window", "l2p", "fast_graph+l2p"], ["zipf:1.15"], "tiny", repeats=100000,
              warmup_s=0.0, include_torch=False)
except KeyboardInterrupt:
    print("AFTER", cudart.get_persisting_l2_limit(), flush=True)
    sys.exit(0)
print("FINISHED", flush=True)
"""


def test_sigint_mid_run_restores_persisting_limit():
    proc = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=subprocess_env(PYTHONUNBUFFERED="1"))
    before = None
    t0 = time.monotonic()
    line = proc.stdout.readline()
    assert line.startswith("BEFORE"), line + proc.stderr.read()
    before = int(line.split()[1])
    time.sleep(8.0)  # compile, prepare the window variants, start timing (and possibly mid-prepare)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert "AFTER" in out, f"child did not stop on SIGINT after {time.monotonic() - t0:.0f} s:\n{out}\n{err}"
    after = int(out.split("AFTER", 1)[1].split()[0])
    assert after == before, f"persisting-L2 limit {before} before, {after} after the interrupt"
