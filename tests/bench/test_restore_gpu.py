"""The GPU is left as it was found (issue 12 item 3): after a normal exit, an exception raised inside a run, and
a SIGINT, through ``run_bench``, the CLI (``dlrmlab bench``) and ``dlrmlab reproduce --only beyond``.

Each scenario runs in a child Python process (a fresh CUDA context), which
  * first sets the persisting-L2 limit to a third of the device's maximum (so a "restore" that merely resets
    to 0, or leaves the maximum the variants set, is caught) and reads it back: BEFORE;
  * records every stream a benchmark case creates and every L2 call dlrmlab makes (limit, windows, the pin
    kernel, the reset of persisting lines), through thin wrappers around :mod:`dlrmlab.cudart` and
    :func:`dlrmlab.l2pin.pin`;
  * plants the failure: none, a RuntimeError in the 6th timed run of an L2-window variant, or prints RUNNING
    there so that this test sends it a real SIGINT (a user's Ctrl-C) while the windows are in effect;
  * then prints STATE: the limit read back with ``cudart.get_persisting_l2_limit()``, each recorded stream's
    access-policy window (``cuStreamGetAttribute``), and the recorded calls.
The test asserts: the limit equals BEFORE; every stream's window is empty (0 bytes); windows and a different
limit were really set (the scenario exercised L2 state); and persisting lines were reset after the last
window was set and after the last pin (``cuCtxResetPersistingL2Cache``: persisting lines cannot be read back,
so the reset call's order is what is checked).

Expected time on an H100: about 2-4 minutes for the file (9 child processes; each imports torch and compiles
the tiny preset's kernels).
"""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from helpers import subprocess_env

pytestmark = pytest.mark.gpu

WINDOW_VARIANTS = ["l2window", "fast+window", "fast_graph+window", "combined_window"]
PIN_VARIANTS = ["l2p", "fast_graph+l2p"]

PRELUDE = r"""
import json, os, sys, runpy
from dlrmlab import cudart, l2pin
from dlrmlab.bench import comparison, sweep
from dlrmlab.bench.case import BenchCase

MODE = os.environ["RESTORE_MODE"]  # normal | raise | sigint
WINDOWED = set(os.environ["RESTORE_WINDOWED"].split(","))
STREAMS, EVENTS, RUNS = [], [], [0]

_create = BenchCase.create.__func__
def _recording_create(cls, *a, **k):
    case = _create(cls, *a, **k)
    STREAMS.append(case.stream)
    return case
BenchCase.create = classmethod(_recording_create)

_set_limit, _set_window, _reset, _pin = (cudart.set_persisting_l2_limit, cudart.set_access_policy_window,
                                        cudart.reset_persisting_l2, l2pin.pin)
def set_limit(n):
    _set_limit(n); EVENTS.append(["limit", int(n)])
def set_window(stream, base_ptr, num_bytes, hit_ratio, persist=True):
    _set_window(stream, base_ptr, num_bytes, hit_ratio, persist)
    EVENTS.append(["window", cudart.stream_ptr(stream), int(num_bytes)])
def reset():
    _reset(); EVENTS.append(["reset"])
def pin(*a, **k):
    _pin(*a, **k); EVENTS.append(["pin"])
cudart.set_persisting_l2_limit, cudart.set_access_policy_window = set_limit, set_window
cudart.reset_persisting_l2, l2pin.pin = reset, pin

_prepare = comparison.prepare_variant
def prepare(name, case, **kw):
    p = _prepare(name, case, **kw)
    run = p.run
    def counted(i):
        run(i)
        if name in WINDOWED:
            RUNS[0] += 1
            if RUNS[0] == 6:
                if MODE == "raise":
                    raise RuntimeError("planted failure inside a run")
                if MODE == "sigint":
                    print("RUNNING", flush=True)
    p.run = counted
    return p
comparison.prepare_variant = prepare

def window_bytes(stream):
    drv = cudart._driver()
    attr = drv.CUlaunchAttributeID.CU_LAUNCH_ATTRIBUTE_ACCESS_POLICY_WINDOW
    err, value = drv.cuStreamGetAttribute(cudart._cu_stream(stream), attr)
    if int(err) != 0:
        raise RuntimeError(f"cuStreamGetAttribute: {err}")
    return int(value.accessPolicyWindow.num_bytes)

start = int(cudart.device_properties()["persisting_l2_max_bytes"]) // 3
if start > 0:
    _set_limit(start)
print("BEFORE", cudart.get_persisting_l2_limit(), flush=True)

def report(outcome):
    state = {"outcome": outcome, "limit": cudart.get_persisting_l2_limit(), "runs": RUNS[0],
             "windows": [window_bytes(s) for s in STREAMS], "events": EVENTS}
    print("STATE " + json.dumps(state), flush=True)

def cli(*argv):
    sys.argv = ["dlrmlab", *argv]
    try:
        runpy.run_module("dlrmlab.cli", run_name="__main__", alter_sys=True)
    except SystemExit as e:
        return e.code
    return 0
"""

RUN_BENCH = r"""
try:
    sweep.run_bench(os.environ["RESTORE_VARIANTS"].split(","), ["zipf:1.15"], "tiny", repeats=REPEATS,
                      warmup_s=0.0, include_torch=False)
    report("returned")
except RuntimeError as e:
    report(f"raised: {e}")
except KeyboardInterrupt:
    report("interrupted")
"""

CLI_BENCH = r"""
try:
    code = cli("bench", "--variant", os.environ["RESTORE_VARIANTS"], "--dataset", "zipf:1.15", "--preset", "tiny",
               "--repeats", str(REPEATS), "--warmup", "0", "--no-torch", "--quiet", "--out", os.environ["RESTORE_OUT"])
    report(f"exit {code}")
except RuntimeError as e:
    report(f"raised: {e}")
"""

REPRODUCE = r"""
try:
    code = cli("reproduce", "--only", "beyond", "--preset", "tiny", "--datasets", "random", "--repeats", str(REPEATS),
               "--quiet", "--out", os.environ["RESTORE_OUT"])
    report(f"exit {code}")
except RuntimeError as e:
    report(f"raised: {e}")
"""

ENTRY_POINTS = {
    "run_bench": (RUN_BENCH, WINDOW_VARIANTS + PIN_VARIANTS),
    "cli_bench": (CLI_BENCH, ["l2window", "fast_graph+window", "fast+window", "fast_graph+l2p"]),
    # reproduce runs its own list (torch, l2window, fast_graph, fast_graph+window, cuembed_graph if available)
    "reproduce": (REPRODUCE, ["l2window", "fast_graph+window"]),
}
#: what the child reports for each planted failure, per entry point
EXPECTED = {
    ("run_bench", "normal"): "returned", ("run_bench", "raise"): "raised: planted",
    ("run_bench", "sigint"): "interrupted",
    ("cli_bench", "normal"): "exit 0", ("cli_bench", "raise"): "raised: planted", ("cli_bench", "sigint"): "exit 130",
    # reproduce records a crashing experiment as failed (exit 1) and goes on
    ("reproduce", "normal"): "exit 0", ("reproduce", "raise"): "exit 1", ("reproduce", "sigint"): "exit 130",
}


def _child(entry: str, mode: str, tmp_path: Path) -> subprocess.Popen:
    body, windowed = ENTRY_POINTS[entry]
    repeats = 20_000 if mode == "sigint" else 10  # interrupted long before the end (minutes of runs)
    script = PRELUDE + f"\nREPEATS = {repeats}\n" + body
    env = subprocess_env(PYTHONUNBUFFERED="1", RESTORE_MODE=mode, RESTORE_OUT=str(tmp_path / "out"),
                         RESTORE_WINDOWED=",".join(v for v in windowed if v in WINDOW_VARIANTS),
                         RESTORE_VARIANTS=",".join(windowed))
    return subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env, cwd=str(tmp_path))


class _Lines:
    """The child's output lines, read on a thread so that waiting for one can time out."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc, self.seen, self._q = proc, [], queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        for line in self.proc.stdout:
            self._q.put(line)
        self._q.put(None)

    def wait_for(self, prefix: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._q.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                line = ""
            if line is None or (not line and time.monotonic() >= deadline):
                self.proc.kill()
                raise AssertionError(f"no {prefix!r} line from the child; its output:\n{''.join(self.seen)}")
            self.seen.append(line)
            if line.startswith(prefix):
                return line


@pytest.mark.parametrize("mode", ["normal", "raise", "sigint"])
@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_l2_state_restored(entry, mode, tmp_path):
    from dlrmlab import l2window
    from dlrmlab.errors import DlrmlabError

    try:
        l2window.l2_limits()
    except DlrmlabError as e:
        pytest.skip(str(e))
    proc = _child(entry, mode, tmp_path)
    lines = _Lines(proc)
    try:
        before = int(lines.wait_for("BEFORE", 120).split()[1])
        if mode == "sigint":
            lines.wait_for("RUNNING", 600)  # windows set, timing under way
            proc.send_signal(signal.SIGINT)
        state = json.loads(lines.wait_for("STATE ", 600)[len("STATE "):])
    finally:
        if proc.poll() is None:
            proc.wait(timeout=120)
    out = "".join(lines.seen)
    assert state["outcome"].startswith(EXPECTED[entry, mode]), out
    events = state["events"]
    # the scenario really changed L2 state ...
    assert any(e[0] == "window" and e[2] > 0 for e in events), out
    assert any(e[0] == "limit" and e[1] != before for e in events), out
    # ... and everything is as found: the limit, every stream's window, persisting lines reset last
    assert before > 0
    assert state["limit"] == before, f"persisting-L2 limit {before} before, {state['limit']} after\n{out}"
    assert state["windows"] and all(w == 0 for w in state["windows"]), out
    last = {kind: max((i for i, e in enumerate(events) if e[0] == kind and (kind != "window" or e[2] > 0)),
                      default=-1) for kind in ("window", "pin", "reset")}
    assert last["reset"] > max(last["window"], last["pin"]), f"persisting lines not reset last: {events}"
    if mode == "sigint" or mode == "raise":
        assert state["runs"] >= 6, out
