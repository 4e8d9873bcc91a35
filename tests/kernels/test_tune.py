"""Tuned configurations as data (shipped table, user cache), the fast kernel's pure configuration, and the
searches in simulator mode."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from helpers import simulator_only

from dlrmlab import cli, device, fused, rules, tune, tuned
from dlrmlab.config import Combine
from dlrmlab.errors import DlrmlabError
from dlrmlab.fused import configure, configure_here
from dlrmlab.kernels.fused import FastConfig
from dlrmlab.workload import preset


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("DLRMLAB_CACHE_DIR", str(tmp_path))
    return tmp_path


def test_cache_path_follows_env(cache_dir):
    assert tuned.cache_path() == cache_dir / "tune.json"


@pytest.mark.parametrize("pooling,bucket", [(150, 128), (100, 128), (40, 32), (5, 4), (1, 1), (0.2, 1), (64, 64)])
def test_pooling_buckets_to_power_of_two(pooling, bucket):
    assert tuned.pooling_bucket(pooling) == bucket


def test_entries_are_separated_by_shape_and_family():
    cache = {}
    entry = {"params": {"unroll": 3}}

    def put(family, dim, dtype, pooling):
        cache.clear()
        tuned.store_fast(family, dim, dtype, pooling, entry)
        cache.update(tuned.load_user_cache())

    put("g", 128, "float32", 150)
    assert tuned.fast_entry("g", 128, "float32", 150, cache) == tuned.Tuned({"unroll": 3}, "user-cache")
    assert tuned.fast_entry("g", 128, "float32", 140, cache).source == "user-cache"  # same pooling bucket
    assert tuned.fast_entry("g", 64, "float32", 150, cache).source == "default"
    assert tuned.fast_entry("g", 128, "float16", 150, cache).source == "default"
    assert tuned.fast_entry("g", 128, "float32", 40, cache).source == "default"
    assert tuned.fast_entry("other", 128, "float32", 150, cache) == tuned.Tuned({}, "default")


def test_store_load_round_trip(cache_dir):
    assert tuned.load_user_cache() == {}
    a = {"params": {"unroll": 4, "bags_per_block": 8, "max_registers": None}, "median_ms": 1.5}
    b = {"params": {"unroll": 8}, "median_ms": 2.0}
    tuned.store_fast("g", 32, "float32", 5, a)
    tuned.store_fast("g", 64, "float32", 5, b)
    assert len(tuned.load_user_cache()) == 2
    assert tuned.fast_entry("g", 32, "float32", 5).params == a["params"]
    assert tuned.fast_entry("g", 64, "float32", 5).params == b["params"]
    tuned.store_fast("g", 32, "float32", 5, b)  # replaces, keeps the other key
    assert len(tuned.load_user_cache()) == 2
    assert tuned.fast_entry("g", 32, "float32", 5).params == b["params"]
    assert json.loads((cache_dir / "tune.json").read_text()) == tuned.load_user_cache()
    assert [p.name for p in cache_dir.iterdir()] == ["tune.json"]  # written atomically: no temp file left


def test_store_creates_missing_directories(tmp_path, monkeypatch):
    monkeypatch.setenv("DLRMLAB_CACHE_DIR", str(tmp_path / "a" / "b"))
    tuned.store_fast("g", 8, "float32", 1, {"params": {"chunk": 4}})
    assert tuned.fast_entry("g", 8, "float32", 1).params == {"chunk": 4}


@pytest.mark.parametrize("text", ["{not json", "", '{"k": '])
def test_corrupt_cache_reads_as_empty(cache_dir, text):
    (cache_dir / "tune.json").write_text(text)
    assert tuned.load_user_cache() == {}
    tuned.store_fast("g", 8, "float32", 1, {"params": {"chunk": 4}})  # overwritten, not a crash
    assert tuned.fast_entry("g", 8, "float32", 1).params == {"chunk": 4}


def test_binary_garbage_cache_reads_as_empty(cache_dir):
    (cache_dir / "tune.json").write_bytes(b"\xff\xfe\x00garbage")
    assert tuned.load_user_cache() == {}


def test_non_object_cache_is_replaced(cache_dir):
    (cache_dir / "tune.json").write_text("[1, 2]")
    assert tuned.load_user_cache() == {}
    tuned.store_fast("g", 8, "float32", 1, {"params": {"chunk": 4}})
    assert len(tuned.load_user_cache()) == 1


# --- the shipped table ----------------------------------------------------------------------------------


def test_shipped_table_is_well_formed():
    raw = json.loads(tuned.SHIPPED.read_text())
    assert raw["fast"], "no shipped entries"
    for e in raw["fast"]:
        assert {"family", "dim", "dtype", "pooling", "params", "measured"} <= set(e)
        assert e["family"] == device.family(e["family"])  # keyed by the family device.family() reports
        # every shipped entry is a valid configuration of its shape
        cfg = configure(e["dim"], e["dtype"], tuned_params=e["params"])
        assert {k: getattr(cfg, k) for k in e["params"]} == e["params"]


def test_fresh_install_on_h100_gets_the_shipped_tuning():
    """No user cache: an H100 at the paper's shape (dim 128, fp32, pooling 150) gets the shipped knobs."""
    entry = next(e for e in json.loads(tuned.SHIPPED.read_text())["fast"]
                 if (e["family"], e["dim"], e["dtype"]) == ("h100", 128, "float32"))  # fmt: skip
    t = tuned.fast_entry("h100", 128, "float32", 150, user_cache={})
    assert t == tuned.Tuned(entry["params"], "shipped")
    cfg = configure(128, "float32", tuned_params=t.params)
    assert {k: getattr(cfg, k) for k in entry["params"]} == entry["params"]


def test_layouts_have_their_own_entries(cache_dir):
    """The split-hot layout (behind an L2 window) is tuned apart from plain tables; neither falls back to the
    other's entry."""
    tuned.store_fast("g", 128, "float32", 150, {"params": {"unroll": 12}})
    assert tuned.fast_entry("g", 128, "float32", 150, split_hot=True).source == "default"
    tuned.store_fast("g", 128, "float32", 150, {"params": {"unroll": 8}}, split_hot=True)
    assert tuned.fast_entry("g", 128, "float32", 150).params == {"unroll": 12}
    assert tuned.fast_entry("g", 128, "float32", 150, split_hot=True).params == {"unroll": 8}


def test_shipped_split_hot_entry_is_found():
    raw = [e for e in json.loads(tuned.SHIPPED.read_text())["fast"] if e.get("split_hot")]
    for e in raw:
        t = tuned.fast_entry(e["family"], e["dim"], e["dtype"], e["pooling"], user_cache={}, split_hot=True)
        assert t == tuned.Tuned(e["params"], "shipped")


def test_user_cache_overrides_shipped():
    t = tuned.fast_entry("h100", 128, "float32", 150, user_cache={})
    tuned.store_fast("h100", 128, "float32", 150, {"params": {"unroll": 4}})
    assert tuned.fast_entry("h100", 128, "float32", 150) == tuned.Tuned({"unroll": 4}, "user-cache")
    assert t.params != {"unroll": 4}


@simulator_only
def test_other_families_tuning_does_not_apply_in_simulator():
    """Tuned knobs are per GPU family: an H100's never configure the simulator's kernel."""
    tuned.store_fast("h100", 32, "float32", 5, {"params": {"unroll": 3}})
    cfg, source = configure_here(32, "float32", 5)
    assert source == "rule" and cfg == configure(32, "float32", tuned_params=rules.derive_knobs(
        32, "float32", 5, False, device.limits()))


# --- fused.configure: pure; tuned knobs only when none is given; explicit knobs win ---------------------------

TUNED = {"unroll": 3, "bags_per_block": 2}


def test_configure_is_pure(monkeypatch, cache_dir):
    """Same inputs, same configuration; nothing outside the arguments is read (no cache, no GPU)."""
    tuned.store_fast(device.family(), 32, "float32", 5, {"params": {"unroll": 5}})

    def boom(*a, **k):
        raise AssertionError("configure must not read the cache or the device")

    monkeypatch.setattr(tuned, "fast_entry", boom)
    monkeypatch.setattr(tuned, "load_user_cache", boom)
    monkeypatch.setattr(device, "limits", boom)
    monkeypatch.setattr(device, "family", boom)
    args = (32, "float16", Combine("mean", padded=True), True, TUNED)
    a, b = configure(*args), configure(*args, **{})
    assert a == b and hash(a) == hash(b)
    assert configure(32, "float16", Combine("mean", padded=True), split_hot=True, tuned_params=dict(TUNED)) == a
    assert (a.unroll, a.bags_per_block, a.combine, a.split_hot) == (3, 2, Combine("mean", padded=True), True)
    assert configure(64, unroll=4) == configure(64, unroll=4) == FastConfig(64, unroll=4, bags_per_block=8)


def test_configure_defaults_without_tuning():
    cfg = configure(32)
    assert (cfg.unroll, cfg.bags_per_block, cfg.vector, cfg.lanes) == (8, 16, True, 8)  # 128 threads / 8 lanes
    assert cfg.combine == Combine() and not cfg.split_hot
    assert configure(32, tuned_params={}) == cfg == configure(32, tuned_params=None)


def test_configure_applies_tuned_params_when_no_knob_is_given():
    cfg = configure(32, "float32", Combine("mean"), tuned_params=TUNED)
    assert (cfg.unroll, cfg.bags_per_block) == (3, 2)
    assert cfg.combine.mean and cfg.vector and cfg.lanes == 8
    # the combine and the layout are not knobs: they keep the tuning
    cfg = configure(32, "float32", Combine("sum", weighted=True), split_hot=True, tuned_params=TUNED)
    assert (cfg.unroll, cfg.bags_per_block, cfg.combine.weighted, cfg.split_hot) == (3, 2, True, True)


@pytest.mark.parametrize(
    "knob", [{"unroll": 4}, {"bags_per_block": 8}, {"chunk": 32}, {"max_registers": 64}, {"vector": False}]
)
def test_configure_explicit_knobs_win_and_drop_the_tuning(knob):
    cfg = configure(32, tuned_params=TUNED, **knob)
    default = configure(32, **knob)
    assert cfg == default  # any explicit knob: the tuned entry does not apply at all
    for k, v in knob.items():
        assert getattr(cfg, k) == v
    assert cfg.unroll == knob.get("unroll", configure(32).unroll)


def test_configure_refuses_unknown_knobs():
    with pytest.raises(DlrmlabError, match="unknown fast-kernel knobs: prefetch"):
        configure(32, prefetch="register")


# --- configure_here: this GPU's tuning, and where it came from -----------------------------------------------


@pytest.fixture
def lookups(monkeypatch):
    calls = []

    def fake(family, dim, dtype, pooling_mean, user_cache=None, split_hot=False):
        calls.append((family, dim, dtype, pooling_mean) + (("split-hot",) if split_hot else ()))
        return tuned.Tuned(dict(TUNED), "user-cache")

    monkeypatch.setattr(tuned, "fast_entry", fake)
    return calls


def test_configure_here_uses_this_gpus_tuning(lookups):
    cfg, source = configure_here(32, "float32", 5.0, combine=Combine("mean"))
    assert source == "user-cache"
    assert (cfg.unroll, cfg.bags_per_block) == (3, 2)
    assert cfg.combine.mean and cfg.vector and cfg.lanes == 8
    assert lookups == [(device.family(), 32, "float32", 5.0)]
    assert cfg == configure(32, "float32", Combine("mean"), tuned_params=TUNED)
    cfg, _ = configure_here(32, "float32", 5.0, split_hot=True)  # the split-hot layout's own entry
    assert lookups[-1] == (device.family(), 32, "float32", 5.0, "split-hot") and cfg.split_hot


@pytest.mark.parametrize("knob", [{"unroll": 4}, {"bags_per_block": 8}, {"chunk": 32}, {"max_registers": 64}])
def test_configure_here_explicit_knob_wins(lookups, knob):
    cfg, source = configure_here(32, "float32", 5.0, **knob)
    assert source == "explicit"
    assert cfg == configure(32, "float32", **knob)


def test_configure_here_from_a_real_user_cache(cache_dir):
    tuned.store_fast(device.family(), 32, "float32", 5.0, {"params": dict(TUNED)})
    cfg, source = configure_here(32, "float32", 5.5)  # same pooling bucket (4)
    assert source == "user-cache" and (cfg.unroll, cfg.bags_per_block) == (3, 2)
    cfg, source = configure_here(32, "float32", 40.0)  # another bucket: untuned
    assert source == "rule" and cfg == configure(32, tuned_params=rules.derive_knobs(
        32, "float32", 40.0, False, device.limits()))


def test_fast_forward_uses_configure_here(monkeypatch):
    """Without an explicit config, fused_forward asks configure_here (this GPU's tuning) for one."""
    seen = {}
    real = fused.configure_here

    def spy(dim, dtype, pooling_mean, **kw):
        seen.update(dim=dim, dtype=dtype, pooling=pooling_mean, **kw)
        return real(dim, dtype, pooling_mean, **kw)

    monkeypatch.setattr(fused, "configure_here", spy)
    import numpy as np

    from dlrmlab.backend import cuda

    tables = fused.PackedTables.from_arrays([np.ones((5, 8), np.float32)])
    ids, off = cuda.to_device(np.array([1, 2, 3])), cuda.to_device(np.array([0, 1, 3]))
    out = fused.fused_forward(tables, (ids, off, cuda.to_device(np.array([0, 2])), None), "mean", unroll=2)
    np.testing.assert_allclose(out.copy_to_host(), np.ones((2, 8)))
    assert seen["dim"] == 8 and seen["pooling"] == 1.5 and seen["unroll"] == 2 and seen["combine"].mean


# --- searches ------------------------------------------------------------------------------------------


@pytest.mark.slow
@simulator_only
def test_tune_fast_quick_in_simulator(cache_dir):
    result = tune.tune_fast("tiny", "medium", quick=True)
    rows = result.ranking
    want = _candidates(tune.FAST_SPACE_QUICK)
    assert len(rows) == len(want)
    assert rows["correct"].astype(bool).all()
    assert rows["median_ms"].is_monotonic_increasing
    assert list(rows.index) == list(range(len(want)))
    assert {c for c in rows["candidate"]} == want
    assert not rows["timing_valid"].astype(bool).any()
    # simulator timings are not timings: nothing cached
    assert not tuned.cache_path().exists()
    assert tuned.load_user_cache() == {}


@simulator_only
def test_tune_fast_ranks_by_geometric_mean_over_datasets(cache_dir):
    space = {"unroll": [2, 4], "chunk": [8]}
    result = tune.tune_fast("tiny", "medium,random", space=space)
    rows = result.ranking
    n = len(_candidates(space))
    assert len(rows) == n and rows["correct"].astype(bool).all()
    # the harness rows, for the CSV: one per candidate and dataset, the usual columns (no per-dataset ones)
    assert len(result.rows) == 2 * n and sorted(set(result.rows["dataset"])) == ["random", "synthetic-medium"]
    assert not any(c.startswith("ms[") or c == "candidate" for c in result.rows.columns)
    a, b = rows["ms[medium]"], rows["ms[random]"]
    assert rows["median_ms"].to_numpy() == pytest.approx((a * b).pow(0.5).to_numpy())
    assert rows["median_ms"].is_monotonic_increasing
    assert set(rows["dataset"]) == {"medium,random"}


def _candidates(space: dict, split_hot: bool = False) -> set[str]:
    """What a search over ``space`` on ``tiny`` times: the served knobs, and each point with the rest kept."""
    base = tune.served_knobs(preset("tiny"), split_hot)
    return {json.dumps(p, sort_keys=True) for p in [base, *({**base, **q} for q in tune._grid(space))]}


def test_a_search_varies_the_named_knobs_around_what_is_served():
    """Knobs the space leaves out keep the served configuration's values (not the kernel's bare defaults,
    which on int8 rows were up to 1.6x slower than the rule's on an H100), and that configuration is a
    candidate, so a stored winner is never one measured slower than what it replaces."""
    stage = preset("tiny", dtype="int8")
    base = tune.served_knobs(stage, False)
    cfg, source = fused.configure_here(stage.sparse_feature_size, "int8", stage.pooling.mean)
    assert source == "rule" and base == {k: cfg.params()[k] for k in tune.ENTRY_KNOBS}
    assert base == rules.derive_knobs(stage.sparse_feature_size, "int8", stage.pooling.mean, False, device.limits())


@pytest.fixture
def timed(monkeypatch) -> list[dict]:
    """The knobs of every candidate ``tune_fast`` times, in order (the harness replaced: later ones slower)."""
    seen: list[dict] = []

    def fake_compare(case, variants, **kw):
        seen.extend(k for _, k in variants)
        return SimpleNamespace(rows=pd.DataFrame({"median_ms": np.arange(1.0, len(variants) + 1), "correct": True,
                                                  "timing_valid": False, "dataset": case.dataset}))

    monkeypatch.setattr(tune, "compare", fake_compare)
    return seen


@simulator_only
def test_the_served_configuration_is_always_timed(cache_dir, timed):
    base = tune.served_knobs(preset("tiny"), False)
    tune.tune_fast("tiny", "medium", space={"unroll": [2, 3]})
    assert timed[0] == {**base, "layout": "plain"}
    assert [k["unroll"] for k in timed[1:]] == [u for u in (2, 3) if u != base["unroll"]]
    assert all({**k, "unroll": base["unroll"]} == {**base, "layout": "plain"} for k in timed)


@simulator_only
def test_candidates_are_checked_at_the_stages_width_and_format(cache_dir, timed):
    """64 bags of int8 rows 32 wide are 128 threads (2 lanes a row); at fp32 width 128 they would be 2,048."""
    tune.tune_fast(preset("tiny", dtype="int8"), "medium", space={"bags_per_block": [64], "split": [1]})
    assert any(k["bags_per_block"] == 64 for k in timed)


def test_rank_keeps_only_candidates_correct_everywhere():
    a = pd.DataFrame({"candidate": ["x", "y"], "median_ms": [1.0, 4.0], "correct": [True, True], "dataset": "d1"})
    b = pd.DataFrame({"candidate": ["x", "y"], "median_ms": [9.0, 1.0], "correct": [False, True], "dataset": "d2"})
    rows = tune._rank([a, b], ["d1", "d2"])
    assert list(rows["candidate"]) == ["y"] and rows["median_ms"].iloc[0] == pytest.approx(2.0)


@pytest.mark.gpu
def test_tune_fast_window_variant_tunes_split_hot_layout(cache_dir):
    rows = tune.tune_fast("tiny", "zipf:1.15", space={"unroll": [2, 4], "chunk": [8]}, variant="fast_graph+window",
                          repeats=3).ranking
    assert rows["correct"].astype(bool).all()
    stored = tuned.fast_entry(device.family(), 32, "float32", 4, split_hot=True)  # tiny: width 32, pooling ~4
    assert stored.source == "user-cache" and stored.params == json.loads(rows["candidate"].iloc[0])
    assert tuned.fast_entry(device.family(), 32, "float32", 4).source != "user-cache"  # plain layout untouched


@simulator_only
def test_tune_fast_window_variant_runs_the_split_hot_layout_in_the_simulator(cache_dir):
    """No window or graph in the simulator: the same kernel on the same ranked layout, checked, not ranked."""
    space = {"unroll": [2], "chunk": [8]}
    rows = tune.tune_fast("tiny", "zipf:1.15", space=space, variant="fast_graph+window").rows
    assert rows["correct"].astype(bool).all() and len(rows) == len(_candidates(space, split_hot=True))
    assert json.loads(rows["params"].iloc[0])["layout"] == "split-hot"
    assert tuned.load_user_cache() == {}  # simulated times store nothing


@pytest.mark.parametrize("text,match", [
    ("{not json", "not JSON"), ("[1]", "JSON object"), ('{"unroll": []}', "non-empty"),
    ('{"unroll": 8}', "non-empty"), ('{"turbo": [1]}', "unknown fast-kernel knobs: turbo"),
])  # fmt: skip
def test_parse_space_refuses_bad_input(text, match):
    with pytest.raises(DlrmlabError, match=match):
        tune.parse_space(text)


def test_parse_space_round_trip():
    assert tune.parse_space('{"unroll": [8, 12], "split": [1]}') == {"unroll": [8, 12], "split": [1]}
    assert tune.parse_space(None) is None


def test_tune_fast_refuses_a_non_fast_variant():
    with pytest.raises(DlrmlabError, match="fast-path variant"):
        tune.tune_fast("tiny", "medium", variant="rpf")


def test_tune_fast_rejects_empty_space():
    # every candidate invalid (unroll out of range): error before anything is timed
    with pytest.raises(DlrmlabError, match="no valid configuration"):
        tune.tune_fast("tiny", "medium", space={"unroll": [0, 17]})


@simulator_only
def test_tune_register_cap_two_caps(cache_dir):
    rows = tune.tune_register_cap("tiny", "medium", caps=[None, 32], repeats=1)
    assert len(rows) == 2
    assert "max_registers" in rows
    caps = {None if c is None or c != c else int(c) for c in rows["max_registers"]}  # None, not NaN
    assert caps == {None, 32}
    assert rows["correct"].astype(bool).all()
    assert rows["median_ms"].is_monotonic_increasing
    assert {"registers", "theoretical_occupancy", "occupancy_limiter"} <= set(rows.columns)
    assert rows["registers"].isna().all()  # the simulator has no registers
    assert not tuned.cache_path().exists()  # the OptMT sweep caches nothing


@pytest.mark.parametrize("caps", [[None, 8], [32, 300], [40.5]])
def test_tune_register_cap_invalid_cap_before_any_run(monkeypatch, caps):
    from dlrmlab.bench import case

    def boom(*a, **k):
        raise AssertionError("nothing may run before the caps are validated")

    monkeypatch.setattr(tune, "compare", boom)
    monkeypatch.setattr(case.BenchCase, "create", boom)
    with pytest.raises(DlrmlabError, match="register cap"):
        tune.tune_register_cap("tiny", "medium", caps=caps)


# --- CLI -----------------------------------------------------------------------------------------------


@pytest.mark.slow
@simulator_only
def test_cli_tune_optmt(capsys, cache_dir, tmp_path):
    res = tmp_path / "res"
    assert cli.main(["tune", "optmt", "--preset", "tiny", "--caps", "none,32", "--quiet", "--out", str(res)]) == 0
    out = capsys.readouterr().out
    assert "max_registers" in out and "median_ms" not in out and "no times shown" in out
    assert "stored" not in out  # simulator: nothing cached
    assert not tuned.cache_path().exists()
    # results go under <out>/<gpu family>/, as for every command
    assert f"to {res / device.family() / 'tune_optmt.csv'}" in out
    assert sorted(p.name for p in res.iterdir()) == [device.family()]
    assert (res / device.family() / "tune_optmt.csv").exists()


def test_cli_tune_bad_cap_exit_2(capsys):
    assert cli.main(["tune", "optmt", "--preset", "tiny", "--caps", "8"]) == 2
    assert "register cap" in capsys.readouterr().err


def test_cli_tune_non_integer_cap_exit_2(capsys):
    assert cli.main(["tune", "optmt", "--preset", "tiny", "--caps", "abc"]) == 2
