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
    from dlrmlab.dlrm.compile_peer import DEFAULT_SETTING, SETTINGS, peer_setting

    assert peer_setting("no-such-family") == DEFAULT_SETTING == "default+static"
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



@pytest.mark.parametrize("compiling", [True, False])
def test_the_capture_query_is_not_asked_under_compile(monkeypatch, compiling):
    """The stream-capture query returns a bool from torch: traced by dynamo it is a graph break, which
    fullgraph=True refuses ("torch.* op returned non-Tensor" on a GPU). Under torch.compile it is not asked
    (the GPU test above compiles the DLRM forward with fullgraph=True)."""
    import torch

    from dlrmlab.dlrm.embedding import stream_capturing

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # the GPU path, without one
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: compiling)
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: True)
    assert stream_capturing() is (not compiling)


def test_the_measured_fastest_setting_is_the_peer(tmp_path, monkeypatch):
    from dlrmlab import tuned
    from dlrmlab.dlrm.compile_peer import peer_setting

    monkeypatch.setenv("DLRMLAB_CACHE_DIR", str(tmp_path))
    shipped = peer_setting("h100")
    tuned.store_compile_peer("h100", {"setting": "max-autotune-no-cudagraphs+static", "measured": "here"})
    assert peer_setting("h100") == "max-autotune-no-cudagraphs+static" and shipped != ""
    tuned.store_compile_peer("h100", {"setting": "eager+cuda_graph"})  # not a torch.compile setting
    with pytest.raises(DlrmlabError, match="not a compiled setting"):
        peer_setting("h100")


def test_runs_of_a_few_settings_each_keep_the_fastest(tmp_path, monkeypatch):
    from dlrmlab.device import family
    from dlrmlab.dlrm.compile_peer import peer_setting, record_best

    monkeypatch.setenv("DLRMLAB_CACHE_DIR", str(tmp_path))

    def rows(**ms):
        return pd.DataFrame([{"dataset": "random", "setting": k.replace("_", "-"), "latency_ms": v, "correct": True,
                              "timing_valid": True} for k, v in ms.items()])  # fmt: skip

    assert record_best(rows(eager=1.4).assign(timing_valid=False), "x") is None  # nothing timed: nothing kept
    assert record_best(rows(eager=1.4, reduce_overhead=1.5), "first")[0] == "reduce-overhead"
    assert peer_setting(family()) == "reduce-overhead"
    # a later run of slower settings keeps the faster one recorded; a faster one replaces it
    assert record_best(rows(eager=1.4, **{"max-autotune+static": 1.6}), "second")[0] == "reduce-overhead"
    assert record_best(rows(eager=1.4, **{"default+static": 1.1}), "third")[0] == "default+static"
    assert peer_setting(family()) == "default+static"
