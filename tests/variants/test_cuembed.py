"""The cuEmbed peer: availability reasons, the build (command, cache key, atomic cached library), what a case
may ask of cuEmbed; a real nvcc build of the shim where nvcc and a cuEmbed copy exist; results against the
reference on a GPU (``-m gpu``, skipped with the reason when the peer is unavailable)."""

from __future__ import annotations

import dataclasses
import os
import shutil
import stat
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from helpers import ROOT

from dlrmlab.bench.case import BenchCase
from dlrmlab.errors import DlrmlabError
from dlrmlab.peers import PeerUnavailable, cuembed
from dlrmlab.workload import preset


def shared_cuembed() -> Path | None:
    """A real cuEmbed copy: $DLRMLAB_CUEMBED_DIR, else ../shared/peers/cuEmbed or .dev/cuEmbed by the repo."""
    for d in (os.environ.get(cuembed.ENV_DIR), ROOT.parent / "shared" / "peers" / "cuEmbed", ROOT / ".dev" / "cuEmbed"):
        if d and (Path(d) / cuembed.HEADER).is_file():
            return Path(d).resolve()
    return None


@pytest.fixture
def fake_dir(tmp_path) -> Path:
    """A directory shaped like cuEmbed's (its own tiny headers, nothing of cuEmbed's)."""
    inc = tmp_path / "ce" / "cuembed" / "include"
    inc.mkdir(parents=True)
    (inc / "embedding_lookup.cuh").write_text("// stand-in\n#include \"cuembed/include/types.cuh\"\n")
    (inc / "types.cuh").write_text("// stand-in types\n")
    return tmp_path / "ce"


FAKE_NVCC = """#!/bin/sh
# stand-in nvcc: logs its arguments, answers --version, 'builds' by writing the -o file (or fails on demand)
echo "$@" >> "{log}"
if [ "$1" = "--version" ]; then echo "Cuda compilation tools, release 99.9, V99.9.1"; exit 0; fi
if [ -n "$FAKE_NVCC_FAIL" ]; then echo "error: something went wrong" >&2; exit 2; fi
out=""
while [ $# -gt 0 ]; do if [ "$1" = "-o" ]; then out="$2"; fi; shift; done
printf 'not really a library' > "$out"
"""


@pytest.fixture
def fake_nvcc(tmp_path, monkeypatch) -> Path:
    """A stand-in nvcc, alone on PATH; the build cache in tmp_path."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "nvcc.log"
    nvcc = bin_dir / "nvcc"
    nvcc.write_text(FAKE_NVCC.format(log=log))
    nvcc.chmod(nvcc.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.delenv("CUDA_HOME", raising=False)
    monkeypatch.delenv("CUDA_PATH", raising=False)
    monkeypatch.setenv("DLRMLAB_CACHE_DIR", str(tmp_path / "cache"))
    cuembed.nvcc_version.cache_clear()
    yield nvcc
    cuembed.nvcc_version.cache_clear()


def nvcc_calls(nvcc: Path) -> list[str]:
    log = nvcc.parent.parent / "nvcc.log"
    return [line for line in log.read_text().splitlines() if line != "--version"] if log.exists() else []


@pytest.fixture
def on_gpu(monkeypatch):
    """Pretend not to be in the simulator (availability checks only: nothing here touches a GPU)."""
    monkeypatch.setattr(cuembed, "backend", SimpleNamespace(SIMULATOR=False))


# --- availability ----------------------------------------------------------------------------------------


def test_simulator_is_unavailable(monkeypatch, fake_dir, fake_nvcc):
    monkeypatch.setattr(cuembed, "backend", SimpleNamespace(SIMULATOR=True))
    ok, why = cuembed.available(fake_dir)
    assert not ok and why == "cuEmbed peer unavailable: no CUDA GPU (simulator mode); cuEmbed runs only on a GPU"
    assert cuembed.unavailable(fake_dir) == why


def test_directory_reasons(on_gpu, monkeypatch, fake_dir, fake_nvcc, tmp_path):
    monkeypatch.delenv(cuembed.ENV_DIR, raising=False)
    ok, why = cuembed.available()
    assert not ok and why.startswith("cuEmbed peer unavailable: DLRMLAB_CUEMBED_DIR not set")
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv(cuembed.ENV_DIR, str(empty))
    assert cuembed.unavailable() == f"cuEmbed peer unavailable: no cuembed/include/embedding_lookup.cuh under {empty}"
    # the cuembed/ folder itself instead of the folder that holds it: the message says so
    assert "give its parent" in cuembed.unavailable(fake_dir / "cuembed")
    monkeypatch.setenv(cuembed.ENV_DIR, str(fake_dir))
    assert cuembed.available() == (True, f"cuEmbed from {fake_dir.resolve()}, built with {fake_nvcc}")
    assert cuembed.unavailable(empty) is not None  # an explicit directory wins over the variable


def test_nvcc_reasons(on_gpu, monkeypatch, fake_dir, tmp_path):
    nowhere = tmp_path / "nowhere"
    nowhere.mkdir()
    monkeypatch.setenv("PATH", str(nowhere))
    monkeypatch.delenv("CUDA_HOME", raising=False)
    monkeypatch.delenv("CUDA_PATH", raising=False)
    ok, why = cuembed.available(fake_dir)
    assert not ok
    assert why == "cuEmbed peer unavailable: nvcc not found on PATH (nor in $CUDA_HOME/bin or $CUDA_PATH/bin)"
    with pytest.raises(PeerUnavailable, match="nvcc not found"):
        cuembed.find_nvcc()
    cuda_home = tmp_path / "cuda"
    (cuda_home / "bin").mkdir(parents=True)
    nvcc = cuda_home / "bin" / "nvcc"
    nvcc.write_text("#!/bin/sh\n")
    nvcc.chmod(0o755)
    monkeypatch.setenv("CUDA_HOME", str(cuda_home))
    assert cuembed.find_nvcc() == str(nvcc)


# --- the build -------------------------------------------------------------------------------------------


def test_build_command():
    cmd = cuembed.build_command("/cuda/bin/nvcc", "/pkg/shim.cu", "/src/cuEmbed", "90", "/c/lib.so", "float16", "int32")
    assert cmd == [
        "/cuda/bin/nvcc", "-O3", "-std=c++17", "-shared", "-Xcompiler", "-fPIC",
        "-gencode", "arch=compute_90,code=sm_90", "-DDLRMLAB_CUEMBED_TABLES=2", "-DDLRMLAB_CUEMBED_INDICES=1",
        "-I", "/src/cuEmbed", "-o", "/c/lib.so", "/pkg/shim.cu",
    ]  # fmt: skip
    assert "-DDLRMLAB_CUEMBED_TABLES=1" in cuembed.build_command("n", "s", "i", "100", "o")  # float32 default
    assert "arch=compute_100,code=sm_100" in cuembed.build_command("n", "s", "i", "100", "o")
    assert cuembed.gpu_arch({"major": 9, "minor": 0}) == "90" and cuembed.gpu_arch({"major": 12, "minor": 1}) == "121"


def test_cache_key_covers_every_input():
    base = (b"shim", {"cuembed/include/a.cuh": b"A", "cuembed/include/b.cuh": b"B"}, "nvcc 13.0", "90", ["-O3"])
    key = cuembed.cache_key(*base)
    assert len(key) == 64 and key == cuembed.cache_key(*base)
    assert key == cuembed.cache_key(b"shim", dict(reversed(list(base[1].items()))), *base[2:])  # order-free
    changed = [
        (b"shim2", *base[1:]),
        (base[0], {**base[1], "cuembed/include/a.cuh": b"A2"}, *base[2:]),  # a header's contents
        (base[0], {"cuembed/include/x.cuh": b"A", "cuembed/include/b.cuh": b"B"}, *base[2:]),  # a header's name
        (base[0], {**base[1], "cuembed/include/c.cuh": b""}, *base[2:]),  # one more header
        (*base[:2], "nvcc 13.1", *base[3:]),
        (*base[:3], "100", base[4]),
        (*base[:4], ["-O3", "-DDLRMLAB_CUEMBED_TABLES=2"]),
    ]
    keys = {cuembed.cache_key(*c) for c in changed}
    assert len(keys) == len(changed) and key not in keys


def test_build_is_cached_atomic_and_keyed(on_gpu, fake_dir, fake_nvcc, tmp_path):
    b = cuembed.build(fake_dir, "float32", "int64", arch="90")
    assert b.path.is_file() and b.path.parent == tmp_path / "cache" / "cuembed"
    assert b.path.name.startswith("libdlrmlab_cuembed_float32_int64_sm90_") and b.path.suffix == ".so"
    assert b.command == cuembed.build_command(str(fake_nvcc), cuembed.SHIM, fake_dir.resolve(), "90", b.path)
    assert b.path.with_suffix(".json").is_file() and b.headers in b.path.with_suffix(".json").read_text()
    calls = nvcc_calls(fake_nvcc)
    assert len(calls) == 1 and f"-I {fake_dir.resolve()}" in calls[0] and ".tmp.so" in calls[0]  # temp, renamed
    assert [p.name for p in b.path.parent.iterdir() if ".tmp" in p.name] == []
    assert cuembed.build(fake_dir, "float32", "int64", arch="90") == b and len(nvcc_calls(fake_nvcc)) == 1  # cached
    # another arch, dtype or header content: another library
    assert cuembed.build(fake_dir, "float32", "int64", arch="100").path != b.path
    assert cuembed.build(fake_dir, "float16", "int64", arch="90").path != b.path
    (fake_dir / "cuembed" / "include" / "types.cuh").write_text("// changed\n")
    assert cuembed.build(fake_dir, "float32", "int64", arch="90").path != b.path
    assert len(nvcc_calls(fake_nvcc)) == 4
    cuembed.build(fake_dir, "float32", "int64", arch="90", force=True)
    assert len(nvcc_calls(fake_nvcc)) == 5


def test_build_failure_is_a_reason_and_leaves_nothing(on_gpu, fake_dir, fake_nvcc, monkeypatch):
    monkeypatch.setenv("FAKE_NVCC_FAIL", "1")
    with pytest.raises(PeerUnavailable, match=r"building the shim failed \(nvcc exit 2\):\nerror: something went"):
        cuembed.build(fake_dir, arch="90")
    cache = Path(os.environ["DLRMLAB_CACHE_DIR"]) / "cuembed"
    assert list(cache.iterdir()) == []
    with pytest.raises(DlrmlabError, match="float32 or float16, not 'bfloat16'"):
        cuembed.plan_build(fake_dir, "bfloat16", arch="90")


# --- what a case may ask ---------------------------------------------------------------------------------


def tiny_case(**stage) -> BenchCase:
    mode = stage.pop("mode", "sum")
    weighted = stage.pop("weighted", False)
    return BenchCase.create(preset("tiny", **stage), "random", n_batches=2, mode=mode, weighted=weighted)


@pytest.fixture(scope="module")
def case():
    return tiny_case()


def test_plan_case_layouts(case):
    assert cuembed.plan_case(case) == ("csr", 0)
    assert cuembed.plan_case(case, "fixed") == ("fixed", 5)  # tiny: 5 ids per bag
    assert cuembed.plan_case(case, "auto") == ("fixed", 5)
    mixed = tiny_case(pooling="uniform:0-6")
    assert cuembed.plan_case(mixed, "auto") == ("csr", 0)
    with pytest.raises(DlrmlabError, match=r"variant 'cuembed_graph': layout='fixed' needs every bag .* uniform:0-6"):
        cuembed.plan_case(mixed, "fixed", "cuembed_graph")
    with pytest.raises(DlrmlabError, match="layout must be one of csr, fixed, auto, got 'coo'"):
        cuembed.plan_case(case, "coo")
    long_bags = tiny_case(pooling=7000, batch_size=2)  # 7000 int64 ids = 56 KB: over cuEmbed's 48 KB
    with pytest.raises(DlrmlabError, match="over cuEmbed's 48 KB: use layout='csr'"):
        cuembed.plan_case(long_bags, "fixed")
    assert cuembed.plan_case(long_bags, "auto") == ("csr", 0)  # auto: fixed only where cuEmbed can stage the bag


def test_plan_case_refuses_what_cuembed_lacks(case):
    maxed = dataclasses.replace(case, mode="max")  # torch's third mode (dlrmlab's cases refuse it themselves)
    with pytest.raises(DlrmlabError, match=r"variant 'cuembed': mode='max' is not supported by cuEmbed \(sum, mean\)"):
        cuembed.plan_case(maxed)
    with pytest.raises(DlrmlabError, match="dtype='bfloat16' tables are not supported by cuEmbed"):
        cuembed.plan_case(tiny_case(dtype="bfloat16"))
    with pytest.raises(DlrmlabError, match="cannot split rows of dim=3 float16"):
        cuembed.plan_case(tiny_case(dtype="float16", sparse_feature_size=3))
    assert cuembed.plan_case(tiny_case(mode="mean", dtype="float16", index_dtype="int32")) == ("csr", 0)
    assert cuembed.plan_case(tiny_case(weighted=True), "fixed") == ("fixed", 5)


def test_prepare_checks_knobs_then_availability(case):
    from dlrmlab import variants

    with pytest.raises(DlrmlabError, match="variant 'cuembed' does not take 'unroll'; it takes: cuembed_dir, layout"):
        variants.knobs_for("cuembed", {"unroll": 4})
    with pytest.raises(DlrmlabError, match="variant 'cuembed_graph': mode='max'"):
        cuembed.prepare(dataclasses.replace(case, mode="max"), {}, graph=True)
    if cuembed.backend.SIMULATOR:
        with pytest.raises(PeerUnavailable, match="simulator mode"):
            cuembed.prepare(case, {"cuembed": {"layout": "fixed"}}, graph=True)
    assert {"cuembed", "cuembed_graph"} <= set(variants.VARIANTS)


# --- a real build ----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_shim_compiles_against_cuembed(tmp_path, monkeypatch):
    """nvcc builds the shim against a real cuEmbed (skipped where either is missing, as on CI)."""
    d = shared_cuembed()
    if d is None:
        pytest.skip(f"no cuEmbed copy (set {cuembed.ENV_DIR}, or put one in ../shared/peers/cuEmbed)")
    if shutil.which("nvcc") is None:
        pytest.skip("nvcc not on PATH")
    monkeypatch.setenv("DLRMLAB_CACHE_DIR", str(tmp_path))
    b = cuembed.build(d, "float32", "int64", arch="90")
    lib = cuembed.Library(b.path)  # loads without a GPU: the CUDA runtime is linked in statically
    assert lib.supports("float32", "int64") and not lib.supports("float16", "int64")
    assert lib.error_name(1) == "cudaErrorInvalidValue"
    # refusals the shim answers before any CUDA call (cuEmbed itself would abort the process)
    ptr = 1 << 20
    args = dict(table=ptr, dim=128, indices=ptr, offsets=ptr, weights=None, batch=4, num_hots=0, mode=0, out=ptr)

    def call(**kw):
        a = {**args, **kw}
        return lib.forward(0, 8, a["table"], a["dim"], a["indices"], a["offsets"], a["weights"], a["batch"],
                           a["num_hots"], a["mode"], a["out"], None)  # fmt: skip

    assert call(mode=2) == 1  # max: no
    assert call(num_hots=5) == 1  # CSR offsets with a hotness
    assert call(offsets=None) == 1  # fixed hotness without one
    assert call(offsets=None, indices=None, num_hots=4) == 1  # fixed hotness without ids
    assert call(offsets=None, num_hots=7000) == 1  # 56 KB of ids in shared memory
    assert call(dim=4097) == 1  # a row cuEmbed cannot split into <= 1024 loads
    assert call(batch=0) == 0  # nothing to do, nothing launched
    assert lib.forward(1, 8, ptr, 128, ptr, ptr, None, 4, 0, 0, ptr, None) == 1  # float16: not in this build


# --- on a GPU --------------------------------------------------------------------------------------------

GPU_CASES = [
    pytest.param({}, "csr", id="f32-i64-sum-csr"),
    pytest.param({}, "fixed", id="f32-i64-sum-fixed"),
    pytest.param({"mode": "mean"}, "csr", id="f32-mean-csr"),
    pytest.param({"mode": "mean"}, "fixed", id="f32-mean-fixed"),
    pytest.param({"weighted": True}, "csr", id="f32-weighted-csr"),
    pytest.param({"weighted": True}, "fixed", id="f32-weighted-fixed"),
    pytest.param({"index_dtype": "int32"}, "csr", id="f32-i32-csr"),
    pytest.param({"index_dtype": "int32", "weighted": True}, "fixed", id="f32-i32-weighted-fixed"),
    pytest.param({"dtype": "float16"}, "csr", id="f16-sum-csr"),
    pytest.param({"dtype": "float16", "weighted": True}, "fixed", id="f16-weighted-fixed"),
    pytest.param({"dtype": "float16", "mode": "mean", "index_dtype": "int32"}, "csr", id="f16-i32-mean-csr"),
    pytest.param({"pooling": "poisson:3", "mode": "mean"}, "auto", id="f32-poisson-empty-bags-mean"),
    # batch 1: some tables have no ids at all (the GPU fuzz's only peer failures, 2026-11-26)
    pytest.param({"batch_size": 1, "pooling": "poisson:0.5", "mode": "mean"}, "csr", id="f32-tables-without-ids"),
    pytest.param({"sparse_feature_size": 128, "batch_size": 64, "pooling": 40}, "csr", id="f32-dim128"),
]


def _need_peer():
    ok, why = cuembed.available()
    if not ok:
        pytest.skip(why)


@pytest.mark.gpu
@pytest.mark.parametrize("graph", [False, True], ids=["cuembed", "cuembed_graph"])
@pytest.mark.parametrize(("stage", "layout"), GPU_CASES)
def test_cuembed_matches_reference(stage, layout, graph):
    from dlrmlab.bench.comparison import check_result

    _need_peer()
    c = tiny_case(**stage)
    prep = cuembed.prepare(c, {"cuembed": {"layout": layout}}, graph=graph)
    try:
        for i in (0, 1, 0):
            err, ok, why = check_result(c, prep.result(i), i)
            assert ok, why
        assert prep.params["graph"] is graph and prep.params["layout"] in ("csr", "fixed")
        if not graph:
            pairs = prep.per_kernel(1)
            c.stream.synchronize()
            assert len(pairs) == c.num_tables
    finally:
        prep.close()


@pytest.mark.gpu
def test_cuembed_in_the_harness():
    from dlrmlab.bench import comparison

    _need_peer()
    c = tiny_case(sparse_feature_size=128, batch_size=256, pooling=20)
    res = comparison.compare(c, ["cuembed", "cuembed_graph", ("cuembed", {"layout": "fixed"})], repeats=14,
                          warmup_s=0.05, kernel_repeats=4)
    rows = res.rows
    assert rows["correct"].all(), list(rows["error"])
    assert (rows["timing_mode"] == "serving").all() and (rows["n_runs"] == 14).all()
    assert rows.iloc[0]["kernel_launches"] == c.num_tables and np.isnan(rows.iloc[1]["kernel_ms"])
    assert rows["median_ms"].gt(0).all()


@pytest.mark.gpu
def test_shim_reports_cuda_errors_on_gpu():
    _need_peer()
    lib, _ = cuembed.load(None, "float32", "int64")
    assert lib.error_name(lib.forward(0, 8, 1 << 20, 128, 1 << 20, 1 << 20, None, 4, 0, 9, 1 << 20, None)) == (
        "cudaErrorInvalidValue"
    )
