"""What a newcomer sees without a GPU: the report beside the committed GPU result, figures that draw only
what they have, reproduce writing where every command writes, hotness at the paper's scale."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from dlrmlab import backend, cli
from dlrmlab.report import figures, reference

simulator_only = pytest.mark.skipif(not backend.SIMULATOR, reason="the simulator's report")


def _legend_labels(fig) -> list[str]:
    leg = fig.axes[0].get_legend()
    return [t.get_text() for t in leg.get_texts()] if leg else []


def test_the_committed_gpu_report_is_found_with_card_date_and_commit():
    ref = reference.load_reference()
    assert ref is not None and "H100" in ref.gpu and ref.date.startswith("20") and ref.commit
    assert "H100" in ref.label and ref.commit in ref.label
    assert ref.cell("hotness") != "–" and "(" in ref.cell("hotness")
    assert reference.load_reference(ref.path.parent / "nowhere") is None


@simulator_only
def test_reproduce_writes_under_the_results_dir_beside_the_gpu_result(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DLRMLAB_RESULTS_DIR", str(tmp_path / "res"))
    monkeypatch.chdir(tmp_path)
    assert cli.main(["reproduce", "--only", "occupancy", "--quiet"]) == 0
    report = (tmp_path / "res" / "simulator" / "report.md").read_text()
    assert "measured elsewhere: NVIDIA H100" in report and "(not here)" in report
    assert "**Measured elsewhere, not here (NVIDIA H100" in report and "commit " in report
    assert "this GPU's limits" not in report and "an H100's limits" in report
    assert not (tmp_path / "results").exists()
    manifest = json.loads((tmp_path / "res" / "simulator" / "reproduce.json").read_text())
    assert manifest["mode"] != "gpu"


def test_unmeasured_figures_have_no_legend_entries_for_undrawn_series():
    table = pd.DataFrame({"baseline": [np.nan], "optmt": [np.nan]}, index=["uniform random"])
    fig = figures.speedup_bars(table, {}, title="t", ylabel="y", stamp="s", measured=False, paper=1.5,
                               paper_label="paper")  # fmt: skip
    assert not {"baseline", "optmt"} & set(_legend_labels(fig))
    df = pd.DataFrame({"label": ["uniform random"], "embedding_share": [np.nan],
                       **{f"{s}_ms": [np.nan] for s in ("bottom_mlp", "embedding", "interaction", "top_mlp")}})
    fig = figures.stage_breakdown(df, title="t", stamp="s", measured=False)
    assert _legend_labels(fig) == []


def test_hotness_figure_draws_the_paper_figure_only_where_it_has_one():
    df = pd.DataFrame({"dataset": ["random", "synthetic-high"], "label": ["uniform random", "high"],
                       "top_60000": [0.2, 0.97], "paper_top_60000": [np.nan, np.nan]})
    fig = figures.coverage_bars(df, title="t", stamp="s")
    assert _legend_labels(fig) == ["measured here"]
    assert "traces could not be downloaded here" in fig.axes[0].get_xlabel()
    df["dataset"] = ["trace:low", "random"]
    df["paper_top_60000"] = [0.487, np.nan]
    fig = figures.coverage_bars(df, title="t", stamp="s")
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert "paper's figure (artifact)" in _legend_labels(fig) and any("no paper" in t for t in texts)


def test_describe_a_trace_reads_it_at_the_paper_shape(tmp_path, capsys):
    path = tmp_path / "t.txt"
    path.write_text("\n".join(str(i) for i in range(0, 600_000, 3)) + "\n")
    assert cli.main(["workload", "describe", "--dataset", f"trace:{path}", "--ids", "1000", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["preset"] == "paper" and d["ids"] == 1000 and d["distinct"] == 1000
    assert d["describes"].startswith("the first 1,000 ids of trace:")
    assert "tables of 500,000 rows" in d["describes"]
