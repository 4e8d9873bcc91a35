"""The fast kernel's device-side bounds check: a planted bad id is reported (how many, the first position and
its value) instead of being read out of bounds; good ids pass and give the reference's result."""

from __future__ import annotations

import numpy as np
import pytest

from dlrmlab import api, reference
from dlrmlab.errors import DlrmlabError


def _case(bad: int | None = None):
    rng = np.random.default_rng(7)
    w = rng.standard_normal((30, 8)).astype(np.float32)
    ids = rng.integers(0, 30, 40).astype(np.int64)
    if bad is not None:
        ids[17] = bad
        ids[31] = bad
    return w, ids, np.array([0, 10, 10, 25, 40], np.int64)


@pytest.mark.parametrize("staging", ["shared", "registers"])
@pytest.mark.parametrize("bad", [30, -2, 1 << 40])
def test_planted_bad_id_is_reported_not_read(bad, staging):
    w, ids, off = _case(bad)
    with pytest.raises(DlrmlabError, match=r"2 id\(s\) out of their table's range .* first at position 17 is "):
        api.embedding_bag(ids, w, off, mode="sum", include_last_offset=True, variant="fast", validate=False,
                          checked=True, ids=staging, unroll=2, bags_per_block=2)


@pytest.mark.parametrize("staging", ["shared", "registers"])
def test_checked_mode_gives_the_reference_result(staging):
    w, ids, off = _case()
    out = api.embedding_bag(ids, w, off, mode="mean", include_last_offset=True, variant="fast", checked=True,
                            ids=staging, unroll=2, bags_per_block=2)
    ref = reference.embedding_bag(ids, w, off, mode="mean", include_last_offset=True)
    np.testing.assert_allclose(out.copy_to_host(), ref, rtol=1e-5, atol=1e-6)


@pytest.mark.gpu
def test_planted_bad_id_on_the_gpu_paper_preset_table():
    """On the GPU, a bad id in a big table (far past the end) is caught by the device check."""
    rng = np.random.default_rng(1)
    w = rng.standard_normal((500_000, 128)).astype(np.float32)
    ids = rng.integers(0, 500_000, 2048 * 150).astype(np.int64)
    ids[123_456] = 10**12
    off = np.arange(0, ids.size + 1, 150, dtype=np.int64)
    with pytest.raises(DlrmlabError, match="1 id.* first at position 123,456 is 1,000,000,000,000"):
        api.embedding_bag(ids, w, off, mode="sum", include_last_offset=True, variant="fast", validate=False,
                          checked=True)
