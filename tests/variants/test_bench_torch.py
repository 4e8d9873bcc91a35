"""The torch baseline variant against the NumPy reference (on the CPU in simulator mode)."""

from __future__ import annotations

import numpy as np
import pytest

from dlrmlab.bench.case import BenchCase
from dlrmlab.bench.comparison import check_result
from dlrmlab.errors import DlrmlabError
from dlrmlab.variants import prepare as prepare_variant
from dlrmlab.workload import preset

pytestmark = pytest.mark.torch


@pytest.mark.parametrize(
    "dtype, mode, weighted, index_dtype",
    [
        ("float32", "sum", False, "int64"),
        ("float32", "mean", False, "int32"),
        ("float32", "sum", True, "int64"),
        ("float16", "sum", True, "int32"),
        ("bfloat16", "sum", False, "int64"),
        ("bfloat16", "mean", False, "int64"),
    ],
)
def test_torch_variant_matches_reference(dtype, mode, weighted, index_dtype):
    st = preset("tiny", dtype=dtype, index_dtype=index_dtype, pooling="uniform:0-9")  # empty bags too
    case = BenchCase.create(st, "zipf:1.05", n_batches=2, weighted=weighted, mode=mode)
    p = prepare_variant("torch", case)
    for i in range(2):
        out = p.result(i)
        assert all(o.dtype == np.float32 and o.shape == (8, 32) for o in out)
        err, ok, why = check_result(case, out, i)
        assert ok, why
        assert err <= (1e-6 if dtype == "float32" else 1e-2)
    p.run(1)  # enqueues, returns nothing
    pairs = p.per_kernel(0)
    assert len(pairs) == case.num_tables
    case.stream.synchronize()
    assert all(s.elapsed_time(e) >= 0 for s, e in pairs)
    assert p.params == {}


def test_torch_variant_takes_no_params():
    case = BenchCase.create("tiny", "random", n_batches=1)
    with pytest.raises(DlrmlabError, match="variant 'torch' does not take 'block'; it takes: no parameters"):
        prepare_variant("torch", case, block=3)
