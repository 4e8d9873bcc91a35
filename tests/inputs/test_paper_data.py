"""The paper's datasets: registry, `dlrmlab data list | verify | fetch` (fetch with a fake opener, no network)."""

from __future__ import annotations

import hashlib
import io
import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from helpers import find_paper_dir
from helpers import run_cli as run

from dlrmlab import paper_data
from dlrmlab.datasets import ARTIFACT_COMMIT, ArtifactFile
from dlrmlab.paper_data import PAPER_FILES, PaperFile

RAW = f"https://raw.githubusercontent.com/rishucoding/reproduce_MICRO24_GPU_DLRM_inference/{ARTIFACT_COMMIT}/datasets/"


PAPER_DIR = find_paper_dir([pf.file for pf in PAPER_FILES])


@pytest.fixture
def paper_dir(monkeypatch) -> Path:
    if PAPER_DIR is None:
        pytest.skip("the artifact's files are not available")
    monkeypatch.setenv("DLRMLAB_DATA_DIR", str(PAPER_DIR))
    return PAPER_DIR


@pytest.fixture
def empty_data_dir(tmp_path, monkeypatch) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    monkeypatch.setenv("DLRMLAB_DATA_DIR", str(d))
    monkeypatch.setenv("DLRMLAB_CACHE_DIR", str(tmp_path / "cache"))
    return d


def one_line_error(rc: int, err: str) -> None:
    assert rc == 2
    assert err.startswith("dlrmlab: error: ")
    assert "Traceback" not in err


# --- registry ----------------------------------------------------------------------------------------------


def test_registry_holds_the_published_figures():
    by_name = {pf.name: pf for pf in PAPER_FILES}
    assert set(by_name) == {"trace:low", "trace:medium", "hot60K:low", "hot60K:medium", "hot60K:high"}
    low, medium = by_name["trace:low"], by_name["trace:medium"]
    assert (low.ids, low.distinct, low.coverage) == (379_910, 231_073, {60_000: 0.487, 5_000: 0.114})
    assert (medium.ids, medium.distinct, medium.coverage) == (429_951, 102_524, {60_000: 0.877, 5_000: 0.249})
    for level in ("low", "medium", "high"):
        hot = by_name[f"hot60K:{level}"]
        assert hot.ids == hot.distinct == 60_000 and hot.max_id < 500_000
    assert by_name["hot60K:high"].trace is None  # the high trace is not public


def test_urls_point_at_the_artifacts_commit():
    by_name = {pf.name: pf for pf in PAPER_FILES}
    assert by_name["trace:low"].source.url() == RAW + "reuse_low/table_500K.txt"
    assert by_name["hot60K:high"].source.url() == RAW + "pinned_indices/rj_60K_high_hot_indices.txt"


def test_paper_file_by_name_or_file_name():
    assert paper_data.paper_file("reuse_medium_500K.txt").name == "trace:medium"
    assert paper_data.paper_file("hot60K:low").file == "hot60K_low.txt"
    with pytest.raises(paper_data.DlrmlabError, match="unknown paper file 'nope'"):
        paper_data.paper_file("nope")


# --- list --------------------------------------------------------------------------------------------------


def test_list_without_files(capsys, empty_data_dir):
    rc, out, err = run(capsys, "data", "list")
    assert rc == 0 and err == ""
    for name in ("trace:low", "trace:medium", "hot60K:high", "synthetic-low", "synthetic-high", "random"):
        assert name in out
    assert out.count("  missing") == 5
    assert "379,910" in out and "231,073" in out
    assert str(empty_data_dir) in out


def test_list_json(capsys, empty_data_dir):
    (empty_data_dir / "reuse_low_500K.txt").write_text("1\n")
    rc, out, _ = run(capsys, "data", "list", "--json")
    assert rc == 0
    rows = {r["name"]: r for r in json.loads(out)}
    assert rows["trace:low"]["found"] == str(empty_data_dir / "reuse_low_500K.txt")
    assert rows["trace:medium"]["found"] == "missing"
    assert (rows["trace:medium"]["kind"], rows["synthetic-medium"]["kind"]) == ("trace", "synthetic")
    assert "fitted to trace:medium" in rows["synthetic-medium"]["found"]
    assert "not public" in rows["synthetic-high"]["found"]


def test_list_with_the_papers_files(capsys, paper_dir):
    rc, out, _ = run(capsys, "data", "list")
    assert rc == 0 and "missing" not in out
    assert str(paper_dir / "reuse_medium_500K.txt") in out


# --- verify ------------------------------------------------------------------------------------------------


def test_verify_a_wrong_copy_fails(capsys, tmp_path, empty_data_dir):
    p = tmp_path / "mine.txt"
    p.write_text("3\n1\n3\n")
    rc, out, _ = run(capsys, "data", "verify", str(p), "--as", "trace:low")
    assert rc == 1
    assert "FAIL" in out and "check(s) FAILED" in out
    assert "379,910" in out


def test_verify_needs_to_know_which_file(capsys, tmp_path, empty_data_dir):
    p = tmp_path / "mine.txt"
    p.write_text("3\n")
    rc, _, err = run(capsys, "data", "verify", str(p))
    one_line_error(rc, err)
    assert "--as" in err


@pytest.mark.parametrize("target", ["trace:medium", "reuse_low_500K.txt", "hot60K:high"])
def test_verify_missing_file_says_how_to_get_it(capsys, empty_data_dir, target):
    rc, _, err = run(capsys, "data", "verify", target)
    one_line_error(rc, err)
    assert "dlrmlab data fetch" in err and "reproduce_MICRO24_GPU_DLRM_inference" in err


def test_verify_missing_path(capsys, tmp_path, empty_data_dir):
    rc, _, err = run(capsys, "data", "verify", str(tmp_path / "nope" / "x.txt"))
    one_line_error(rc, err)
    assert "not found" in err


def test_verify_nothing_found(capsys, empty_data_dir):
    rc, _, err = run(capsys, "data", "verify")
    one_line_error(rc, err)
    assert "dlrmlab data fetch" in err


def test_verify_malformed_copy_names_the_line(capsys, tmp_path, empty_data_dir):
    p = tmp_path / "reuse_low_500K.txt"
    p.write_text("1\n2\n-3\n")
    rc, _, err = run(capsys, "data", "verify", str(p))
    one_line_error(rc, err)
    assert f"{p}:3: negative row id" in err


def test_verify_the_papers_files(capsys, paper_dir):
    rc, out, _ = run(capsys, "data", "verify")
    assert rc == 0, out
    assert "FAIL" not in out and "all checks passed" in out
    assert "48.7%" in out and "11.4%" in out and "87.7%" in out and "24.9%" in out
    assert "share of trace:low on these rows" in out  # the hot list is the trace's hottest 60K


def test_verify_by_path_identifies_the_file(capsys, paper_dir):
    rc, out, _ = run(capsys, "data", "verify", str(paper_dir / "reuse_medium_500K.txt"), "--json")
    assert rc == 0
    (res,) = json.loads(out)
    assert res["name"] == "trace:medium"
    checks = {c["what"]: c for c in res["checks"]}
    assert checks["distinct ids"]["got"] == "102,524" and checks["distinct ids"]["ok"] is True
    assert checks["sha256"]["ok"] is True


def test_verify_a_renamed_copy_by_content(paper_dir, tmp_path):
    p = tmp_path / "renamed.txt"
    p.write_bytes((paper_dir / "hot60K_high.txt").read_bytes())
    assert paper_data.identify(p).name == "hot60K:high"


def test_verify_crlf_copy_passes_with_sha256_for_information(paper_dir, tmp_path):
    p = tmp_path / "hot60K_low.txt"
    p.write_bytes((paper_dir / "hot60K_low.txt").read_bytes().replace(b"\n", b"\r\n"))
    checks = {c.what: c for c in paper_data.verify(p, "hot60K:low")}
    assert all(c.ok is not False for c in checks.values())
    assert checks["sha256"].ok is None


# --- fetch (no network: a fake opener) ----------------------------------------------------------------------


def _fake_registry(monkeypatch) -> dict[str, bytes]:
    contents = {"a.txt": b"5\n1\n5\n", "b.txt": b"7\n"}
    files = tuple(
        PaperFile(f"trace:{name[0]}", "trace", ArtifactFile(name, f"dir/{name}", hashlib.sha256(c).hexdigest(), len(c)),
                  len(c.split()), len(set(c.split())), max(int(x) for x in c.split()))
        for name, c in contents.items()
    )
    monkeypatch.setattr(paper_data, "PAPER_FILES", files)
    return {RAW + f"dir/{name}": c for name, c in contents.items()}


class _Opener:
    def __init__(self, served: dict[str, bytes]):
        self.served, self.calls = served, []

    def __call__(self, url, timeout=None):
        self.calls.append((url, timeout))
        if url not in self.served:
            raise urllib.error.HTTPError(url, 404, "Not Found", None, None)
        return io.BytesIO(self.served[url])


def test_fetch_downloads_verifies_and_keeps_good_copies(capsys, tmp_path, monkeypatch, empty_data_dir):
    opener = _Opener(_fake_registry(monkeypatch))
    monkeypatch.setattr(urllib.request, "urlopen", opener)
    rc, out, _ = run(capsys, "data", "fetch", "--timeout", "5")
    assert rc == 0, out
    assert sorted(u for u, _ in opener.calls) == sorted(opener.served) and {t for _, t in opener.calls} == {5.0}
    assert (empty_data_dir / "a.txt").read_bytes() == b"5\n1\n5\n"  # default dest: $DLRMLAB_DATA_DIR
    assert sorted(p.name for p in empty_data_dir.iterdir()) == ["a.txt", "b.txt"]  # no temporary file left
    assert "all checks passed" in out
    opener.calls.clear()
    rc, out, _ = run(capsys, "data", "fetch")
    assert rc == 0 and opener.calls == [] and "already in" in out


def test_fetch_to_dest(capsys, tmp_path, monkeypatch, empty_data_dir):
    served = _fake_registry(monkeypatch)
    dest = tmp_path / "new" / "dir"
    got = paper_data.fetch(dest, opener=_Opener(served))
    assert got == {"trace:a": dest / "a.txt", "trace:b": dest / "b.txt"}
    monkeypatch.setattr(urllib.request, "urlopen", _Opener(served))
    rc, out, _ = run(capsys, "data", "fetch", "--dest", str(tmp_path / "other"))
    assert rc == 0 and f"DLRMLAB_DATA_DIR={tmp_path / 'other'}" in out


def test_fetch_refuses_a_wrong_download(tmp_path, monkeypatch, empty_data_dir):
    served = _fake_registry(monkeypatch)
    served[RAW + "dir/b.txt"] = b"8\n"
    with pytest.raises(paper_data.DlrmlabError, match="not the expected file"):
        paper_data.fetch(tmp_path / "d", opener=_Opener(served))
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["a.txt"]  # b.txt neither written nor left over


@pytest.mark.parametrize(
    "failure",
    [urllib.error.URLError(OSError(-2, "Name or service not known")), TimeoutError("timed out"),
     ConnectionResetError(104, "reset")],
)
def test_fetch_offline_says_how_to_get_them_by_hand(capsys, monkeypatch, empty_data_dir, failure):
    def offline(url, timeout=None):
        raise failure

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    rc, out, err = run(capsys, "data", "fetch")
    one_line_error(rc, err.splitlines()[0] + "\n")
    assert "by hand" in err
    for pf in PAPER_FILES:
        assert pf.source.url() in err and str(empty_data_dir / pf.file) in err
    assert list(empty_data_dir.iterdir()) == []


def test_fetch_http_error(capsys, monkeypatch, empty_data_dir):
    monkeypatch.setattr(urllib.request, "urlopen", _Opener({}))
    rc, _, err = run(capsys, "data", "fetch")
    one_line_error(rc, err)
    assert "Not Found" in err and "by hand" in err


def test_fetch_the_real_files_from_a_fake_server(capsys, paper_dir, tmp_path, monkeypatch):
    served = {pf.source.url(): (paper_dir / pf.file).read_bytes() for pf in PAPER_FILES}
    monkeypatch.setattr(urllib.request, "urlopen", _Opener(served))
    rc, out, _ = run(capsys, "data", "fetch", "--dest", str(tmp_path / "d"))
    assert rc == 0, out
    assert "all checks passed" in out
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == sorted(pf.file for pf in PAPER_FILES)
