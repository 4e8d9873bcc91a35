"""A tuning cache measured on a new GPU becomes shipped entries (``python -m dlrmlab.tuned``) that the fused
path then reads as ``shipped``."""

from __future__ import annotations

import json

import pytest

from dlrmlab import tuned
from dlrmlab.tuned.__main__ import main

CACHE = {
    "fast|h200|dim=128|float32|pool~128": {"params": {"unroll": 15, "split": 4, "bags_per_block": 1},
                                           "median_ms": 0.31, "dataset": "random,trace:low", "variant": "fast_graph",
                                           "measured": "2026-12-06T12:00:00+00:00", "candidates": 12},
    "fast|h200|dim=128|float32|pool~128|split-hot": {"params": {"unroll": 8, "split": 1, "bags_per_block": 4},
                                                     "median_ms": 0.1, "dataset": "zipf:1.15",
                                                     "variant": "fast_graph+window", "candidates": 8},
    "fast|h100|dim=64|float32|pool~16": {"params": {"unroll": 5}},
}


def test_a_cache_becomes_entries_of_one_family_naming_the_card():
    e = tuned.shipped_entries(CACHE, "h200", "NVIDIA H200")
    assert [(x["dim"], x["pooling"], x["split_hot"]) for x in e] == [(128, 128, False), (128, 128, True)]
    assert e[0]["params"] == {"bags_per_block": 1, "split": 4, "unroll": 15} and e[0]["family"] == "h200"
    assert e[0]["measured"].startswith("NVIDIA H200, 2026-12-06: dlrmlab tune fast --variant fast_graph")
    assert "0.310 ms" in e[0]["measured"] and "best of 12" in e[0]["measured"]


def test_added_entries_are_read_as_shipped_and_replace_their_own_key(tmp_path, monkeypatch):
    path = tmp_path / "defaults.json"
    path.write_text(tuned.SHIPPED.read_text())
    monkeypatch.setattr(tuned, "SHIPPED", path)
    tuned.shipped.cache_clear()
    try:
        entries = tuned.shipped_entries(CACHE, "h200", "NVIDIA H200")
        tuned.add_shipped(entries, path)
        tuned.add_shipped(entries, path)  # again: replaced, not doubled
        data = json.loads(path.read_text())
        assert sum(e["family"] == "h200" for e in data["fast"]) == 2 and "compile_peer" in data
        t = tuned.fast_entry("h200", 128, "float32", 150, user_cache={}, split_hot=True)
        assert t.source == "shipped" and t.params["bags_per_block"] == 4
    finally:
        tuned.shipped.cache_clear()


def test_the_command_prints_entries_and_refuses_an_empty_family(tmp_path, capsys):
    cache = tmp_path / "tune.json"
    cache.write_text(json.dumps(CACHE))
    assert main(["entries", str(cache), "--family", "h200", "--gpu", "NVIDIA H200"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 2
    assert main(["entries", str(cache), "--family", "a100", "--gpu", "x"]) == 2
    assert capsys.readouterr().err.startswith("dlrmlab: error: no a100 fast-kernel entries")
    assert main(["entries", str(tmp_path / "none.json"), "--family", "h200", "--gpu", "x"]) == 2


@pytest.mark.parametrize("key", ["compile_peer|h100", "fast|h200|dim=x|float32|pool~1", "fast|h200"])
def test_other_keys_are_not_entries(key):
    assert tuned.shipped_entries({key: {"params": {}}}, "h200", "x") == []
