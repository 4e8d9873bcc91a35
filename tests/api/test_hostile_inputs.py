"""Hostile input at every public boundary: refused (exit status 2 or :class:`DlrmlabError`) quickly, in bounded
memory, with a message that names the flag or argument, never a traceback or a hang.

The property tests drive :func:`dlrmlab.cli.main` in-process and the public API with generated values that are
invalid for the flag or argument they are given to (not an integer, not finite, out of range, or so large the
request cannot fit); each example runs under a time limit (SIGALRM) and tracemalloc's peak is bounded.
"""

from __future__ import annotations

import contextlib
import math
import signal
import time
import tracemalloc
import warnings

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from dlrmlab import api, cli  # noqa: E402
from dlrmlab.bench.sweep import run_bench  # noqa: E402
from dlrmlab.errors import DlrmlabError  # noqa: E402
from dlrmlab.validate import SEED_MAX  # noqa: E402
from dlrmlab.workload import MAX_BATCH, MAX_DIM, MAX_ROWS, MAX_TABLES, preset  # noqa: E402

SECONDS = 5  # per example: a refusal reads metadata only
MEMORY = 200 * 2**20


class Hang(Exception):
    pass


@contextlib.contextmanager
def bounded(seconds: float = SECONDS, memory: int = MEMORY):
    """Fail (not hang) past ``seconds``; fail if Python allocations peak above ``memory`` bytes."""

    def on_alarm(signum, frame):
        raise Hang(f"no answer within {seconds} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    tracemalloc.start()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert peak < memory, f"peak {peak / 2**20:.0f} MiB of Python allocations before the refusal"


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    """Exit status and stderr of ``dlrmlab ARGV`` (argparse's own refusals exit through SystemExit)."""
    with bounded():
        try:
            rc = cli.main(argv)
        except SystemExit as e:
            rc = e.code
    err = capsys.readouterr().err
    return rc, err


def refused_by_cli(argv: list[str], capsys) -> str:
    rc, err = run_cli(argv, capsys)
    assert rc == 2, (argv, rc, err)
    assert "Traceback" not in err and err.strip(), err
    assert err.strip().splitlines()[-1].startswith(("dlrmlab: error: ", "dlrmlab ")), err
    return err


# --- generated hostile values ---------------------------------------------------------------------------------

NOT_INTEGERS = st.one_of(
    st.sampled_from(["nan", "inf", "-inf", "NaN", "2.5", "1e3", "0x10", "", " ", "abc", "1_0.5", "--", "½"]),
    st.floats(allow_nan=False, allow_infinity=False).filter(lambda x: x != int(x)).map(repr),
)


def out_of_range(lo: int, hi: int):
    return st.one_of(st.integers(max_value=lo - 1), st.integers(min_value=hi + 1)).map(str)


# flag -> (commands that take it, values invalid for it)
SHAPE_FLAGS = {
    "--rows": out_of_range(1, MAX_ROWS), "--tables": out_of_range(1, MAX_TABLES),
    "--batch": out_of_range(1, MAX_BATCH), "--dim": out_of_range(1, MAX_DIM), "--seed": out_of_range(0, SEED_MAX),
}  # fmt: skip
BENCH_FLAGS = {
    "--batches": out_of_range(1, 10**6), "--repeats": out_of_range(1, 10**6), "--repeat-runs": out_of_range(1, 10**6),
    "--serving-block": out_of_range(1, 10**6),
    "--warmup": st.one_of(st.sampled_from(["nan", "inf", "-inf", "-1", "abc", "1e999"]),
                          st.floats(max_value=-1e-9).map(repr), st.floats(min_value=86401, max_value=1e300).map(repr)),
}  # fmt: skip


@st.composite
def hostile_argv(draw):
    """A describe or bench command with one flag given a value that must be refused."""
    flags = dict(SHAPE_FLAGS)
    command = draw(st.sampled_from(["describe", "bench"]))
    if command == "bench":
        flags.update(BENCH_FLAGS)
    flag = draw(st.sampled_from(sorted(flags)))
    value = draw(st.one_of(flags[flag], NOT_INTEGERS) if flag != "--warmup" else flags[flag])
    base = (["workload", "describe", "--dataset", "random", "--preset", "tiny"] if command == "describe" else
            ["bench", "--variant", "baseline", "--dataset", "random", "--preset", "tiny", "--no-torch", "--quiet"])
    return [*base, f"{flag}={value}"], flag


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(case=hostile_argv())
def test_cli_refuses_hostile_numbers(case, capsys, tmp_path_factory):
    argv, flag = case
    out = ["--out", str(tmp_path_factory.mktemp("out"))] if argv[0] == "bench" else []
    err = refused_by_cli([*argv, *out], capsys)
    assert flag in err, err  # the flag as the user typed it


# sizes that parse and are in range, but cannot fit: refused from the shape alone
HUGE = st.sampled_from([
    ["--rows", str(10**11)], ["--rows", str(MAX_ROWS)], ["--tables", str(MAX_TABLES), "--rows", str(10**8)],
    ["--batch", str(10**9)], ["--dim", str(MAX_DIM), "--rows", str(10**8)], ["--batch", str(MAX_BATCH)],
])


@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(extra=HUGE, command=st.sampled_from(["describe", "bench"]))
def test_cli_refuses_sizes_that_cannot_fit(extra, command, capsys, tmp_path_factory):
    if command == "describe" and "--batch" not in extra:
        extra = [*extra, "--batch", str(10**9)]  # describing draws ids only: tables may be any size
    base = (["workload", "describe", "--dataset", "random", "--preset", "tiny"] if command == "describe" else
            ["bench", "--variant", "baseline", "--dataset", "random", "--preset", "tiny", "--no-torch", "--quiet",
             "--out", str(tmp_path_factory.mktemp("out"))])
    refused_by_cli([*base, *extra], capsys)


HOSTILE = st.one_of(
    st.sampled_from([math.nan, math.inf, -math.inf, 2.5, 2.7, 2.9, -1, 0, True, False, "8", None, [1], (2,), b"1",
                     10**100, -(10**100), 1e300, np.float64("nan"), np.int64(-3)]),
    st.floats().filter(lambda x: not math.isfinite(x) or x != int(x)),
    st.integers(max_value=0),
)
PRESET_KEYS = ["tables", "rows", "batch_size", "batch", "dim", "embedding_dim", "sparse_feature_size", "num_tables",
               "num_embeddings"]


@settings(max_examples=40, deadline=None)
@given(key=st.sampled_from(PRESET_KEYS), value=HOSTILE)
def test_preset_refuses_hostile_overrides(key, value):
    with bounded(), pytest.raises(DlrmlabError, match=key):
        preset("tiny", **{key: value})


BAD_SECONDS = st.one_of(st.sampled_from([math.nan, math.inf, -math.inf, -1, "1", True, [1], 1e300]),
                        st.floats(max_value=-1e-300))


@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data(), key=st.sampled_from(["warmup_s", "n_batches", "repeats", "seed", "serving_block",
                                            "repeat_runs"]))
def test_run_bench_refuses_hostile_numbers(data, key, tmp_path_factory):
    bad = BAD_SECONDS if key == "warmup_s" else HOSTILE.filter(lambda v: v is not None)
    value = data.draw(bad)
    if key == "seed" and not isinstance(value, bool) and value == 0:
        value = -1  # 0 is a valid seed
    with bounded(), pytest.raises(DlrmlabError, match=key):
        run_bench(["baseline"], "random", "tiny", include_torch=False, out=tmp_path_factory.mktemp("o"),
                  **{key: value})


W = np.zeros((10, 4), np.float32)


@settings(max_examples=25, deadline=None)
@given(arg=st.sampled_from(["input", "offsets", "padding_idx", "weight"]), value=HOSTILE)
def test_embedding_bag_refuses_hostile_arguments(arg, value):
    kwargs = {"input": np.array([1, 2, 3], np.int64), "weight": W, "offsets": np.array([0, 2], np.int64), arg: value}
    if arg == "offsets" and value is None:
        kwargs["offsets"] = [0, 2]
    if arg == "padding_idx" and (value is None or (isinstance(value, (int, np.integer)) and -10 <= value < 10)):
        kwargs["padding_idx"] = 2.5  # None and -10..9 are valid padding_idx values for a 10-row table
    with bounded(), pytest.raises(DlrmlabError):
        api.embedding_bag(**kwargs, mode="sum")


# --- the cases a newcomer hit, one test each ----------------------------------------------------------------


@pytest.mark.parametrize("value", ["nan", "inf"])
@pytest.mark.parametrize("command", ["bench", "dlrm"])
def test_warmup_nan_and_inf_refused_fast(value, command, capsys, tmp_path):
    argv = (["bench", "--variant", "baseline", "--dataset", "random", "--no-torch"] if command == "bench" else
            ["dlrm", "--embedding", "torch", "--no-compile"])
    t0 = time.perf_counter()
    err = refused_by_cli([*argv, "--warmup", value, "--out", str(tmp_path)], capsys)
    assert time.perf_counter() - t0 < 2 and "--warmup" in err and "finite" in err


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_run_bench_warmup_nan_refused(value, tmp_path):
    with bounded(2), pytest.raises(DlrmlabError, match="warmup_s must be a finite number"):
        run_bench(["baseline"], "random", "tiny", warmup_s=value, include_torch=False, out=tmp_path)


def test_a_billion_tables_refused_in_a_second(capsys):
    t0 = time.perf_counter()
    err = refused_by_cli(["workload", "describe", "--dataset", "random", "--tables", "1000000000"], capsys)
    assert time.perf_counter() - t0 < 1 and "--tables must be at most" in err


def test_preset_with_a_billion_tables_refused_in_a_second():
    t0 = time.perf_counter()
    with bounded(1), pytest.raises(DlrmlabError, match="tables must be at most"):
        preset("tiny", tables=10**9)
    assert time.perf_counter() - t0 < 1


def test_paper_case_in_the_simulator_refused_with_estimates(capsys, tmp_path):
    from dlrmlab import backend

    if not backend.SIMULATOR:
        pytest.skip("the simulator's estimate applies without a GPU")
    err = refused_by_cli(["bench", "--variant", "baseline", "--dataset", "random", "--preset", "paper",
                          "--no-torch", "--out", str(tmp_path)], capsys)  # fmt: skip
    assert "simulator" in err and " h per batch" in err and "GiB of host memory" in err


def test_binary_trace_named_without_echoing_bytes(tmp_path, capsys):
    path = tmp_path / "ids.bin"
    path.write_bytes(bytes(range(256)) * 4)
    err = refused_by_cli(["workload", "describe", "--dataset", f"trace:{path}"], capsys)
    assert "is not a text trace" in err and "one non-negative integer row id per line" in err
    assert "\\x" not in err and "more than one id" not in err


@pytest.mark.parametrize(("flag", "value"), [("--batches", "0"), ("--seed", "-1"), ("--repeats", "0")])
def test_messages_name_the_flag(flag, value, capsys, tmp_path):
    err = refused_by_cli(["bench", "--variant", "baseline", "--dataset", "random", "--no-torch", "--out",
                          str(tmp_path), flag, value], capsys)  # fmt: skip
    assert f"dlrmlab: error: {flag} must be" in err and "n_batches" not in err


def test_python_list_as_input_gets_a_proper_message():
    with pytest.raises(DlrmlabError, match=r"input must be an array .* got list; e.g. numpy.asarray"):
        api.embedding_bag([1, 2, 3], W, np.array([0, 2]))


def test_preset_overrides_as_users_name_them():
    assert preset("tiny", dim=16).embedding_dim == 16
    assert preset("tiny", embedding_dim=8).embedding_dim == 8
    assert preset("tiny", batch=4).batch_size == 4 and preset("tiny", rows=1e3).embedding_sizes == (1000,) * 3
    with pytest.raises(DlrmlabError, match="unknown override.*valid: .*embedding_dim"):
        preset("tiny", width=8)
    for key, value in [("batch_size", 2.5), ("sparse_feature_size", 2.7), ("rows", 2.9), ("rows", math.nan),
                       ("dim", math.inf)]:
        with pytest.raises(DlrmlabError, match=f"{key} must be an integer"):
            preset("tiny", **{key: value})


def test_dropped_ids_warning_on_its_own_line_says_what_to_look_at(tmp_path, capsys):
    path = tmp_path / "t.txt"
    path.write_text("\n".join(str(i) for i in range(0, 5000, 7)) + "\n")
    rc = cli.main(["workload", "describe", "--dataset", f"trace:{path}", "--preset", "tiny", "--ids", "200"])
    err = capsys.readouterr().err
    assert rc == 0
    line = next(ln for ln in err.splitlines() if "dlrmlab: warning:" in ln)
    assert line.lstrip("\r ").startswith("dlrmlab: warning:")
    assert "4,999 rows keep every id" in line and "dropped_ids column" in line and "see .dropped" not in line


def test_api_memory_error_does_not_suggest_cli_flags(monkeypatch):
    from dlrmlab import validate

    monkeypatch.setattr(validate, "available_host_bytes", lambda: 1000)
    with pytest.raises(DlrmlabError) as e:
        api.embedding_bag(np.array([1, 2]), np.zeros((1000, 16), np.float32), np.array([0]))
    assert "needs about" in str(e.value) and "--" not in str(e.value) and "smaller" in str(e.value)


def test_cli_memory_error_suggests_flags(capsys, monkeypatch):
    from dlrmlab import validate

    monkeypatch.setattr(validate, "available_host_bytes", lambda: 1000)
    err = refused_by_cli(["workload", "describe", "--dataset", "random", "--preset", "tiny"], capsys)
    assert "--batch" in err


def test_simulator_warns_between_a_minute_and_an_hour():
    from dlrmlab import backend, validate

    if not backend.SIMULATOR:
        pytest.skip("simulator only")
    stage = preset("tiny", batch_size=2**14)
    assert validate.SIMULATOR_WARN_S < validate.simulator_seconds(stage) < validate.SIMULATOR_REFUSE_S
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        validate.check_simulator_size(stage, "a case", 1e6)
    assert any("per batch and kernel" in str(w.message) for w in seen)


def test_api_refuses_hours_of_simulator_work():
    from dlrmlab import backend

    if not backend.SIMULATOR:
        pytest.skip("simulator only")
    with bounded(2), pytest.raises(DlrmlabError, match=r"would take about .* h per batch .* simulator"):
        api.embedding_bag(np.zeros(10**7, np.int64), np.zeros((10, 64), np.float32), np.array([0]))
