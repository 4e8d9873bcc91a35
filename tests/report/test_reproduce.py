"""``dlrmlab reproduce`` end to end in the simulator: the report, its sections and figures, the options, refusals
before anything runs (exit 2), a crashing experiment recorded (exit 1), and the output-directory rules."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from dlrmlab import backend, cli
from dlrmlab.report import claims as claims_mod
from dlrmlab.report.writer import MANIFEST, REPORT

pytestmark = pytest.mark.skipif(not backend.SIMULATOR, reason="checks the simulator mode of reproduce")


@pytest.fixture(autouse=True)
def _no_traces(tmp_path, monkeypatch):
    """The artifact's traces are absent unless a test puts them somewhere (CI has none)."""
    empty = tmp_path / "no-data"
    empty.mkdir()
    monkeypatch.setenv("DLRMLAB_DATA_DIR", str(empty))
    monkeypatch.setenv("DLRMLAB_CACHE_DIR", str(tmp_path / "cache"))


def run(*args: str) -> int:
    return cli.main(["reproduce", "--quiet", *args])


def sections(report: str) -> list[str]:
    return [line[3:] for line in report.splitlines() if line.startswith("## ")]


@pytest.mark.slow
def test_tiny_suite_writes_every_section_and_figure(tmp_path, capsys):
    out = tmp_path / "out"
    assert run("--preset", "tiny", "--out", str(out)) == 0
    d = out / "simulator"
    report = (d / REPORT).read_text()
    titles = [c.title for c in claims_mod.CLAIMS.values()]
    assert sections(report) == ["Environment", "Summary", *(f"{i}. {t}" for i, t in enumerate(titles, 1)),
                                "What did not reproduce, and why"]  # fmt: skip
    assert "**No timings were taken.**" in report.split("## Environment")[0]
    summary = report.split("## Summary")[1].split("\n## ")[0]
    assert summary.count("not measured (simulator)") >= 2 * 7  # ours and reproduced? of every timed claim
    for name in claims_mod.CLAIMS:
        if name == "stalls":  # no GPU, no ncu: skipped with the reason, no figure
            assert "**Skipped**: needs a CUDA GPU and Nsight Compute" in report
            continue
        assert (d / f"{name}.png").stat().st_size > 1000 and (d / f"{name}.svg").is_file(), name
        assert f"]({name}.png)" in report
        assert (d / f"{name}.csv").is_file()
    # the datasets: the missing traces are skipped with the reason; --datasets defaults honoured
    assert "not downloaded: $DLRMLAB_OFFLINE is set); run `dlrmlab data fetch` where the network allows" in report
    hot = pd.read_csv(d / "hotness.csv")
    # ... and stood in for, in the hotness analysis, by their fitted synthetic sets (at the paper's scale)
    assert list(hot["dataset"]) == ["synthetic-high", "random", "synthetic-low", "synthetic-medium"]
    # every kernel the simulator ran matched the reference
    conf = pd.read_csv(d / "configurations.csv")
    assert set(conf["config"]) == {"torch", "baseline", "OptMT", "OptMT+RPF", "OptMT+L2P", "OptMT+RPF+L2P"}
    assert conf["correct"].all() and not conf["timing_valid"].any()
    assert "/" not in "".join(conf["label"])  # dataset labels carry no paths
    manifest = json.loads((d / MANIFEST).read_text())
    assert set(manifest["claims"]) == set(claims_mod.CLAIMS)
    assert "report:" in capsys.readouterr().out


def test_only_selects_sections_and_later_runs_add_up(tmp_path):
    out = tmp_path / "out"
    assert run("--only", "occupancy", "--out", str(out)) == 0
    d = out / "simulator"
    first = (d / REPORT).read_text()
    assert [s for s in sections(first) if s[0].isdigit()] == ["3. PyTorch's kernel runs at low, register-limited "
                                                                "occupancy"]  # fmt: skip
    assert not (d / "configurations.csv").exists()
    # a directory holding only a previous report is written over without --force; other sections are kept
    assert run("--only", "stalls", "--out", str(out)) == 0
    both = [s for s in sections((d / REPORT).read_text()) if s[0].isdigit()]
    assert len(both) == 2 and both[0].startswith("3.") and both[1].startswith("4.")
    assert (d / "occupancy.png").is_file()


@pytest.mark.slow
def test_a_crashing_experiment_is_reported_and_the_rest_go_on(tmp_path, monkeypatch):
    def boom(ctx):
        raise RuntimeError("the experiment broke")

    monkeypatch.setitem(claims_mod.CLAIMS, "occupancy", replace(claims_mod.CLAIMS["occupancy"], run=boom))
    out = tmp_path / "out"
    assert run("--only", "occupancy,hotness", "--datasets", "random", "--out", str(out)) == 1
    report = (out / "simulator" / REPORT).read_text()
    assert "**This experiment failed**: `RuntimeError: the experiment broke (raised at test_reproduce.py:" in report
    assert "| experiment failed | no (failed) |" in report
    assert "the experiment failed (`RuntimeError: the experiment broke" in report.split("What did not reproduce")[1]
    assert (out / "simulator" / "hotness.png").is_file()  # the other experiment ran


@pytest.mark.parametrize(
    "args, message",
    [
        (["--only", "occupancy,nonsense"], "unknown claim(s) 'nonsense' in --only; valid: hotness, embedding_share"),
        (["--datasets", "nonsense"], "unknown dataset 'nonsense'"),
        (["--datasets", "random,trace:/no/such/file.txt"], "trace file not found"),
        (["--datasets", "trace:low"], "no dataset can run here (trace:low: reuse_low_500K.txt is not in"),
        (["--preset", "paper"], "--preset paper needs a CUDA GPU"),
        (["--repeats", "0"], "--repeats must be positive"),
    ],
)
def test_bad_requests_are_refused_before_anything_runs(tmp_path, capsys, args, message):
    out = tmp_path / "out"
    assert run(*args, "--out", str(out)) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_foreign_output_directory_needs_force(tmp_path, capsys):
    d = tmp_path / "out" / "simulator"
    d.mkdir(parents=True)
    (d / "fast.csv").write_text("someone else's results\n")
    assert run("--only", "occupancy", "--out", str(tmp_path / "out")) == 2
    err = capsys.readouterr().err
    assert "holds other content (fast.csv)" in err and "--force" in err
    assert not (d / REPORT).exists()
    assert run("--only", "occupancy", "--out", str(tmp_path / "out"), "--force") == 0
    assert (d / REPORT).is_file() and (d / "fast.csv").read_text() == "someone else's results\n"


@pytest.mark.slow
def test_datasets_and_repeats_are_honoured_in_the_simulator(tmp_path):
    out = tmp_path / "out"
    assert run("--only", "rpf,hotness", "--datasets", "zipf:1.1", "--repeats", "2", "--out", str(out)) == 0
    d = out / "simulator"
    assert list(pd.read_csv(d / "hotness.csv")["dataset"]) == ["zipf:1.1"]
    rows = pd.read_csv(d / "rpf.csv")
    assert set(rows["dataset"]) == {"zipf:1.1"} and (rows["n_runs"] == 2).all() and rows["correct"].all()
    assert "Zipf 1.1 (synthetic)" in (d / REPORT).read_text()


def test_a_real_trace_is_found_and_compared_with_the_paper(tmp_path, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    (data / "reuse_low_500K.txt").write_text("\n".join(str(i % 1000) for i in range(20_000)) + "\n")
    monkeypatch.setenv("DLRMLAB_DATA_DIR", str(data))
    out = tmp_path / "out"
    assert run("--only", "hotness", "--out", str(out)) == 0
    d = out / "simulator"
    hot = pd.read_csv(d / "hotness.csv").set_index("dataset")
    assert hot.loc["trace:low", "paper_top_60000"] == pytest.approx(0.487)
    assert hot.loc["trace:low", "label"] == "low-reuse trace"
    report = (d / REPORT).read_text()
    assert "medium-reuse trace: reuse_medium_500K.txt is not in" in report
    assert "| Datasets: how skewed the lookups are |" in report and "| no |" in report  # 1,000 rows take 100%


def test_cli_help_lists_the_options():
    text = cli.build_parser()._subparsers._group_actions[0].choices["reproduce"].format_help()
    for opt in ("--preset", "--out", "--only", "--datasets", "--repeats", "--force", "--quiet"):
        assert opt in text
    assert Path(claims_mod.__file__).name == "claims.py"
