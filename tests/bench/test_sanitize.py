"""The compute-sanitizer driver (dlrmlab.bench.sanitize): the command it builds, where it finds the binary (the
wheel's layout needs --injection-path), the summary lines it reads, the skip without compute-sanitizer, and the
whole pipeline with a stand-in sanitizer that runs the real runner (in the simulator here)."""

from __future__ import annotations

import os
import stat
import sys

import pytest

from dlrmlab import backend
from dlrmlab.bench import sanitize
from dlrmlab.errors import DlrmlabError

MEMCHECK_OUT = """========= COMPUTE-SANITIZER
sanitize-target: fast float32:32:int64:sum: ran 2 batches
========= ERROR SUMMARY: 0 errors
"""
RACECHECK_OUT = """========= COMPUTE-SANITIZER
========= RACECHECK SUMMARY: 0 hazards displayed (0 errors, 0 warnings)
========= Error: Race reported between Write access at embedding_bag_fast
========= ERROR SUMMARY: 3 errors
"""


def _executable(path, text="#!/bin/sh\nexit 0\n"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def test_build_command():
    cmd = sanitize.build_command(["/opt/cs/compute-sanitizer"], "memcheck", "fast_graph+window")
    assert cmd == ["/opt/cs/compute-sanitizer", "--tool", "memcheck", "--print-limit", "20", sys.executable, "-m",
                   "dlrmlab.bench.sanitize", "--target", "fast_graph+window"]
    cmd = sanitize.build_command(["cs", "--injection-path", "/w/lib"], "racecheck", "rpf_shared",
                                 ["float16:12:int32:weighted"], python="py")
    assert cmd == ["cs", "--injection-path", "/w/lib", "--tool", "racecheck", "--print-limit", "20", "py", "-m",
                   "dlrmlab.bench.sanitize", "--target", "rpf_shared", "--combos", "float16:12:int32:weighted"]
    with pytest.raises(DlrmlabError, match="unknown tool"):
        sanitize.build_command(["cs"], "leakcheck", "fast")


def test_wheel_layout_gets_injection_path(tmp_path):
    exe = _executable(tmp_path / "wheel" / "bin" / "compute-sanitizer")
    (tmp_path / "wheel" / "lib").mkdir()
    (tmp_path / "wheel" / "lib" / "libsanitizer-collection.so").write_bytes(b"")
    assert sanitize.find_sanitizer(str(exe)) == [str(exe), "--injection-path", str(tmp_path / "wheel" / "lib")]
    kit = _executable(tmp_path / "kit" / "compute-sanitizer")
    (tmp_path / "kit" / "libsanitizer-collection.so").write_bytes(b"")
    assert sanitize.find_sanitizer(str(kit)) == [str(kit)]
    with pytest.raises(DlrmlabError, match="not an executable"):
        sanitize.find_sanitizer(str(tmp_path / "nothing"))


def test_parse_summary():
    assert sanitize.parse_summary(MEMCHECK_OUT) == (0, "========= ERROR SUMMARY: 0 errors")
    assert sanitize.parse_summary(RACECHECK_OUT)[0] == 3
    assert sanitize.parse_summary("========= ERROR SUMMARY: 1 error\n")[0] == 1
    assert sanitize.parse_summary("Traceback (most recent call last):\n") == (None, None)


def _no_sanitizer_anywhere(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.delenv("CUDA_HOME", raising=False)
    monkeypatch.delenv("CUDA_PATH", raising=False)
    monkeypatch.setattr(sanitize, "TOOLKIT_DIRS", ())
    monkeypatch.setattr(sanitize, "_wheel_dir", lambda: None)


def test_skips_clearly_without_compute_sanitizer(monkeypatch, tmp_path, capsys):
    _no_sanitizer_anywhere(monkeypatch, tmp_path)
    assert sanitize.main([]) == 0
    out = capsys.readouterr().out
    assert out.startswith("sanitize: skipped: compute-sanitizer not found (not on PATH")
    assert "pip install nvidia-cuda-sanitizer-api-cu12" in out


def test_wheel_binary_without_x_bit_is_named(monkeypatch, tmp_path):
    _no_sanitizer_anywhere(monkeypatch, tmp_path)
    exe = tmp_path / "wheel" / "bin" / "compute-sanitizer"
    exe.parent.mkdir(parents=True)
    exe.write_text("")
    monkeypatch.setattr(sanitize, "_wheel_dir", lambda: tmp_path / "wheel")
    with pytest.raises(DlrmlabError, match=f"chmod \\+x {exe}"):
        sanitize.find_sanitizer()


def test_bad_requests(capsys):
    assert sanitize.main(["--tools", "memcheck,leaks"]) == 2
    assert "unknown tool 'leaks'" in capsys.readouterr().err
    assert sanitize.main(["--combos", "float32:x:int64:sum"]) == 2


@pytest.mark.slow
@pytest.mark.skipif(not backend.SIMULATOR, reason="runs the runner in the simulator")
def test_pipeline_with_a_stand_in_sanitizer(monkeypatch, tmp_path, capsys):
    """A stand-in compute-sanitizer runs the real runner (the simulator's kernels) and prints the summary
    line the real one prints; N errors from it make the command fail. The runs after the first check only
    the command line and the summary: the stand-in skips the runner there (``FAKE_NO_RUN``)."""
    fake = _executable(tmp_path / "bin" / "compute-sanitizer", f"""#!/bin/sh
while [ "$1" != "{sys.executable}" ]; do shift; done
rc=0
[ -n "$FAKE_NO_RUN" ] || {{ "$@"; rc=$?; }}
echo "========= ERROR SUMMARY: ${{FAKE_ERRORS:-0}} errors"
exit $rc
""")
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(sanitize, "gpu_missing", lambda: None)  # the driver's GPU check; the runner: simulator
    args = ["--variants", "fast", "--tools", "memcheck", "--combos", "float32:5:int32:sum",
            "--out", str(tmp_path / "logs")]
    assert sanitize.main(args) == 0, capsys.readouterr()
    out = capsys.readouterr().out
    assert "fast               memcheck  ========= ERROR SUMMARY: 0 errors" in out
    assert "1 run(s), 1 clean, 0 with errors" in out
    log = (tmp_path / "logs" / "fast.memcheck.log").read_text()
    assert "sanitize-target: fast float32:5:int32:sum: ran 2 batches" in log
    monkeypatch.setenv("FAKE_NO_RUN", "1")
    assert sanitize.main([*args, "--sanitizer-arg=--ignore-getprocaddress-notfound"]) == 0
    log = (tmp_path / "logs" / "fast.memcheck.log").read_text()
    assert log.startswith(f"{fake} --ignore-getprocaddress-notfound --tool memcheck")
    capsys.readouterr()
    monkeypatch.setenv("FAKE_ERRORS", "2")
    assert sanitize.main(args) == 1
    assert "1 with errors or failed: fast/memcheck" in capsys.readouterr().out


def test_skips_clearly_in_simulator_mode(monkeypatch, tmp_path, capsys):
    fake = _executable(tmp_path / "bin" / "compute-sanitizer")
    monkeypatch.setenv("PATH", str(fake.parent))
    monkeypatch.setattr(sanitize, "gpu_missing", lambda: "no CUDA GPU: simulator mode: compute-sanitizer needs a GPU")
    assert sanitize.main(["--variants", "fast"]) == 0
    assert capsys.readouterr().out == "sanitize: skipped: no CUDA GPU: simulator mode: compute-sanitizer needs a GPU\n"


def test_runner_checks_and_reports_refusals(capsys):
    assert sanitize.run_target("baseline", ["bfloat16:3:int64:mean"]) == 0
    assert "sanitize-target: baseline bfloat16:3:int64:mean: ran 2 batches" in capsys.readouterr().out
    if backend.SIMULATOR:  # a refusal is reported and passed over, not a failure
        assert sanitize.run_target("fast_graph", ["float32:4:int64:sum"]) == 0
        assert "fast_graph float32:4:int64:sum: refused up front: " in capsys.readouterr().out


def test_racecheck_summary_counts_its_errors():
    from dlrmlab.bench.sanitize import parse_summary

    assert parse_summary("========= RACECHECK SUMMARY: 0 hazards displayed (0 errors, 0 warnings)")[0] == 0
    assert parse_summary("========= RACECHECK SUMMARY: 3 hazards displayed (2 errors, 1 warnings)")[0] == 2
