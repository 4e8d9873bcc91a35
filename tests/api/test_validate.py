"""Validation before allocation (issue 12, item 1): one module (dlrmlab.validate) called from the CLI, the API,
the fast path, the benchmark case and the torch module. Errors name the argument and the value; requests
larger than free memory are refused with both sizes, fast."""

from __future__ import annotations

import time

import numpy as np
import pytest

from dlrmlab import api, backend, cli, fused, validate
from dlrmlab.backend import cuda
from dlrmlab.bench.case import BenchCase
from dlrmlab.errors import DlrmlabError
from dlrmlab.workload import preset

W = np.arange(40, dtype=np.float32).reshape(10, 4)


# --- the shared checks --------------------------------------------------------------------------------------


def test_ids_count_and_first():
    validate.ids(np.array([0, 9, 3]), 10)
    with pytest.raises(DlrmlabError, match=r"input: 3 id\(s\) out of range for a table of 10 rows "
                       r"\(1 negative, 2 >= 10\); the first is 10 at position 1"):  # fmt: skip
        validate.ids(np.array([0, 10, -2, 11]), 10)


@pytest.mark.parametrize(("off", "last", "match"), [
    ([1, 2], False, r"offsets\[0\] must be 0, got 1"),
    ([0, 3, 2, 4], True, r"offsets\[2\] = 2 < offsets\[1\] = 3"),
    ([0, 2, 9], True, "the last is 9, input has 4 id"),
    ([0.0, 1.0], False, "1-D integer array, got dtype float64"),
])  # fmt: skip
def test_offsets(off, last, match):
    with pytest.raises(DlrmlabError, match=match):
        validate.offsets(np.array(off), 4, last)


def test_per_sample_weights():
    validate.per_sample_weights(np.ones(3, np.float32), 3)
    with pytest.raises(DlrmlabError, match=r"one weight per id: \(3,\)\), got \(2,\)"):
        validate.per_sample_weights(np.ones(2, np.float32), 3)
    with pytest.raises(DlrmlabError, match="floating point, got dtype int64"):
        validate.per_sample_weights(np.ones(3, np.int64), 3)


def test_memory_refusal_names_both_sizes(monkeypatch):
    monkeypatch.setattr(validate, "available_host_bytes", lambda: 1024**3)
    with pytest.raises(DlrmlabError, match=r"thing needs about 2\.0 GiB of host memory.*only 1\.0 GiB is free"):
        validate.check_memory("thing", host=2 * 1024**3)
    validate.check_memory("thing", host=1024)


def test_available_host_bytes_is_positive():
    assert validate.available_host_bytes() > 0


def test_stage_bytes_grow_with_the_request():
    small = validate.stage_bytes(preset("paper"), 4)
    big = validate.stage_bytes(preset("paper", batch_size=100_000_000), 4)
    assert big[0] > 1000 * small[0] and big[1] > 1000 * small[1]
    tables = 12 * 500_000 * 128 * 4
    assert small[1] >= tables and small[0] >= tables


# --- API ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"input": np.array([1, 10])}, r"input: 1 id\(s\) out of range for a table of 10 rows.*first is 10 at position 1"),
    ({"input": np.array([-1, 2])}, r"1 negative.*first is -1 at position 0"),
    ({"input": np.array([1.0, 2.0])}, "input must hold integer ids, got dtype float64"),
    ({"offsets": np.array([1, 2])}, r"offsets\[0\] must be 0, got 1"),
    ({"offsets": np.array([0, 3])}, "the last is 3, input has 2"),
    ({"offsets": np.array([0.0, 2.0])}, "offsets must hold integers"),
    ({"per_sample_weights": np.ones(3, np.float32)}, r"per_sample_weights must have the same shape.*\(2,\)"),
    ({"mode": "max"}, "mode must be one of sum, mean, got 'max'"),
])  # fmt: skip
def test_api_errors_name_argument_and_value(kwargs, match):
    args = {"input": np.array([1, 2]), "offsets": np.array([0, 2]), "mode": "sum", **kwargs}
    with pytest.raises(DlrmlabError, match=match):
        api.embedding_bag(args.pop("input"), W, args.pop("offsets"), include_last_offset=True, **args)


def test_api_memory_refused_before_allocation(monkeypatch):
    monkeypatch.setattr(validate, "available_host_bytes", lambda: 100)
    monkeypatch.setattr(validate, "available_device_bytes", lambda: 100)
    allocated = []
    monkeypatch.setattr(api, "to_device", lambda *a, **k: allocated.append(1))
    with pytest.raises(DlrmlabError, match="embedding_bag over a 10 x 4 table .* needs about"):
        api.embedding_bag(np.array([1, 2]), W, np.array([0, 2]), "sum", include_last_offset=True)
    assert not allocated


def test_api_non_contiguous_device_weight():
    wide = cuda.to_device(np.zeros((10, 8), np.float32))
    with pytest.raises(DlrmlabError, match="weight must be C-contiguous"):
        api.embedding_bag(np.array([1, 2]), wide[:, :4], np.array([0, 2]), "sum", include_last_offset=True)


def test_api_validate_false_skips_content_checks(monkeypatch):
    seen = []
    monkeypatch.setattr(validate, "ids", lambda *a, **k: seen.append(1))
    out = api.embedding_bag(np.array([1, 2]), W, np.array([0, 2]), "sum", include_last_offset=True, validate=False)
    assert not seen
    np.testing.assert_allclose(np.asarray(out.copy_to_host()), [W[1] + W[2]])
    api.embedding_bag(np.array([1, 2]), W, np.array([0, 2]), "sum", include_last_offset=True)
    assert seen


# --- fast path ---------------------------------------------------------------------------------------------


def _jagged(ids, off, toff, psw=None):
    return tuple(None if a is None else cuda.to_device(np.asarray(a)) for a in (ids, off, toff, psw))


def test_fast_forward_checks():
    tables = fused.PackedTables.from_arrays([W, W[:5].copy()])
    with pytest.raises(DlrmlabError, match="table_offsets has 1 table"):
        fused.fused_forward(tables, _jagged([1], [0, 1], [0, 1]))
    with pytest.raises(DlrmlabError, match="jagged indices must hold integer ids"):
        fused.fused_forward(tables, _jagged(np.array([1.0]), [0, 1, 1], [0, 1, 2]))
    with pytest.raises(DlrmlabError, match="jagged per_sample_weights must have the same shape"):
        fused.fused_forward(tables, _jagged([1, 2], [0, 1, 2], [0, 1, 2], np.ones(3, np.float32)))
    with pytest.raises(DlrmlabError, match=r"jagged indices of table 1: 1 id\(s\) out of range for a table of 5 rows"):
        fused.fused_forward(tables, _jagged([1, 7], [0, 1, 2], [0, 1, 2]), validate="full")
    with pytest.raises(DlrmlabError, match=r"jagged offsets must be non-decreasing"):
        fused.fused_forward(tables, _jagged([1, 2], [0, 2, 1], [0, 1, 2]), validate="full")
    out = fused.fused_forward(tables, _jagged([1, 2], [0, 1, 2], [0, 1, 2]), validate="full")
    np.testing.assert_allclose(out.copy_to_host(), [W[1], W[2]])


def test_validation_levels_parse_at_the_boundary():
    V = validate.Validation
    assert [V.parse(x) for x in (True, False, "shapes", "full", "off")] == [V.SHAPES, V.OFF, V.SHAPES, V.FULL, V.OFF]
    with pytest.raises(DlrmlabError, match=r"validate must be True, False or one of 'off', 'shapes', 'full', got 'al"):
        V.parse("all")
    tables = fused.PackedTables.from_arrays([W, W[:5].copy()])
    with pytest.raises(DlrmlabError, match="validate must be"):  # before the launch
        fused.fused_forward(tables, _jagged([1, 7], [0, 1, 2], [0, 1, 2]), validate="everything")
    # "shapes" reads no ids: the bad id of table 1 is not looked for (the bounds_check knob would find it on the device)
    with pytest.raises(DlrmlabError, match="table_offsets has 1 table"):
        fused.fused_forward(tables, _jagged([1], [0, 1], [0, 1]), validate="shapes")


def test_packed_tables_memory_refused(monkeypatch):
    monkeypatch.setattr(validate, "available_host_bytes", lambda: 10)
    monkeypatch.setattr(validate, "available_device_bytes", lambda: 10)
    with pytest.raises(DlrmlabError, match="packing 1 table.* needs about"):
        fused.PackedTables.from_arrays([W])


# --- benchmark case and CLI ---------------------------------------------------------------------------------


def test_bench_case_memory_refused_before_generation(monkeypatch):
    from dlrmlab import workload

    monkeypatch.setattr(validate, "available_host_bytes", lambda: 10_000)
    made = []
    monkeypatch.setattr(workload.Workload, "make_tables", lambda self, seed=None: made.append(1))
    with pytest.raises(DlrmlabError, match="a case of 3 table.* needs about .* only 9.8 KiB is free"):
        BenchCase.create("tiny", "random")
    assert not made


@pytest.mark.parametrize("argv", [
    "bench --variant baseline --dataset random --batch 100000000",
    "bench --variant baseline --dataset random --dim 1000000 --preset paper",
    "bench --variant baseline --dataset random --rows 1000000000000",
    "workload describe --dataset random --batch 100000000",
    "workload describe --dataset zipf:1.1 --rows 1000000000000",
])  # fmt: skip
def test_cli_huge_requests_fail_fast(capsys, tmp_path, argv):
    t0 = time.perf_counter()
    rc = cli.main([*argv.split(), *(["--out", str(tmp_path), "--no-torch"] if argv.startswith("bench") else [])])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert time.perf_counter() - t0 < 30
    assert "needs about" in err and "is free" in err and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("dlrmlab: error: ")


# --- torch module -------------------------------------------------------------------------------------------


@pytest.mark.torch
def test_torch_module_validates_ids_and_offsets():
    import torch

    from dlrmlab.dlrm.embedding import EmbeddingBagCollection
    from dlrmlab.dlrm.kjt import KeyedJaggedTensor

    device = "cpu" if backend.SIMULATOR else "cuda"
    ebc = EmbeddingBagCollection([10, 5], 4, "fast", device=device)
    good = KeyedJaggedTensor.from_lengths(["t0", "t1"], torch.tensor([1, 2, 3, 4], device=device),
                                          torch.tensor([1, 1, 1, 1], device=device), length_per_key=[2, 2])
    bad = KeyedJaggedTensor.from_lengths(["t0", "t1"], torch.tensor([1, 2, 3, 7], device=device),
                                         torch.tensor([1, 1, 1, 1], device=device), length_per_key=[2, 2])
    assert len(ebc(good)) == 2
    with pytest.raises(DlrmlabError, match=r"sparse values of key 't1': 1 id\(s\) out of range for a table of 5 "
                       r"rows .* first is 7 at position 1"):  # fmt: skip
        ebc(bad)
    torch_impl = ebc.with_impl("torch")
    with pytest.raises(DlrmlabError, match=r"indices\[1\]: 1 id\(s\) out of range"):
        torch_impl.forward_tables([torch.tensor([1, 2]), torch.tensor([3, 7])],
                                  [torch.tensor([0, 1, 2]), torch.tensor([0, 1, 2])])  # fmt: skip
    with pytest.raises(DlrmlabError, match=r"offsets\[0\].*non-decreasing"):
        torch_impl.forward_tables([torch.tensor([1, 2]), torch.tensor([3, 4])],
                                  [torch.tensor([0, 2, 1]), torch.tensor([0, 1, 2])])  # fmt: skip
    trusted = ebc.with_impl("torch")
    trusted.validate = False
    assert trusted.with_impl("fast").validate is False


@pytest.mark.torch
def test_torch_module_memory_refused(monkeypatch):
    from dlrmlab.dlrm.embedding import EmbeddingBagCollection

    monkeypatch.setattr(validate, "available_host_bytes", lambda: 1000)
    monkeypatch.setattr(validate, "available_device_bytes", lambda: 1000)
    with pytest.raises(DlrmlabError, match=r"tables of 1,000,000 rows x 64 \(float32\) needs about 244.1 MiB"):
        EmbeddingBagCollection([1_000_000], 64)
