"""Nsight Compute stall profiler: command line, CSV parsing (committed H200 captures), error messages."""

from __future__ import annotations

import math
import os
import stat
import sys
from pathlib import Path

import pandas as pd
import pytest
from helpers import FIXTURES

from dlrmlab import backend, cli, device
from dlrmlab.bench import ncu
from dlrmlab.errors import DlrmlabError

RAW = FIXTURES / "ncu_raw_h200_baseline.csv"
#: build_command's exact metric set on ncu 2025.3.1 (H200, 2026-11-26): a tiny Numba copy kernel named
#: embedding_bag_tiny, 5 launches interleaved with other_kernel, the 3rd profiled (launch-skip 2).
TINY = FIXTURES / "ncu_raw_h200_tiny_issue_active.csv"

# --- build_command ---------------------------------------------------------------------------------------


def test_build_command_argv():
    cmd = ncu.build_command(
        ["python3", "t.py", "--x", "1"],
        "embedding_bag",
        launch_skip=3,
        launch_count=2,
        metrics_extra=["foo.sum", "gpu__time_duration.sum"],
    )
    assert cmd[:7] == [
        "ncu",
        "--clock-control",
        "none",
        "--cache-control",
        "none",
        "--kernel-name",
        "regex:embedding_bag",
    ]
    assert cmd[7:11] == ["--launch-skip", "3", "--launch-count", "2"]
    sections = [cmd[i + 1] for i, a in enumerate(cmd) if a == "--section"]
    assert sections == list(ncu.SECTIONS)
    metrics = cmd[cmd.index("--metrics") + 1].split(",")
    assert metrics[0] == r"regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio"
    for m in (
        "sm__warps_active.avg.pct_of_peak_sustained_active",
        "launch__registers_per_thread",
        "l1tex__t_requests_pipe_lsu_mem_global_op_ld.sum",
        "smsp__cycles_active.avg",
        "foo.sum",
    ):
        assert m in metrics
    assert len(metrics) == len(set(metrics))  # the extra duplicate is not repeated
    assert not any("pcsamp" in m for m in metrics)
    assert cmd[cmd.index("--csv") :] == ["--csv", "--page", "raw", "python3", "t.py", "--x", "1"]


@pytest.mark.parametrize("kw", [{"kernel_regex": ""}, {"launch_count": 0}, {"launch_skip": -1}])
def test_build_command_rejects_bad_arguments(kw):
    args = {"target_argv": ["t"], "kernel_regex": "k", **kw}
    with pytest.raises(DlrmlabError):
        ncu.build_command(**args)


# --- the committed H200 raw capture (older metric set: per-warp stall latencies) --------------------------


@pytest.fixture(scope="module")
def raw() -> pd.Series:
    df = ncu.parse_raw_csv(RAW.read_text())
    assert len(df) == 1
    return df.iloc[0]


def test_raw_fixture_launch_and_occupancy(raw):
    assert raw["kernel"] == "embedding_bag_paper"
    assert raw["kernel_full"].startswith("embedding_bag_paper[v1,")
    assert (raw["block"], raw["grid"], raw["registers"]) == (256, 1024, 45)
    assert raw["achieved_occupancy"] == pytest.approx(0.496)
    assert raw["theoretical_occupancy"] == pytest.approx(0.625)  # 5 blocks x 8 warps / 64
    assert raw["occupancy_limiter"] == "registers"


def test_raw_fixture_memory(raw):
    assert raw["l2_hit_rate"] == pytest.approx(0.1118)
    assert raw["l1_hit_rate"] == pytest.approx(0.1890)
    assert raw["dram_throughput_pct"] == pytest.approx(37.34)
    assert raw["gpu_time_us"] == pytest.approx(78.848)
    assert math.isnan(raw["sectors_per_request"])  # not in that metric set


def test_raw_fixture_stalls(raw):
    shares = {c[6:-6]: raw[c] for c in raw.index if c.startswith("stall_") and c.endswith("_share")}
    assert max(shares, key=shares.get) == "long_scoreboard"
    assert sum(shares.values()) == pytest.approx(1.0)
    assert {"not_selected", "wait", "math_pipe_throttle", "selected", "gmma"} <= set(shares)
    # Per-warp latencies divided by instructions issued per warp (= the 'selected' value):
    assert raw["stall_selected_cpi"] == pytest.approx(1.0)
    assert raw["stall_long_scoreboard_cpi"] == pytest.approx(40125.72 / 5441.26)
    # ncu's own "Warp Cycles Per Issued Instruction" for this kernel (details capture, another run): 13.20
    assert raw["stall_total_cpi"] == pytest.approx(13.2, abs=0.3)


def test_theoretical_occupancy_computed_from_block_limits():
    text = RAW.read_text()
    header = next(line for line in text.splitlines() if line.startswith('"ID"'))
    col = header.split('","').index("sm__maximum_warps_per_active_cycle_pct")
    lines = []
    for line in text.splitlines():  # drop that column, the way an older ncu would not have collected it
        if line.startswith('"'):
            cells = line[1:-1].split('","')
            del cells[col]
            line = '"' + '","'.join(cells) + '"'
        lines.append(line)
    row = ncu.parse_raw_csv("\n".join(lines)).iloc[0]
    assert row["theoretical_occupancy"] == pytest.approx(0.625)


def test_real_capture_with_current_metric_set():
    df = ncu.parse_raw_csv(TINY.read_text())
    assert len(df) == 1
    r = df.iloc[0]
    assert r["kernel"] == "embedding_bag_tiny"
    assert (r["block"], r["grid"], r["registers"]) == (256, 4096, 16)
    assert r["theoretical_occupancy"] == 1.0 and r["occupancy_limiter"] == "warps"
    assert r["achieved_occupancy"] == pytest.approx(0.6455)
    assert r["sectors_per_request"] == pytest.approx(4.0)  # 32 consecutive floats per request
    assert r["gpu_time_us"] == pytest.approx(5.088)
    assert r["stall_selected_cpi"] == pytest.approx(0.99)  # one issuing cycle per instruction
    assert r["stall_long_scoreboard_cpi"] == pytest.approx(20.93)
    assert r["stall_total_cpi"] == pytest.approx(32.4)
    shares = {c[6:-6]: r[c] for c in df.columns if c.endswith("_share")}
    assert max(shares, key=shares.get) == "long_scoreboard" and len(shares) == 19


# --- synthetic raw CSV with the current metric set ---------------------------------------------------------

SYNTH_METRICS = {
    "ID": ("", "0"),
    "Kernel Name": (
        "",
        "void at::native::(anonymous namespace)::EmbeddingBag_updateOutputKernel_sum_mean"
        "<float, long>(const T1 *, const long *, long)",
    ),
    "Block Size": ("", "(128, 1, 1)"),
    "Grid Size": ("", "(2048, 1, 1)"),
    "launch__registers_per_thread": ("register/thread", "72"),
    "launch__occupancy_limit_registers": ("block", "6"),
    "launch__occupancy_limit_shared_mem": ("block", "32"),
    "launch__occupancy_limit_warps": ("block", "16"),
    "launch__occupancy_limit_blocks": ("block", "32"),
    "launch__occupancy_limit_barriers": ("block", "32"),
    "sm__warps_active.avg.pct_of_peak_sustained_active": ("%", "31.25"),
    "l1tex__t_sector_hit_rate.pct": ("%", "5.5"),
    "lts__t_sector_hit_rate.pct": ("%", "42"),
    "dram__throughput.avg.pct_of_peak_sustained_elapsed": ("%", "81.2"),
    "gpu__time_duration.sum": ("usecond", "1,024.50"),  # ncu's auto units: scaled back
    "l1tex__t_sectors_pipe_lsu_mem_global_op_ld.sum": ("Ksector", "3,932.16"),
    "l1tex__t_requests_pipe_lsu_mem_global_op_ld.sum": ("request", "983,040"),
    "smsp__inst_executed.sum": ("inst", "1,000,000"),
    "smsp__average_warps_issue_stalled_long_scoreboard_per_issue_active.ratio": ("", "12"),
    "smsp__average_warps_issue_stalled_lg_throttle_per_issue_active.ratio": ("", "4"),
    "smsp__average_warps_issue_stalled_selected_per_issue_active.ratio": ("", "1"),
    "smsp__average_warps_issue_stalled_wait_per_issue_active.ratio": ("", "1.5"),
    "smsp__average_warps_issue_stalled_barrier_per_issue_active.ratio": ("", "0"),
    "smsp__average_warps_issue_stalled_sleeping_per_issue_active.ratio": ("", "n/a"),
    # the older per-warp family next to it must be ignored
    "smsp__average_warp_latency_issue_stalled_long_scoreboard.ratio": ("", "99,999"),
}


def synth_csv(metrics: dict[str, tuple[str, str]] = SYNTH_METRICS, rows: int = 1) -> str:
    q = lambda xs: ",".join(f'"{x}"' for x in xs)
    lines = [
        "==PROF== Connected to process 4242 (/usr/bin/python3.12)",
        'hello from the target, with "quotes" inside',
        '==PROF== Profiling "EmbeddingBag_updateOutputKernel_sum_mean" - 0: 0%....50%....100% - 9 passes',
        "==PROF== Disconnected from process 4242",
        q(metrics),
        q(u for u, _ in metrics.values()),
    ]
    for i in range(rows):
        lines.append(q(str(i) if k == "ID" else v for k, (_, v) in metrics.items()))
    lines.append("==WARNING== Found outstanding GPU clock reset, trying to revert...Success.")
    return "\n".join(lines) + "\n"


def test_synthetic_primary_stall_path():
    df = ncu.parse_raw_csv(synth_csv(rows=2))
    assert len(df) == 2 and list(df["launch_id"]) == [0, 1]
    r = df.iloc[0]
    assert r["kernel"] == "EmbeddingBag_updateOutputKernel_sum_mean"
    assert (r["block"], r["grid"], r["registers"]) == (128, 2048, 72)
    assert r["theoretical_occupancy"] == pytest.approx(6 * 4 / 64)  # no pct metric: from the block limits
    assert r["occupancy_limiter"] == "registers"
    assert r["achieved_occupancy"] == pytest.approx(0.3125)
    assert (r["l1_hit_rate"], r["l2_hit_rate"], r["dram_throughput_pct"]) == pytest.approx((0.055, 0.42, 81.2))
    assert r["sectors_per_request"] == pytest.approx(4.0)
    assert r["gpu_time_us"] == pytest.approx(1024.5)
    assert r["stall_long_scoreboard_cpi"] == 12  # not the 99,999 of the per-warp family
    assert r["stall_wait_cpi"] == 1.5 and r["stall_sleeping_cpi"] == 0
    assert r["stall_total_cpi"] == pytest.approx(18.5)
    assert r["stall_long_scoreboard_share"] == pytest.approx(12 / 18.5)
    assert r["stall_selected_share"] == pytest.approx(1 / 18.5)
    stall_cols = [c for c in df.columns if c.endswith("_cpi")]
    assert len(stall_cols) == 6 + 1


def test_occupancy_limiter_ties_and_warp_cap():
    m = dict(SYNTH_METRICS)
    m["launch__occupancy_limit_warps"] = ("block", "6")
    r = ncu.parse_raw_csv(synth_csv(m)).iloc[0]
    assert r["occupancy_limiter"] == "registers+warps"


def test_parse_raw_without_csv_is_an_error():
    with pytest.raises(DlrmlabError, match="no CSV"):
        ncu.parse_raw_csv("==PROF== Disconnected from process 1\n")


@pytest.mark.parametrize(
    "name, base",
    [
        ("embedding_bag_paper[v1,cw51cXTL_3d](Array<float, 1, C, mutable, aligned>, long long)", "embedding_bag_paper"),
        (
            "void at::native::(anonymous namespace)::EmbeddingBag_updateOutputKernel_sum_mean<float, long>(const "
            "float *, long)",
            "EmbeddingBag_updateOutputKernel_sum_mean",
        ),
        ("_Z6kernelPf", "_Z6kernelPf"),
    ],
)
def test_kernel_base_name(name, base):
    assert ncu.kernel_base_name(name) == base


# --- running ncu: a fake ncu first on PATH -------------------------------------------------------------------


def fake_ncu(tmp_path: Path, monkeypatch, stdout: str, rc: int = 0) -> Path:
    """Put an ``ncu`` on PATH that prints ``stdout`` and exits ``rc``; it records its argv."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (tmp_path / "out.txt").write_text(stdout)
    script = bindir / "ncu"
    script.write_text(
        f"#!{sys.executable}\nimport sys\n"
        f"open({str(tmp_path / 'argv.txt')!r}, 'w').write('\\n'.join(sys.argv[1:]))\n"
        f"sys.stdout.write(open({str(tmp_path / 'out.txt')!r}).read())\nsys.exit({rc})\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")
    return tmp_path / "argv.txt"


def test_profile_parses_what_ncu_prints(tmp_path, monkeypatch):
    argv_file = fake_ncu(tmp_path, monkeypatch, RAW.read_text())
    df = ncu.profile(["python3", "target.py"], "embedding_bag", launch_skip=1)
    assert df.iloc[0]["registers"] == 45
    argv = argv_file.read_text().splitlines()
    assert argv == ncu.build_command(["python3", "target.py"], "embedding_bag", launch_skip=1)[1:]


def test_profile_without_permission(tmp_path, monkeypatch):
    out = (
        "==PROF== Connected to process 77\n==ERROR== ERR_NVGPUCTRPERM - The user does not have permission to "
        "access NVIDIA GPU Performance Counters on the target device 0.\n"
    )
    fake_ncu(tmp_path, monkeypatch, out, rc=1)
    with pytest.raises(DlrmlabError, match="NVreg_RestrictProfilingToAdminUsers=0") as e:
        ncu.profile(["python3", "t.py"], "embedding_bag")
    assert "root" in str(e.value)


def test_profile_no_kernel_matched_lists_available(tmp_path, monkeypatch):
    out = (
        "==PROF== Connected to process 88\n"
        "ncu_target: ran 8 batches of x; kernel_regex=embedding_bag_paper|pin_hot_rows\n"
        "==PROF== Disconnected from process 88\n"
        "==WARNING== No kernels were profiled.\nAvailable Kernels:\n"
        "1. embedding_bag_paper\n2. EmbeddingBag_updateOutputKernel_sum_mean\n"
    )
    fake_ncu(tmp_path, monkeypatch, out, rc=0)
    with pytest.raises(DlrmlabError, match="no kernel matched") as e:
        ncu.profile(["python3", "t.py"], "nosuchkernel")
    msg = str(e.value)
    assert "regex:nosuchkernel" in msg
    assert "embedding_bag_paper" in msg and "EmbeddingBag_updateOutputKernel_sum_mean" in msg
    assert "the target names its kernels regex:embedding_bag_paper|pin_hot_rows" in msg


def test_available_kernels_with_prefixed_lines():
    out = "==WARNING== No kernels were profiled.\n==WARNING== Available Kernels:\n==WARNING== 1. a_kernel\n  2. b\n\nx"
    assert ncu.available_kernels(out) == ["a_kernel", "b"]


def test_profile_target_failed(tmp_path, monkeypatch):
    out = "".join(f"line {i}\n" for i in range(100)) + (
        "Traceback (most recent call last):\nValueError: boom\n"
        "==ERROR== The application returned an error code (1).\n==WARNING== No kernels were profiled.\n"
    )
    fake_ncu(tmp_path, monkeypatch, out, rc=1)
    with pytest.raises(DlrmlabError, match="failed") as e:
        ncu.profile(["python3", "t.py"], "embedding_bag")
    msg = str(e.value)
    assert "ValueError: boom" in msg and "line 99" in msg and "line 10\n" not in msg


def test_profile_ncu_not_on_path(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(DlrmlabError, match="Nsight Compute") as e:
        ncu.profile(["python3", "t.py"], "embedding_bag")
    assert "CUDA toolkit" in str(e.value)


# --- CLI, results file, target -----------------------------------------------------------------------------


def _profile_rows(variant: str, dataset: str, preset: str = "tiny", seed: int = 0, regex: str = "embedding_bag"):
    """What profile_variant returns: parsed ncu rows with the variant and workload columns in front."""
    from dlrmlab.workload import preset as make_preset

    df = ncu.parse_raw_csv(RAW.read_text())
    info = {"variant": variant, "dataset": dataset, "params": "{}", "seed": seed, **make_preset(preset).describe(),
            "kernel_regex": regex}  # fmt: skip
    for i, (k, v) in enumerate(info.items()):
        df.insert(i, k, str(v) if isinstance(v, list) else v)
    return df


def test_cli_profile_appends_under_the_gpu_family(capsys, tmp_path, monkeypatch):
    """``dlrmlab profile`` appends its rows to ``<out>/<gpu family>/profile.csv`` through the one atomic,
    strict results path (no stray temp files; every variant's rows in one table)."""
    from dlrmlab.bench import results

    calls = []
    monkeypatch.setattr(ncu, "check_profilable",
                        lambda variant, preset, knobs: calls.append(("check", variant, preset, knobs)))

    def fake_profile(variant, dataset, preset, seed, regex, skip, count, knobs):
        calls.append(("profile", variant, dataset, preset, knobs))
        return _profile_rows(variant, dataset, preset, seed)

    monkeypatch.setattr(ncu, "profile_variant", fake_profile)
    out = tmp_path / "res"
    for variant in ("baseline", "fast"):
        rc = cli.main(["profile", "--variant", variant, "--dataset", "zipf:1.1", "--out", str(out)])
        assert rc == 0
    text = capsys.readouterr().out
    path = out / device.family() / "profile.csv"
    assert f"appended 1 row(s) to {path}" in text
    assert "embedding_bag_paper" in text  # the summary
    assert calls[0] == ("check", "baseline", backend.default_preset(), {})  # --preset auto, resolved
    assert calls[1] == ("profile", "baseline", "zipf:1.1", backend.default_preset(), {})
    df = results.load_results(path)
    assert list(df["variant"]) == ["baseline", "fast"] and list(df["dataset"]) == ["zipf:1.1"] * 2
    assert df["registers"].tolist() == [45, 45]
    assert sorted(p.name for p in path.parent.iterdir() if not p.name.endswith(".parquet")) == ["profile.csv"]


def test_profile_rows_with_other_columns_are_refused(tmp_path):
    from dlrmlab.bench import results

    path = results.append_results(_profile_rows("baseline", "random"), "profile", tmp_path)
    before = path.read_bytes()
    with pytest.raises(DlrmlabError):
        results.append_results(_profile_rows("baseline", "random").drop(columns=["registers"]), "profile", tmp_path)
    assert path.read_bytes() == before


def test_format_summary_mentions_the_essentials():
    text = ncu.format_summary(ncu.parse_raw_csv(RAW.read_text()))
    for s in ("embedding_bag_paper", "45 registers", "62.5%", "registers", "49.6%", "L2 hit 11.2%", "long_scoreboard"):
        assert s in text


@pytest.mark.skipif(not backend.SIMULATOR, reason="a CUDA GPU is present")
def test_cli_profile_in_simulator_mode(capsys, tmp_path):
    rc = cli.main(["profile", "--variant", "torch", "--dataset", "random", "--preset", "tiny", "--out", str(tmp_path)])
    _, err = capsys.readouterr()
    assert rc == 2
    assert "profiling needs a CUDA GPU and Nsight Compute" in err
    assert not list(tmp_path.iterdir())


def test_default_kernel_regex():
    assert ncu.default_kernel_regex("torch") == "EmbeddingBag"
    assert ncu.default_kernel_regex("baseline") == "embedding_bag_paper"
    assert ncu.default_kernel_regex("fast_graph+l2p") == "embedding_bag_fast"  # never the pin kernel beside it
    assert ncu.default_kernel_regex("cuembed_graph") == "EmbeddingLookUpKernel"


def test_target_argv_runs_the_target_module():
    argv = ncu.target_argv("torch", "zipf:1.1", "tiny", 3)
    assert argv[1:3] == ["-m", "dlrmlab.bench.ncu_target"]
    assert argv[3:] == ["--variant", "torch", "--dataset", "zipf:1.1", "--preset", "tiny", "--seed", "3"]
    assert ncu.target_argv("fast", "random", knobs={"unroll": 8})[-2:] == ["--knobs", '{"unroll": 8}']


def test_cli_profile_knobs_are_checked_before_anything_runs(capsys, tmp_path, monkeypatch):
    """``--knobs`` reaches the profiler as a dict; bad JSON or a knob the variant does not take is a user
    error (exit 2) before ncu runs or ``--out`` is created."""
    seen = []
    monkeypatch.setattr(ncu, "profile_variant", lambda *a, **k: seen.append(k) or _profile_rows("fast", "random"))
    monkeypatch.setattr(backend, "SIMULATOR", False)  # past the simulator refusal, to the knob check
    out = tmp_path / "res"
    for knobs, message in (("[8]", "expected a JSON object"), ("{unroll", "not JSON"),
                           ('{"bogus": 1}', "bogus")):  # fmt: skip
        rc = cli.main(["profile", "--variant", "fast", "--dataset", "random", "--preset", "tiny", "--out", str(out),
                       "--knobs", knobs])
        assert rc == 2 and message in capsys.readouterr().err
    assert not seen and not out.exists()
    monkeypatch.setattr(ncu, "check_profilable", lambda *a: None)
    monkeypatch.setattr(cli, "family", lambda: "gpu")
    rc = cli.main(["profile", "--variant", "fast", "--dataset", "random", "--preset", "tiny", "--out", str(out),
                   "--knobs", '{"unroll": 8, "load_hint": "L2::256B"}'])
    assert rc == 0 and seen == [{"knobs": {"unroll": 8, "load_hint": "L2::256B"}}]


def test_older_profile_tables_keep_appending(tmp_path):
    """A profile.csv from before ``params`` and ``dram_read_bytes`` is upgraded in place, then appended to."""
    from dlrmlab.bench import results

    old = _profile_rows("baseline", "random").drop(columns=["params", "dram_read_bytes"])
    csv = tmp_path / "profile.csv"
    old.to_csv(csv, index=False)
    results.append_results(_profile_rows("fast", "random"), "profile", tmp_path)
    df = results.load_results(csv)
    assert list(df["variant"]) == ["baseline", "fast"] and list(df["params"]) == ["{}", "{}"]
    assert df["dram_read_bytes"].isna().all()


def test_ncu_target_runs_a_variant(monkeypatch, capsys):
    from dlrmlab import variants
    from dlrmlab.bench import ncu_target
    from dlrmlab.variants import Prepared, Variant

    calls: list = []

    def prepare(case, knobs):
        calls.append(knobs)
        return Prepared(run=calls.append, result=lambda i: [], close=lambda: calls.append("closed"))

    test_variant = Variant("_ncu_test_variant", "test only", prepare, ("fast",), kernels="my_kernel")
    monkeypatch.setitem(variants.VARIANTS, "_ncu_test_variant", test_variant)
    argv = ["--variant", "_ncu_test_variant", "--dataset", "random", "--preset", "tiny", "--iters", "6",
            "--n-batches", "2", "--knobs", '{"unroll": 4}']  # fmt: skip
    rc = ncu_target.main(argv)
    assert rc == 0
    assert calls == [{"fast": {"unroll": 4}}, 0, 1, 0, 1, 0, 1, "closed"]
    assert "kernel_regex=my_kernel" in capsys.readouterr().out


def test_ncu_target_unknown_variant_exits_2(capsys):
    from dlrmlab.bench import ncu_target

    rc = ncu_target.main(["--variant", "nope", "--dataset", "random", "--preset", "tiny"])
    assert rc == 2 and "unknown variant 'nope'" in capsys.readouterr().err


def test_h100_fixtures_from_build_command():
    """Captures on the H100 (2026-11-26) with exactly build_command's argv (see fixtures/README.md)."""
    base = ncu.parse_raw_csv((FIXTURES / "ncu_raw_h100_baseline.csv").read_text()).iloc[0]
    assert base["kernel"] == "embedding_bag_paper"
    assert base["registers"] == 45 and base["block"] == 256 and base["grid"] == 1024
    assert base["theoretical_occupancy"] == pytest.approx(0.625)
    assert base["occupancy_limiter"] == "registers"
    shares = {c: base[c] for c in base.index if c.startswith("stall_") and c.endswith("_share")}
    assert max(shares, key=shares.get) == "stall_long_scoreboard_share"
    fast = ncu.parse_raw_csv((FIXTURES / "ncu_raw_h100_fast.csv").read_text()).iloc[0]
    assert fast["kernel"] == "embedding_bag_fused" and fast["registers"] == 64
    # the fast kernel (named embedding_bag_fused when this was captured) streams at the memory roofline
    assert fast["dram_throughput_pct"] > 80


def test_latest_keeps_the_newest_own_configuration_row():
    rows = pd.DataFrame({
        "variant": ["fast", "fast", "fast", "torch", "fast"],
        "dataset": ["random"] * 4 + ["zipf:1.1"],
        "kernel": ["old_name", "k", "k", "t", "k"],
        "params": ["{}", '{"unroll": 8}', "{}", "{}", None],
        "gpu_time_us": [1.0, 2.0, 3.0, 4.0, 5.0],
    })  # fmt: skip
    got = ncu.latest(rows)
    assert got["gpu_time_us"].tolist() == [3.0, 4.0, 5.0]  # newest own row; an explicit one is not "the" kernel
    assert ncu.latest(rows.drop(columns=["params"]))["gpu_time_us"].tolist() == [3.0, 4.0, 5.0]
