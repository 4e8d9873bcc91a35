"""The torch.compile peer's settings: listed, chosen by measurement, skipped with a reason where they cannot run."""

from __future__ import annotations

import pandas as pd
import pytest

from dlrmlab import backend
from dlrmlab.errors import DlrmlabError

pytestmark = pytest.mark.torch


def test_settings_cover_what_users_reach_for():
    from dlrmlab.dlrm.compile_peer import SETTINGS

    modes = {(s.compile or {}).get("mode", "default") for s in SETTINGS.values() if s.compile is not None}
    assert {"reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs", "default"} <= modes
    assert any(s.graph and s.compile is None for s in SETTINGS.values())  # eager under one whole-model graph
    assert any(s.graph and s.compile for s in SETTINGS.values())
    static = [s for s in SETTINGS.values() if s.compile and s.compile.get("fullgraph")]
    assert static and all(s.compile["dynamic"] is False for s in static)


def test_peer_setting_is_data_with_a_default():
    from dlrmlab.dlrm.compile_peer import SETTINGS, peer_setting

    assert peer_setting("no-such-family") == "reduce-overhead"
    assert peer_setting() in SETTINGS


def test_best_setting_is_the_fastest_correct_compiled_one():
    from dlrmlab.dlrm.compile_peer import best_setting

    rows = []
    for ds, scale in (("random", 1.0), ("trace:low", 2.0)):
        for name, ms, ok in (("eager", 1.0, True), ("eager+cuda_graph", 0.1, True), ("reduce-overhead", 1.2, True),
                             ("default+static+cuda_graph", 0.5, True), ("max-autotune+static", 0.2, ds == "random")):
            rows.append({"dataset": ds, "setting": name, "latency_ms": ms * scale, "correct": ok, "timing_valid": True})
    df = pd.DataFrame(rows)
    assert best_setting(df) == "default+static+cuda_graph"  # eager forms and a setting wrong once are not chosen
    assert best_setting(df.assign(timing_valid=False)) is None


def test_compare_settings_checks_eager_and_says_why_gpu_settings_are_skipped():
    from dlrmlab.dlrm.compile_peer import compare_settings

    df = compare_settings(["random"], "tiny", settings=["eager", "eager+cuda_graph"], repeats=1, n_batches=1)
    eager = df.set_index("setting").loc["eager"]
    assert bool(eager["correct"]) and eager["timing_valid"] == (not backend.SIMULATOR)
    graph = df.set_index("setting").loc["eager+cuda_graph"]
    if backend.SIMULATOR:
        assert not graph["correct"] and "needs a CUDA GPU" in graph["error"]
    with pytest.raises(DlrmlabError, match="unknown setting"):
        compare_settings(["random"], "tiny", settings=["turbo"])


@pytest.mark.gpu
def test_compiled_settings_match_eager_on_a_gpu():
    from dlrmlab.dlrm.compile_peer import compare_settings

    df = compare_settings(["random"], "tiny", settings=["reduce-overhead+static", "default+static+cuda_graph"],
                          repeats=3)  # fmt: skip
    assert df["correct"].astype(bool).all() and df["latency_ms"].gt(0).all()
