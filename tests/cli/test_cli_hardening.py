"""The command line's edges: --version, info's versions and reasons, help for every option, exit codes,
Ctrl-C (exit 130, rows kept), a closed stdout, one-line trace warnings, refused and repeated options, where
results go by default, tune in the simulator."""

from __future__ import annotations

import argparse
import json
import platform
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
from helpers import ROOT, dlrmlab_process, parsers, simulator_only
from helpers import run_cli as run

import dlrmlab
from dlrmlab import backend, cli, device
from dlrmlab.bench import comparison, results, sweep

BENCH = ["--preset", "tiny", "--no-torch", "--quiet", "--repeats", "1", "--warmup", "0"]


# --- version, info, help ----------------------------------------------------------------------------------


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"dlrmlab {dlrmlab.__version__}"


def test_info_shows_dlrmlab_and_python_versions(capsys):
    rc, out, _ = run(capsys, "info")
    assert rc == 0
    assert dlrmlab.__version__ in out and platform.python_version() in out
    d = cli.info_dict()
    assert d["versions"]["dlrmlab"] == dlrmlab.__version__
    assert d["versions"]["python"] == platform.python_version()


@simulator_only
def test_info_says_why_simulator(capsys, monkeypatch):
    rc, out, _ = run(capsys, "info", "--json")
    d = json.loads(out)
    assert d["reasons"] and all(isinstance(r, str) and r for r in d["reasons"])
    monkeypatch.setattr(backend, "missing_toolkit", lambda: ["NVVM", "libdevice"])
    rc, out, _ = run(capsys, "info")
    assert rc == 0 and "why: " in out
    assert "NVVM, libdevice" in out and ".[gpu]" in out


@simulator_only
def test_simulator_reason_names_user_setting(monkeypatch):
    monkeypatch.setattr(backend, "_USER_ENV", "1")
    assert backend.simulator_reasons() == ["NUMBA_ENABLE_CUDASIM=1 is set in the environment"]


def test_every_option_has_help():
    missing = [
        f"{name}: {'/'.join(a.option_strings) or a.dest}"
        for name, p in parsers(cli.build_parser())
        for a in p._actions
        if not isinstance(a, argparse._SubParsersAction) and not a.help
    ]
    assert not missing, missing


def test_exit_codes_in_help():
    text = cli.build_parser().format_help()
    for needle in ("exit status", "0 ok", "1 a result was incorrect", "2 a bad request", "130 interrupted"):
        assert needle in " ".join(text.split())


def test_exit_codes_in_readme():
    readme = (ROOT / "README.md").read_text()
    assert "## Exit codes" in readme and "130" in readme and "141" in readme


def test_readme_documents_cpu_torch_notebooks_and_traces():
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert "pip install torch --index-url https://download.pytorch.org/whl/cpu" in readme
    assert "jupyter lab notebooks/" in readme and "pytest tests/notebooks/test_notebooks.py" in readme
    assert "**Trace format**" in readme and "one non-negative integer row id per line" in readme
    assert "dropped_ids" in readme and "trace_wraps" in readme


# --- interrupts and pipes -----------------------------------------------------------------------------------


def test_ctrl_c_mid_sweep_keeps_rows_and_exits_130(capsys, tmp_path, monkeypatch, host_variant):
    real = comparison.compare
    calls = []

    def compare(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(sweep, "compare", compare)
    rc, out, err = run(capsys, "bench", "--variant", host_variant, "--dataset", "random,zipf:1.1",
                       "--out", str(tmp_path), *BENCH)  # fmt: skip
    assert rc == 130
    csv = tmp_path / device.family() / "bench.csv"
    assert f"interrupted: 1 row(s) saved to {csv}" in err
    assert "interrupted: 1 row(s) saved to" in err and "_runs.csv" in err
    assert "Traceback" not in err
    assert list(pd.read_csv(csv)["dataset"]) == ["random"]


def test_sigint_to_a_real_bench_process(tmp_path):
    """A real SIGINT once the first dataset's rows are on disk: exit 130, the rows kept, no traceback. The child
    takes Ctrl-C as a terminal's process does, whatever this process has (a pytest-xdist worker of the whole
    suite was seen ignoring SIGINT, and an ignored signal stays ignored across exec: the child ran to the end)."""
    datasets = ",".join(["random"] + [f"zipf:1.{i}" for i in range(1, 9)])
    p = dlrmlab_process("bench", "--variant", "baseline", "--dataset", datasets, "--preset", "tiny", "--no-torch",
                        "--quiet", "--repeats", "1", "--warmup", "0", "--out", str(tmp_path),
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    csv = tmp_path / device.family() / "bench.csv"
    t0 = time.time()
    while not csv.exists() and p.poll() is None and time.time() - t0 < 120:
        time.sleep(0.05)
    finished_first = p.poll() is not None
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=120)
    files = sorted(str(f.relative_to(tmp_path)) for f in tmp_path.rglob("*"))
    assert p.returncode == 130, f"finished before the signal: {finished_first}; files: {files}; stderr: {err!r}"
    assert f"dlrmlab: interrupted: {len(pd.read_csv(csv))} row(s) saved to {csv}" in err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert 1 <= len(pd.read_csv(csv)) < 9


@pytest.mark.parametrize(
    ("raised", "code", "message"),
    [
        pytest.param(KeyboardInterrupt, 130, "dlrmlab: interrupted: no result rows were appended",
                     id="ctrl-c-before-anything-saved"),
        pytest.param(BrokenPipeError, 141, "", id="broken-pipe-is-quiet"),
    ],
)
def test_exit_code_of_an_interrupted_command(capsys, monkeypatch, raised, code, message):
    def boom(args):
        raise raised

    monkeypatch.setitem(cli._COMMANDS, "info", boom)
    rc, _, err = run(capsys, "info")
    assert (rc, err.strip()) == (code, message)  # (the interrupt's line starts on a line of its own)


def test_closed_stdout_in_a_real_process():
    p = dlrmlab_process("info", "--json", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()  # the reader is gone before the first write (the import takes longer)
    err = p.stderr.read().decode()
    assert p.wait(timeout=120) in (0, 141)
    assert "Traceback" not in err and "BrokenPipeError" not in err


# --- warnings and options -----------------------------------------------------------------------------------


def test_trace_warnings_are_one_line_each(capsys, tmp_path):
    trace = tmp_path / "t.txt"
    trace.write_text("1\n5000\n2\n")
    rc, _, err = run(capsys, "workload", "describe", "--dataset", f"trace:{trace}", "--preset", "tiny", "--json")
    assert rc == 0
    lines = err.splitlines()
    assert len(lines) == 2, err
    assert all(line.startswith("dlrmlab: warning: ") for line in lines)
    assert "skipped" in lines[0] and "wrap" in lines[1]


def test_trace_path_tilde_is_expanded(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "t.txt").write_text("\n".join(str(i) for i in range(500)) + "\n")
    rc, out, err = run(capsys, "workload", "describe", "--dataset", "trace:~/t.txt", "--preset", "tiny", "--json")
    assert rc == 0, err
    assert json.loads(out)["ids"] == 120


def test_negative_warmup_refused(capsys, tmp_path, host_variant):
    rc, _, err = run(capsys, "bench", "--variant", host_variant, "--dataset", "random", "--out", str(tmp_path),
                     *BENCH[:-2], "--warmup", "-1")  # fmt: skip
    assert rc == 2 and "--warmup must be non-negative, got -1" in err
    assert not (tmp_path / device.family()).exists()


def test_repeated_variant_runs_once(capsys, tmp_path, host_variant):
    rc, _, err = run(capsys, "bench", "--variant", f"{host_variant},{host_variant}", "--dataset", "random",
                     "--out", str(tmp_path), *BENCH)  # fmt: skip
    assert rc == 0
    assert f"--variant: {host_variant} given more than once; running each once" in err
    assert len(pd.read_csv(tmp_path / device.family() / "bench.csv")) == 1


def test_default_results_dir_is_not_the_checkout(capsys, tmp_path, monkeypatch, host_variant):
    monkeypatch.setenv(results.RESULTS_DIR_ENV, str(tmp_path / "mine"))
    rc, out, _ = run(capsys, "bench", "--variant", host_variant, "--dataset", "random", *BENCH)
    assert rc == 0 and (tmp_path / "mine" / device.family() / "bench.csv").is_file()
    monkeypatch.delenv(results.RESULTS_DIR_ENV)
    monkeypatch.chdir(tmp_path)
    assert results.default_dir() == Path("dlrmlab-results")
    rc, out, _ = run(capsys, "bench", "--variant", host_variant, "--dataset", "random", *BENCH)
    assert rc == 0 and (tmp_path / "dlrmlab-results" / device.family() / "bench.csv").is_file()


# --- tune ---------------------------------------------------------------------------------------------------


def _fake_tune(called):
    from dlrmlab import tune

    def tune_fast(*a, **k):
        called.append(1)
        ranking = pd.DataFrame({"candidate": ['{"unroll": 8}'], "median_ms": [1.0], "correct": [True],
                                "timing_valid": [not backend.SIMULATOR]})  # fmt: skip
        return tune.TuneResult(ranking, ranking.drop(columns=["candidate"]))

    return tune_fast


@simulator_only
def test_tune_in_simulator_says_timings_mean_nothing_and_where(capsys, tmp_path, monkeypatch):
    from dlrmlab import tune

    called = []
    monkeypatch.setattr(tune, "tune_fast", _fake_tune(called))
    rc, out, _ = run(capsys, "tune", "fast", "--quiet")
    assert rc == 0 and "simulator: timings not meaningful" in out and "no CSV written" in out
    rc, out, _ = run(capsys, "tune", "fast", "--quiet", "--out", str(tmp_path))
    assert rc == 0 and f"appended 1 row(s) to {tmp_path / device.family() / 'tune_fast.csv'}" in out


def test_tune_unwritable_out_fails_before_the_sweep(capsys, tmp_path, monkeypatch):
    from dlrmlab import tune

    called = []
    monkeypatch.setattr(tune, "tune_fast", _fake_tune(called))
    (tmp_path / "f").write_text("x")
    rc, _, err = run(capsys, "tune", "fast", "--quiet", "--out", str(tmp_path / "f" / "res"))
    assert rc == 2 and "cannot be created" in err and not called


@pytest.mark.torch
def test_dlrm_ctrl_c_keeps_the_cases_measured(capsys, tmp_path, monkeypatch):
    from dlrmlab.dlrm import measure

    calls = []

    def measure_case(model, wl, names, **kw):
        calls.append(wl.dataset)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return [{"pipeline": "torch", "embedding": "torch", "execution": "eager", "latency_ms": 1.0,
                 "correct": True}], {}  # fmt: skip

    monkeypatch.setattr(measure, "measure_case", measure_case)
    rc, _, err = run(capsys, "dlrm", "--embedding", "torch", "--dataset", "random,zipf:1.1", "--no-compile",
                     "--quiet", "--out", str(tmp_path))  # fmt: skip
    csv = tmp_path / device.family() / "dlrm.csv"
    assert rc == 130 and f"interrupted: 1 row(s) saved to {csv}" in err
    assert list(pd.read_csv(csv)["dataset"]) == ["random"]
