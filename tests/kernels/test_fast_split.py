"""Split bags (several lane groups per bag, parts added in shared memory) and ids prefetched into registers
give the reference's results for every combine: sum, weighted, mean, and a mean that skips padding rows."""

from __future__ import annotations

import numpy as np
import pytest

from dlrmlab import api, reference


@pytest.mark.parametrize("staging", ["shared", "registers"])
@pytest.mark.parametrize("split", [1, 2, 3])
@pytest.mark.parametrize("mode,weighted,padding", [("sum", False, None), ("sum", True, None), ("mean", False, 3)])
def test_split_bags_match_reference(split, mode, weighted, padding, staging):
    rng = np.random.default_rng(split)
    w = rng.standard_normal((40, 8)).astype(np.float32)
    ids = rng.integers(0, 40, 23).astype(np.int64)
    ids[::4] = 3  # padding rows inside bags
    offsets = np.array([0, 0, 5, 6, 17, 23], np.int64)  # an empty bag, a one-id bag, uneven parts
    psw = rng.random(23).astype(np.float32) if weighted else None
    knobs = {"split": split, "bags_per_block": 2, "unroll": 2, "chunk": 4, "ids": staging}
    out = api.embedding_bag(ids, w, offsets, mode=mode, per_sample_weights=psw, include_last_offset=True,
                            padding_idx=padding, variant="fast", **knobs)
    ref = reference.embedding_bag(ids, w, offsets, mode=mode, per_sample_weights=psw, include_last_offset=True,
                                  padding_idx=padding)
    np.testing.assert_allclose(out.copy_to_host(), ref, rtol=1e-5, atol=1e-6)
