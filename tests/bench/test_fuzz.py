"""The fuzz command (dlrmlab.bench.fuzz): a tiny run in the simulator, its summary, exit codes and files; the
case generator's bounds and coverage at GPU size (generated, not run); a planted wrong result is caught
with the seed and case to rerun it."""

from __future__ import annotations

import csv
from collections import Counter

import numpy as np
import pytest

from dlrmlab import backend, variants
from dlrmlab.bench import fuzz


@pytest.mark.slow
def test_tiny_run_every_available_variant(tmp_path, capsys):
    rc = fuzz.main(["--cases", "2", "--size", "tiny", "--seed", "3", "--out", str(tmp_path), "--quiet"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "fuzz: 2 cases" in out and "0 failure(s)" in out
    for name in variants.names(available_only=True):
        assert f"{name} 2 (" in out, (name, out)  # every available variant ran on both cases
    if backend.SIMULATOR:  # the GPU-only variants and the peers are skipped with the reason
        for name in ("fast_graph", "l2window", "cuembed", "cuembed_graph"):
            assert f"skipped: {name}: " in out and "simulator" in out
    rows = list(csv.DictReader(open(tmp_path / "fuzz.csv")))
    assert {r["status"] for r in rows} <= {"ok", "refused", "skipped"}
    assert Counter(r["variant"] for r in rows if r["status"] == "ok")["fast"] == 2
    assert (tmp_path / "summary.txt").read_text().startswith("fuzz: 2 cases")


def test_wrong_result_fails_with_seed_and_rerun(monkeypatch, capsys):
    real = variants.prepare

    def broken(name, case, **kw):
        p = real(name, case, **kw)
        if name == "fast":
            good = p.result
            p.result = lambda i: [o + 1.0 for o in good(i)]
        return p

    monkeypatch.setattr(variants, "prepare", broken)
    rc = fuzz.main(["--case", "1", "--size", "tiny", "--seed", "5", "--variants", "fast,baseline", "--quiet"])
    out = capsys.readouterr().out
    assert rc == 1, out
    assert "1 failure(s)" in out
    assert "FAILED case 1 (seed 5) fast: batch 0: max_rel_err" in out
    assert "rerun: python -m dlrmlab.bench.fuzz --seed 5 --case 1 --variants fast" in out


def test_bad_request_is_a_usage_error(capsys):
    assert fuzz.main(["--cases", "1", "--variants", "nonsense"]) == 2
    assert "fuzz: error: unknown variant 'nonsense'" in capsys.readouterr().err
    assert fuzz.main(["--cases", "1", "--size", "huge"]) == 2


def test_cases_are_reproducible_and_bounded_at_gpu_size():
    size = fuzz.SIZES["gpu"]
    pool = fuzz.profiles(0, size)
    assert fuzz.profiles(0, size) == pool
    assert {p.dtype for p in pool} == set(fuzz.DTYPES)
    assert {(p.mode, p.weighted) for p in pool} == set(fuzz.COMBINES)
    assert {p.index_dtype for p in pool} == set(fuzz.INDEX_DTYPES)
    assert any(p.dim % 8 for p in pool) and any(p.dim % 8 == 0 for p in pool)  # vector widths and others
    specs = [fuzz.case_spec(0, i, size, pool) for i in range(300)]
    assert specs[17] == fuzz.case_spec(0, 17, size, pool)
    kinds = Counter(s.pooling.split(":")[0] if ":" in s.pooling else "fixed" for s in specs)
    assert set(kinds) == set(fuzz.POOLINGS)
    assert len({len(s.rows) for s in specs}) >= 12 and max(len(s.rows) for s in specs) == size.max_tables
    for s in specs:
        elem = 4 if s.profile.dtype == "float32" else 2
        assert 1 <= min(s.rows) and max(s.rows) <= size.max_rows
        assert sum(s.rows) * s.profile.dim * elem <= size.table_bytes
        assert 1 <= s.batch <= size.max_batch
    assert max(s.batch for s in specs) > 500 and max(max(s.rows) for s in specs) > 50_000


def test_long_tail_case_has_empty_and_long_bags():
    size = fuzz.SIZES["tiny"]
    pool = fuzz.profiles(2, size)
    spec = next(s for s in (fuzz.case_spec(2, i, size, pool) for i in range(200))
                if s.pooling.startswith("longtail:") and s.batch >= 4)
    case = fuzz.build_case(spec)
    longest = int(spec.pooling.split(":")[1])
    lengths = np.concatenate([np.diff(tb.offsets) for b in case.host_batches for tb in b.tables])
    assert lengths.max() == longest
    for b in case.host_batches:
        for rows, tb in zip(spec.rows, b.tables, strict=True):
            assert tb.indices.dtype == np.dtype(spec.profile.index_dtype)
            assert tb.indices.size == 0 or int(tb.indices.max()) < rows
            assert (tb.per_sample_weights is not None) == spec.profile.weighted
    assert [r.shape for r in case.reference(1)] == [(spec.batch, spec.profile.dim)] * len(spec.rows)


def test_unavailable_peer_is_skipped_not_failed(monkeypatch, capsys):
    from dlrmlab.peers import PeerUnavailable

    real = variants.prepare

    def no_build(name, case, **kw):
        if name == "fast":
            raise PeerUnavailable("cuEmbed unavailable: nvcc failed (planted)")
        return real(name, case, **kw)

    monkeypatch.setattr(variants, "prepare", no_build)
    rc = fuzz.main(["--cases", "4", "--size", "tiny", "--seed", "1", "--variants", "fast,torch", "--quiet"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert f"unavailable (peer, not a failure): fast x{fuzz.PEER_TRIES}: cuEmbed unavailable" in out
    assert f"skipped: fast: cuEmbed unavailable: nvcc failed (planted) (unavailable in {fuzz.PEER_TRIES}" in out
