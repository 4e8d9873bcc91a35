"""Index streams: determinism, range, reuse calibration, and trace files."""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path

import numpy as np
import pytest

from dlrmlab import cli, datasets, hotness
from dlrmlab.datasets import (
    REUSE_ALPHA,
    REUSE_TARGET_TOP60K,
    TraceStream,
    dataset_names,
    make_stream,
    read_trace,
)
from dlrmlab.errors import DlrmlabError
from dlrmlab.workload import EmbeddingStage, Pooling, Workload

SYNTHETIC = ["random", "uniform", "zipf:1.05", "zipf:0", "low", "medium", "high"]
PAPER_TRACES = Path("/work/shared/data/paper_traces")
REUSE_LOW_TRACE = PAPER_TRACES / "reuse_low_500K.txt"
HOT60K_LOW = PAPER_TRACES / "hot60K_low.txt"


def write_trace(path: Path, text: str) -> Path:
    path.write_bytes(text.encode())
    return path


# --- synthetic streams -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SYNTHETIC)
def test_stream_is_deterministic_per_seed(name):
    a = make_stream(name, seed=3).take(5000, 20_000)
    b = make_stream(name, seed=3).take(5000, 20_000)
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.int64


@pytest.mark.parametrize("name", SYNTHETIC)
def test_stream_differs_across_seeds(name):
    a = make_stream(name, seed=3).take(5000, 20_000)
    b = make_stream(name, seed=4).take(5000, 20_000)
    assert not np.array_equal(a, b)


@pytest.mark.parametrize("name", SYNTHETIC)
@pytest.mark.parametrize("rows", [1, 7, 1000, 500_000])
def test_stream_ids_in_range(name, rows):
    ids = make_stream(name, seed=5).take(20_000, rows)
    assert ids.size == 20_000
    assert ids.min() >= 0 and ids.max() < rows


@pytest.mark.parametrize("name", SYNTHETIC)
def test_reset_replays_the_stream(name):
    s = make_stream(name, seed=9)
    first = s.take(1000, 5000)
    s.take(123, 5000)
    s.reset()
    np.testing.assert_array_equal(s.take(1000, 5000), first)


def test_zipf_stream_is_sequential():
    # Drawing in pieces gives the same ids as drawing at once.
    whole = make_stream("zipf:1.1", seed=2).take(1000, 3000)
    s = make_stream("zipf:1.1", seed=2)
    parts = np.concatenate([s.take(n, 3000) for n in (1, 299, 0, 700)])
    np.testing.assert_array_equal(parts, whole)


def test_more_skew_means_more_reuse():
    cov = [
        hotness.top_coverage(make_stream(n, seed=1).take(50_000, 100_000), [1000])[1000]
        for n in ("random", "low", "medium", "high")
    ]
    assert cov == sorted(cov)
    assert cov[0] < 0.1 and cov[-1] > 0.5


def test_alias_uniform_is_random():
    a = make_stream("uniform", seed=4).take(100, 1000)
    np.testing.assert_array_equal(a, make_stream("random", seed=4).take(100, 1000))


@pytest.mark.parametrize("name", ["zipf:abc", "zipf:", "zipf:-1", "zipf:nan", "zipf:inf"])
def test_bad_zipf_alpha(name):
    with pytest.raises(DlrmlabError, match="zipf"):
        make_stream(name)


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(DlrmlabError, match="unknown dataset 'nope'") as e:
        make_stream("nope")
    for valid in dataset_names():
        assert valid in str(e.value)


@pytest.mark.parametrize("rows", [0, -5])
def test_take_needs_positive_rows(rows):
    with pytest.raises(DlrmlabError, match="rows must be positive"):
        make_stream("random").take(10, rows)


def test_workload_ids_respect_each_tables_rows():
    wl = Workload("tiny", "medium", seed=4)
    for batch in wl.batches(3):
        for rows, t in zip(wl.stage.embedding_sizes, batch.tables, strict=True):
            assert t.indices.min() >= 0 and t.indices.max() < rows


# --- calibration of the reuse levels ---------------------------------------------------------------------


@cache
def _paper_top60k(name: str, seed: int) -> float:
    return hotness.top_coverage(Workload("paper", name, seed=seed).ids(), [60_000])[60_000]


def test_reuse_targets_are_the_papers():
    assert REUSE_TARGET_TOP60K["low"] == 0.487
    assert REUSE_TARGET_TOP60K["medium"] == 0.877
    assert set(REUSE_ALPHA) == {"low", "medium", "high"}
    assert REUSE_ALPHA["low"] < REUSE_ALPHA["medium"] < REUSE_ALPHA["high"]


@pytest.mark.parametrize("seed", [11, 12])
@pytest.mark.parametrize(("name", "target"), [("low", 0.487), ("medium", 0.877)])
def test_reuse_calibration_on_fresh_seeds(name, target, seed):
    assert _paper_top60k(name, seed) == pytest.approx(target, abs=0.02)


@pytest.mark.parametrize("seed", [11, 12])
def test_high_reuse_is_clearly_above_medium(seed):
    assert _paper_top60k("high", seed) > _paper_top60k("medium", seed) + 0.05


# --- trace files -----------------------------------------------------------------------------------------


def test_read_trace_basic(tmp_path):
    p = write_trace(tmp_path / "t.txt", "5\n1\n9\n2\n")
    ids = read_trace(p)
    assert ids.dtype == np.int64
    np.testing.assert_array_equal(ids, [5, 1, 9, 2])
    np.testing.assert_array_equal(read_trace(str(p)), [5, 1, 9, 2])


def test_read_trace_blank_lines_whitespace_crlf_and_no_final_newline(tmp_path):
    p = write_trace(tmp_path / "t.txt", "\n 7\n\n\t12 \r\n0\r\n\n\n123456789012\n\n3")
    np.testing.assert_array_equal(read_trace(p), [7, 12, 0, 123456789012, 3])


def test_read_trace_across_chunk_boundaries(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 10**9, size=500)
    text = "".join(f"{v}\n" + ("\n" if i % 7 == 0 else "") for i, v in enumerate(ids))
    p = write_trace(tmp_path / "t.txt", text)
    for chunk in (1, 3, 7, 64, 1 << 20):
        monkeypatch.setattr(datasets, "_CHUNK", chunk)
        np.testing.assert_array_equal(read_trace(p), ids)


def test_read_trace_error_line_number_across_chunks(tmp_path, monkeypatch):
    lines = [str(i) for i in range(100)]
    lines[76] = "7x"
    p = write_trace(tmp_path / "t.txt", "\n".join(lines) + "\n")
    for chunk in (5, 64, 1 << 20):
        monkeypatch.setattr(datasets, "_CHUNK", chunk)
        with pytest.raises(DlrmlabError, match=re.escape(f"{p}:77:")):
            read_trace(p)


@pytest.mark.parametrize(
    ("text", "line", "why"),
    [
        ("1\n2\nabc\n4\n", 3, "not an integer"),
        ("1\n2\n3.5\n", 3, "not an integer"),
        ("1\n\n\n+4\n", 4, "not an integer"),
        ("1\n2 3\n", 2, "more than one id"),
        ("1\n2\n3\n1234567890123456789\n", 4, "too large"),
        ("3\n-1\n", 2, "negative"),
        ("-7\n", 1, "negative"),
    ],
)
def test_read_trace_malformed_names_the_line(tmp_path, text, line, why):
    p = write_trace(tmp_path / "f", text)
    with pytest.raises(DlrmlabError, match=re.escape(f"{p}:{line}:")) as e:
        read_trace(p)
    assert why in str(e.value)


@pytest.mark.parametrize("text", ["", "\n", "\n \n\r\n"])
def test_read_trace_empty_file(tmp_path, text):
    p = write_trace(tmp_path / "empty.txt", text)
    with pytest.raises(DlrmlabError, match="holds no ids"):
        read_trace(p)


def test_read_trace_missing_file(tmp_path):
    with pytest.raises(DlrmlabError, match="not found"):
        read_trace(tmp_path / "missing.txt")
    with pytest.raises(DlrmlabError, match="not found"):
        make_stream(f"trace:{tmp_path / 'missing.txt'}")


def test_trace_stream_drops_ids_at_or_above_rows(tmp_path):
    p = write_trace(tmp_path / "t.txt", "5\n1\n9\n2\n")
    s = make_stream(f"trace:{p}")
    np.testing.assert_array_equal(s.take(7, 4), [1, 2, 1, 2, 1, 2, 1])
    np.testing.assert_array_equal(s.take(3, 4), [2, 1, 2])
    assert s.take(0, 4).size == 0


def test_trace_stream_is_circular(tmp_path):
    p = write_trace(tmp_path / "t.txt", "5\n1\n9\n2\n")
    s = make_stream(f"trace:{p}", seed=123)
    np.testing.assert_array_equal(s.take(10, 10), [5, 1, 9, 2, 5, 1, 9, 2, 5, 1])
    np.testing.assert_array_equal(s.take(3, 10), [9, 2, 5])
    s.reset()
    np.testing.assert_array_equal(s.take(2, 10), [5, 1])


def test_trace_stream_does_not_depend_on_seed(tmp_path):
    p = write_trace(tmp_path / "t.txt", "5\n1\n9\n2\n")
    np.testing.assert_array_equal(
        make_stream(f"trace:{p}", seed=1).take(9, 6), make_stream(f"trace:{p}", seed=2).take(9, 6)
    )


def test_trace_with_no_id_below_rows(tmp_path):
    p = write_trace(tmp_path / "t.txt", "5\n9\n")
    s = make_stream(f"trace:{p}")
    with pytest.raises(DlrmlabError, match="no id below rows=4"):
        s.take(3, 4)
    np.testing.assert_array_equal(s.take(3, 6), [5, 5, 5])


def _scan_model(trace: np.ndarray, requests: list[tuple[int, int]]) -> list[np.ndarray]:
    """The artifact's rule, one id at a time: read on circularly, skip ids >= rows."""
    pos, out = 0, []
    for n, rows in requests:
        got = []
        while len(got) < n:
            v = trace[pos % trace.size]
            pos += 1
            if v < rows:
                got.append(v)
        out.append(np.array(got, np.int64))
    return out


def test_trace_stream_matches_sequential_scan_model():
    rng = np.random.default_rng(42)
    for _ in range(40):
        trace = rng.integers(0, 50, size=int(rng.integers(1, 30)))
        s = TraceStream("t", ids=trace)
        requests = [(int(rng.integers(0, 40)), int(rng.integers(trace.min() + 1, 60))) for _ in range(8)]
        for (n, rows), want in zip(requests, _scan_model(trace, requests), strict=True):
            np.testing.assert_array_equal(s.take(n, rows), want)


def test_trace_consumed_sequentially_across_tables_and_batches(tmp_path):
    p = write_trace(tmp_path / "t.txt", "".join(f"{i}\n" for i in range(10)))
    stage = EmbeddingStage((100, 100), 4, 2, Pooling("fixed", 2))
    wl = Workload(stage, f"trace:{p}")
    b1, b2 = wl.batch(), wl.batch()
    np.testing.assert_array_equal(b1.tables[0].indices, [0, 1, 2, 3])
    np.testing.assert_array_equal(b1.tables[1].indices, [4, 5, 6, 7])
    np.testing.assert_array_equal(b2.tables[0].indices, [8, 9, 0, 1])
    np.testing.assert_array_equal(b2.tables[1].indices, [2, 3, 4, 5])
    wl.reset()
    np.testing.assert_array_equal(wl.batch().tables[0].indices, [0, 1, 2, 3])


def test_trace_tables_of_different_rows_share_one_position(tmp_path):
    p = write_trace(tmp_path / "t.txt", "5\n1\n9\n2\n")
    stage = EmbeddingStage((4, 10), 4, 1, Pooling("fixed", 3))
    b1, b2 = Workload(stage, f"trace:{p}").batches(2)
    np.testing.assert_array_equal(b1.tables[0].indices, [1, 2, 1])  # raw positions 1, 3, 5
    np.testing.assert_array_equal(b1.tables[1].indices, [9, 2, 5])  # raw positions 6, 7, 8
    np.testing.assert_array_equal(b2.tables[0].indices, [1, 2, 1])  # raw positions 9, 11, 13
    np.testing.assert_array_equal(b2.tables[1].indices, [9, 2, 5])


# --- the paper's public trace (not in the repository) ------------------------------------------------------


@pytest.mark.skipif(not REUSE_LOW_TRACE.is_file(), reason=f"{REUSE_LOW_TRACE} not available")
def test_paper_low_trace_describe(capsys):
    argv = ["workload", "describe", "--dataset", f"trace:{REUSE_LOW_TRACE}", "--ids", "379910", "--json"]
    assert cli.main(argv) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["ids"] == 379910
    assert d["distinct"] == 231073
    assert round(d["top_coverage"]["60000"], 3) == 0.487


@pytest.mark.skipif(not (REUSE_LOW_TRACE.is_file() and HOT60K_LOW.is_file()), reason="paper traces not available")
def test_paper_hot_rows_cover_the_top60k_share():
    trace = read_trace(REUSE_LOW_TRACE)
    hot = hotness.read_hot_rows(HOT60K_LOW, rows=500_000)
    assert hot.size == np.unique(hot).size == 60_000
    share = np.isin(trace, hot).mean()
    assert share == pytest.approx(hotness.top_coverage(trace, [60_000])[60_000], abs=1e-9)
