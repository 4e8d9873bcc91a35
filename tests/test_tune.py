"""Autotuning: cache keys and file, the fused kernel's use of the cache, and the searches in simulator mode."""

from __future__ import annotations

import json

import pytest

from dlrmlab import backend, cli, tune
from dlrmlab.errors import DlrmlabError
from dlrmlab.kernels import fused

simulator_only = pytest.mark.skipif(not backend.SIMULATOR, reason="a CUDA GPU is present")


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("DLRMLAB_CACHE_DIR", str(tmp_path))
    return tmp_path


def test_cache_path_follows_env(cache_dir):
    assert tune.cache_path() == cache_dir / "tune.json"


@pytest.mark.parametrize("pooling,bucket", [(150, 128), (100, 128), (40, 32), (5, 4), (1, 1), (0.2, 1), (64, 64)])
def test_fast_key_buckets_pooling_to_power_of_two(pooling, bucket):
    assert tune.fast_key(128, "float32", pooling, "sum", gpu="H100") == f"fast|H100|dim=128|float32|pool~{bucket}|sum"


def test_fast_key_separates_shapes():
    k = tune.fast_key(128, "float32", 150, "sum", gpu="g")
    assert k != tune.fast_key(64, "float32", 150, "sum", gpu="g")
    assert k != tune.fast_key(128, "float16", 150, "sum", gpu="g")
    assert k != tune.fast_key(128, "float32", 150, "mean", gpu="g")
    assert k != tune.fast_key(128, "float32", 150, "sum", gpu="other")
    assert k == tune.fast_key(128, "float32", 140, "sum", gpu="g")


@simulator_only
def test_fast_key_names_simulator():
    assert tune.fast_key(32, "float32", 5, "sum").startswith("fast|simulator|")


def test_store_load_round_trip(cache_dir):
    assert tune.load_cache() == {}
    a = {"params": {"unroll": 4, "bags_per_block": 8, "max_registers": None}, "median_ms": 1.5}
    b = {"max_registers": 40, "median_ms": 2.0}
    tune._store("k1", a)
    tune._store("k2", b)
    assert tune.load_cache() == {"k1": a, "k2": b}
    tune._store("k1", b)  # replaces, keeps the other key
    assert tune.load_cache() == {"k1": b, "k2": b}
    assert json.loads((cache_dir / "tune.json").read_text()) == {"k1": b, "k2": b}
    assert not (cache_dir / "tune.tmp").exists()


def test_store_creates_missing_directories(tmp_path, monkeypatch):
    monkeypatch.setenv("DLRMLAB_CACHE_DIR", str(tmp_path / "a" / "b"))
    tune._store("k", {"x": 1})
    assert tune.load_cache() == {"k": {"x": 1}}


@pytest.mark.parametrize("text", ["{not json", "", '{"k": '])
def test_corrupt_cache_reads_as_empty(cache_dir, text):
    (cache_dir / "tune.json").write_text(text)
    assert tune.load_cache() == {}
    tune._store("k", {"x": 1})  # a broken cache is overwritten, not a crash
    assert tune.load_cache() == {"k": {"x": 1}}


def test_binary_garbage_cache_reads_as_empty(cache_dir):
    (cache_dir / "tune.json").write_bytes(b"\xff\xfe\x00garbage")
    assert tune.load_cache() == {}


def test_non_object_cache_is_replaced(cache_dir):
    (cache_dir / "tune.json").write_text("[1, 2]")
    assert tune.load_cache() == {}
    tune._store("k", {"x": 1})
    assert tune.load_cache() == {"k": {"x": 1}}


@simulator_only
def test_cached_fast_params_empty_in_simulator(cache_dir):
    # even with a matching entry on disk: simulator timings are never used
    tune._store(tune.fast_key(32, "float32", 5, "sum"), {"params": {"unroll": 3}})
    assert tune.cached_fast_params(32, "float32", 5, "sum") == {}


# --- fused.choose and the cache ------------------------------------------------------------------------


@pytest.fixture
def cached(monkeypatch):
    calls = []

    def fake(dim, dtype, pooling_mean, mode):
        calls.append((dim, dtype, pooling_mean, mode))
        return {"unroll": 3, "bags_per_block": 2}

    monkeypatch.setattr(tune, "cached_fast_params", fake)
    return calls


def test_choose_merges_cached_params(cached):
    cfg = fused.choose(32, "float32", pooling_mean=5.0, mode="mean")
    assert (cfg.unroll, cfg.bags_per_block) == (3, 2)
    assert cfg.mode == "mean" and cfg.vector and cfg.lanes == 8
    assert cached == [(32, "float32", 5.0, "mean")]


def test_choose_defaults_mode_sum_for_cache_lookup(cached):
    fused.choose(32, "float16", pooling_mean=150)
    assert cached == [(32, "float16", 150, "sum")]


@pytest.mark.parametrize("knob", [{"unroll": 4}, {"bags_per_block": 8}, {"chunk": 32}, {"max_registers": 64}])
def test_choose_ignores_cache_when_a_tunable_knob_is_set(cached, knob):
    cfg = fused.choose(32, pooling_mean=5.0, **knob)
    assert cached == []
    for k, v in knob.items():
        assert getattr(cfg, k) == v
    default = fused.choose(32)
    assert cfg.unroll == knob.get("unroll", default.unroll)
    assert cfg.bags_per_block == knob.get("bags_per_block", default.bags_per_block)


def test_choose_without_pooling_skips_cache(cached):
    cfg = fused.choose(32)
    assert cached == []
    assert (cfg.unroll, cfg.bags_per_block) == (8, 16)  # 128 threads / 8 lanes


def test_non_tunable_overrides_keep_cache(cached):
    cfg = fused.choose(32, pooling_mean=5.0, weighted=True, vector=False)
    assert (cfg.unroll, cfg.bags_per_block, cfg.vector, cfg.weighted) == (3, 2, False, True)


# --- searches ------------------------------------------------------------------------------------------


@simulator_only
def test_tune_fast_quick_in_simulator(cache_dir):
    rows = tune.tune_fast("tiny", "medium", quick=True)
    n = len(tune._grid(tune.FAST_SPACE_QUICK))
    assert len(rows) == n
    assert rows["correct"].astype(bool).all()
    assert rows["median_ms"].is_monotonic_increasing
    assert list(rows.index) == list(range(n))
    cands = [json.loads(c) for c in rows["candidate"]]
    assert {json.dumps(c, sort_keys=True) for c in cands} == {
        json.dumps(p, sort_keys=True) for p in tune._grid(tune.FAST_SPACE_QUICK)
    }
    assert not rows["timing_valid"].astype(bool).any()
    # simulator timings are not timings: nothing cached
    assert not tune.cache_path().exists()
    assert tune.load_cache() == {}


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
    assert not tune.cache_path().exists()


@pytest.mark.parametrize("caps", [[None, 8], [32, 300], [40.5]])
def test_tune_register_cap_invalid_cap_before_any_run(monkeypatch, caps):
    from dlrmlab.bench import case, harness

    def boom(*a, **k):
        raise AssertionError("nothing may run before the caps are validated")

    monkeypatch.setattr(harness, "compare", boom)
    monkeypatch.setattr(case.BenchCase, "create", boom)
    with pytest.raises(DlrmlabError, match="register cap"):
        tune.tune_register_cap("tiny", "medium", caps=caps)


# --- CLI -----------------------------------------------------------------------------------------------


@simulator_only
def test_cli_tune_optmt(capsys, cache_dir):
    assert cli.main(["tune", "optmt", "--preset", "tiny", "--caps", "none,32", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "max_registers" in out and "median_ms" in out
    assert "cached" not in out  # simulator: nothing cached
    assert not tune.cache_path().exists()


def test_cli_tune_bad_cap_exit_2(capsys):
    assert cli.main(["tune", "optmt", "--preset", "tiny", "--caps", "8"]) == 2
    assert "register cap" in capsys.readouterr().err


def test_cli_tune_non_integer_cap_exit_2(capsys):
    assert cli.main(["tune", "optmt", "--preset", "tiny", "--caps", "abc"]) == 2
