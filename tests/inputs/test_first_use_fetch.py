"""The paper's traces downloaded on first use: with a fake opener (the suite is offline: conftest sets
DLRMLAB_OFFLINE=1), success writes the checked file where `dlrmlab data fetch` writes, and failure, the
offline switch and a wrong download each give one line that says how to get the file, never a traceback or a
hang."""

from __future__ import annotations

import hashlib
import io
import time
import urllib.error
import urllib.request

import pytest
from helpers import run_cli

from dlrmlab import datasets, download
from dlrmlab.datasets import ArtifactFile
from dlrmlab.errors import DlrmlabError
from dlrmlab.report.context import resolve_datasets

TRACE = b"3\n1\n3\n7\n"


class Opener:
    """``urlopen``'s shape: serves ``served`` by URL, or raises ``failure``; counts its calls."""

    def __init__(self, served: dict[str, bytes] | None = None, failure: Exception | None = None):
        self.served, self.failure, self.calls = served or {}, failure, []

    def __call__(self, url, timeout=None):
        self.calls.append(url)
        if self.failure is not None:
            raise self.failure
        if url not in self.served:
            raise urllib.error.HTTPError(url, 404, "Not Found", None, None)
        return io.BytesIO(self.served[url])


@pytest.fixture
def online(tmp_path, monkeypatch) -> ArtifactFile:
    """An empty data directory, downloads allowed, and a tiny trace registered as trace:low."""
    monkeypatch.delenv(download.OFFLINE_ENV)
    monkeypatch.setenv("DLRMLAB_DATA_DIR", str(tmp_path / "data"))
    low = ArtifactFile("reuse_low_500K.txt", "reuse_low/table_500K.txt", hashlib.sha256(TRACE).hexdigest(), len(TRACE))
    monkeypatch.setitem(datasets.PAPER_TRACES, "low", low)
    return low


def test_first_use_downloads_checks_and_keeps_it(online, tmp_path):
    opener, lines = Opener({online.url(): TRACE}), []
    path = online.obtain(opener=opener, progress=lines.append)
    assert path == tmp_path / "data" / "reuse_low_500K.txt" and path.read_bytes() == TRACE
    assert opener.calls == [online.url()]
    assert len(lines) == 2 and "downloading" in lines[0] and "MB" in lines[0] and "sha256" in lines[1]
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temporary file left
    assert online.obtain(opener=opener, progress=lines.append) == path and len(opener.calls) == 1  # once


@pytest.mark.parametrize("failure", [urllib.error.URLError(OSError(-3, "Temporary failure in name resolution")),
                                     TimeoutError("timed out"), ConnectionRefusedError(111, "refused")])
def test_no_network_says_how_to_get_it(online, tmp_path, failure):
    with pytest.raises(DlrmlabError) as e:
        online.obtain(opener=Opener(failure=failure), progress=lambda line: None)
    msg = str(e.value)
    assert "\n" not in msg and "could not download it" in msg and "dlrmlab data fetch" in msg
    assert online.url() in msg and not any((tmp_path / "data").iterdir())


def test_a_wrong_download_is_not_kept(online, tmp_path):
    with pytest.raises(DlrmlabError, match="not the expected file"):
        online.obtain(opener=Opener({online.url(): b"9\n"}), progress=lambda line: None)
    assert not any((tmp_path / "data").iterdir())


def test_offline_switch_never_calls_the_opener(online, monkeypatch):
    monkeypatch.setenv(download.OFFLINE_ENV, "1")
    opener = Opener({online.url(): TRACE})
    with pytest.raises(DlrmlabError, match=r"not downloaded: \$DLRMLAB_OFFLINE is set"):
        online.obtain(opener=opener)
    assert opener.calls == []


def test_a_server_that_never_answers_is_given_up_on(tmp_path):
    def silent(url, timeout=None):
        time.sleep(5)

    started = time.monotonic()
    with pytest.raises(TimeoutError, match="within 0.2 s"):
        download.download("https://example.invalid/x", tmp_path / "x", "0" * 64, opener=silent, deadline=0.2)
    assert time.monotonic() - started < 2


def test_cli_fetches_a_trace_on_first_use(online, capsys, monkeypatch):
    monkeypatch.setattr(urllib.request, "urlopen", Opener({online.url(): TRACE}))
    rc, out, err = run_cli(capsys, "workload", "describe", "--dataset", "trace:low", "--ids", "4", "--json")
    assert rc == 0, err
    assert err.splitlines()[0].startswith("dlrmlab: reuse_low_500K.txt (0.0 MB) is not here yet: downloading")
    assert '"distinct": 3' in out


def test_cli_offline_is_one_line(online, capsys, monkeypatch):
    monkeypatch.setattr(urllib.request, "urlopen", Opener(failure=urllib.error.URLError("no route")))
    rc, _, err = run_cli(capsys, "workload", "describe", "--dataset", "trace:low", "--ids", "4")
    assert rc == 2 and "Traceback" not in err
    error = [line for line in err.splitlines() if line.startswith("dlrmlab: error: ")]
    assert len(error) == 1 and "could not download it: no route" in error[0] and "dlrmlab data fetch" in error[0]


def test_reproduce_datasets_fetch_or_stand_in(online, monkeypatch):
    monkeypatch.setattr(urllib.request, "urlopen", Opener(failure=urllib.error.URLError("no route")))
    usable, skipped = resolve_datasets(["trace:low", "random"])
    assert usable == ["random"] and "fitted to it instead" in skipped["trace:low"]
    monkeypatch.setattr(urllib.request, "urlopen", Opener({online.url(): TRACE}))
    assert resolve_datasets(["trace:low", "random"]) == (["trace:low", "random"], {})
