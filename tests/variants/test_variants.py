"""The variants of the table: names, GPU-only refusals in the simulator, and correctness of every variant that
runs here against the case's NumPy reference (sum, weighted sum, mean)."""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest
from helpers import rel_err, simulator_only

from dlrmlab.bench.case import BenchCase
from dlrmlab.errors import DlrmlabError
from dlrmlab.variants import get as get_variant
from dlrmlab.variants import knobs_for
from dlrmlab.variants import names as variant_names
from dlrmlab.variants import prepare as prepare_variant

GPU_ONLY = ["l2window", "combined_window", "fast_graph", "fast_graph+l2p", "fast+window", "fast_graph+window"]
CPU_CAPABLE = ["baseline", "optmt", "rpf", "rpf_l1", "rpf_shared", "optmt_rpf", "l2p", "combined", "fast", "fast+l2p",
               "fast@host", "fast@cached"]
#: rows whose knobs the others already cover: checked once (test_optmt_l2p_is_optmt_with_l2p)
COMPOSED = ["optmt_l2p"]
ALL = CPU_CAPABLE + COMPOSED + GPU_ONLY + ["torch"]
#: small hot sets keep the simulator's pin kernel short
FAST_PARAMS = {"l2p": {"hot_rows": 50}, "optmt_l2p": {"hot_rows": 50}, "combined": {"hot_rows": 50},
               "fast+l2p": {"hot_rows": 50}}


@cache
def _case(weighted: bool, mode: str) -> BenchCase:
    return BenchCase.create("tiny", "medium", seed=3, n_batches=2, weighted=weighted, mode=mode)


def _check(case: BenchCase, outs: list[np.ndarray], batch: int = 1) -> None:
    refs = case.reference(batch)
    assert len(outs) == len(refs) == case.num_tables
    for t, (o, r) in enumerate(zip(outs, refs, strict=True)):
        assert o.shape == r.shape == (case.stage.batch_size, case.dim), t
        assert rel_err(o, r) <= case.tolerance(), t


def test_table_lists_every_variant():
    names = set(variant_names())
    assert set(ALL) <= names
    for name in ALL:
        assert get_variant(name).description


def test_gpu_only_flags():
    for name in GPU_ONLY:
        assert get_variant(name).gpu_only, name
    for name in CPU_CAPABLE + COMPOSED + ["torch"]:
        assert not get_variant(name).gpu_only, name


@simulator_only
def test_available_variants_in_simulator():
    assert set(variant_names(available_only=True)) - {"torch"} == set(CPU_CAPABLE + COMPOSED)


@simulator_only
@pytest.mark.torch
def test_torch_is_available_in_simulator():
    assert "torch" in variant_names(available_only=True)


@simulator_only
@pytest.mark.parametrize("name", GPU_ONLY)
def test_gpu_only_variants_refuse_in_simulator(name):
    with pytest.raises(DlrmlabError, match="simulator"):
        prepare_variant(name, _case(False, "sum"))


COMBOS = [(False, "sum"), (True, "sum"), (False, "mean")]


@pytest.mark.parametrize("weighted,mode", COMBOS, ids=["sum", "weighted", "mean"])
@pytest.mark.parametrize("name", CPU_CAPABLE + [pytest.param("torch", marks=pytest.mark.torch)])
def test_variant_matches_reference(name, weighted, mode):
    case = _case(weighted, mode)
    p = prepare_variant(name, case, **FAST_PARAMS.get(name, {}))
    try:
        _check(case, p.result(1))
    finally:
        p.close()


def test_optmt_l2p_is_optmt_with_l2p():
    """The paper's OptMT+L2P configuration is a row: OptMT's register cap and L2P's pinning, both overridable."""
    assert knobs_for("optmt_l2p", {"hot_rows": 50}) == {"paper": {"max_registers": 42}, "pin": {"hot_rows": 50}}
    assert get_variant("optmt_l2p").title == "OptMT+L2P"
    case = _case(False, "sum")
    p = prepare_variant("optmt_l2p", case, **FAST_PARAMS["optmt_l2p"])
    try:
        assert p.params["max_registers"] == 42 and p.params["hot_rows"] == 50
        _check(case, p.result(1))
    finally:
        p.close()


@pytest.mark.parametrize("name", ["l2p", "combined"])
def test_l2p_default_hot_set(name):
    # default K: min(60K, smallest table) = 700 rows of the tiny preset
    case = _case(False, "sum")
    p = prepare_variant(name, case)
    try:
        assert p.params["hot_rows"] == min(case.stage.embedding_sizes)
        _check(case, p.result(1))
    finally:
        p.close()


@pytest.mark.parametrize("name", ["l2p", "combined"])
@pytest.mark.parametrize("k", [701, 5000])
def test_l2p_hot_rows_larger_than_table(name, k):
    with pytest.raises(DlrmlabError, match="larger than the table"):
        prepare_variant(name, _case(False, "sum"), hot_rows=k)


def test_l2p_pin_every_validated():
    with pytest.raises(DlrmlabError, match="pin_every"):
        prepare_variant("l2p", _case(False, "sum"), hot_rows=10, pin_every=0)


def test_l2p_with_hot_file(tmp_path):
    path = tmp_path / "hot_rows.txt"
    path.write_text("".join(f"{i}\n" for i in (3, 1, 4, 15, 9, 2, 6, 5)))
    case = _case(False, "sum")
    p = prepare_variant("l2p", case, hot_file=str(path), pin_every=2)
    try:
        assert p.params["hot_file"] == str(path)
        assert p.params.get("hot_rows") is None and p.params["pin_every"] == 2
        _check(case, p.result(1))
        _check(case, p.result(0), batch=0)
    finally:
        p.close()


def test_l2p_hot_file_out_of_range(tmp_path):
    path = tmp_path / "hot_rows.txt"
    path.write_text("1\n800\n")  # valid for the 1000- and 1500-row tables, not the 700-row one
    with pytest.raises(DlrmlabError, match="out of range"):
        prepare_variant("l2p", _case(False, "sum"), hot_file=str(path))

@pytest.mark.parametrize(
    "name",
    [
        "baseline",
        "rpf",
        "l2p",
        "combined",
        "fast",
        "fast+l2p",
    ],
)
def test_unknown_parameter_raises(name):
    with pytest.raises(DlrmlabError, match="bogus"):
        prepare_variant(name, _case(False, "sum"), bogus=1)


def test_kernel_parameters_reach_the_kernel():
    case = _case(False, "sum")
    p = prepare_variant("rpf", case, prefetch_distance=3, max_registers=40, block=(64, 2), grid=3)
    try:
        assert p.params["prefetch_distance"] == 3 and p.params["max_registers"] == 40
        assert p.params["block"] == "64x2"
        _check(case, p.result(1))
    finally:
        p.close()


@pytest.mark.parametrize("params,match", [({"prefetch_distance": 0}, "prefetch distance"),
                                          ({"max_registers": 8}, "register cap"),
                                          ({"block": (48, 4)}, "block")])  # fmt: skip
def test_bad_kernel_parameters(params, match):
    with pytest.raises(DlrmlabError, match=match):
        prepare_variant("rpf", _case(False, "sum"), **params)


def test_params_record_the_configuration_that_ran():
    """Prepared.params (they go into result rows) carry the kernel configuration actually used."""
    case = _case(False, "sum")
    p = prepare_variant("fast", case)
    try:
        assert p.params["config_source"] == "rule"  # no tuning for the simulator, no knob given
        assert {"unroll", "bags_per_block", "chunk", "vector", "lanes", "threads", "max_registers"} <= set(p.params)
        assert p.params["graph"] is False and p.params["split_hot"] == (p.params["layout"] == "split-hot")
        assert p.params["layout"] in ("plain", "split-hot") and p.params["layout_reason"]
    finally:
        p.close()
    p = prepare_variant("fast", case, unroll=3, chunk=16)
    try:
        assert (p.params["unroll"], p.params["chunk"], p.params["config_source"]) == (3, 16, "explicit")
        _check(case, p.result(1))
    finally:
        p.close()
    p = prepare_variant("optmt_rpf", case)
    try:
        assert (p.params["max_registers"], p.params["prefetch"], p.params["prefetch_distance"]) == (42, "register", 2)
        assert (p.params["block"], p.params["grid"]) == ("32x8", 1024)
    finally:
        p.close()


def test_bad_fast_knob_fails_before_anything_is_set_up():
    with pytest.raises(DlrmlabError, match="unroll"):
        prepare_variant("fast+l2p", _case(False, "sum"), unroll=0, hot_rows=10)


def test_kernel_regex_matches_the_kernels_launched():
    """ncu's filter (the row's ``kernels``) names the embedding kernel the variant launches, never the pin kernel."""
    import re

    from dlrmlab.fused import configure
    from dlrmlab.kernels import fused as fast_kernel
    from dlrmlab.kernels import paper as paper_kernel

    names = {
        "fast": fast_kernel.build(configure(16)).py_func.__name__,
        "paper": paper_kernel.build(paper_kernel.PaperConfig()).py_func.__name__,
    }
    assert names == {"fast": "embedding_bag_fast", "paper": "embedding_bag_paper"}
    for name in variant_names():
        v = get_variant(name)
        if v.kind in names:
            assert re.search(v.kernels, names[v.kind]), (name, v.kernels)
            assert not re.search(v.kernels, "pin_hot_rows"), name
