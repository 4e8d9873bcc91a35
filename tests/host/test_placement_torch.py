"""``EmbeddingBagCollection(..., placement=...)``: host and cached tables against the reference (simulator,
tiny), the prefetch path, and refusals."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from dlrmlab import backend, placement, reference  # noqa: E402
from dlrmlab.dlrm.embedding import EmbeddingBagCollection  # noqa: E402
from dlrmlab.dlrm.kjt import KeyedJaggedTensor  # noqa: E402
from dlrmlab.errors import DlrmlabError  # noqa: E402
from dlrmlab.workload import Workload, preset  # noqa: E402

pytestmark = pytest.mark.torch
DEV = "cpu" if backend.SIMULATOR else "cuda"


def _setup(n_batches=2):
    stage = preset("tiny", tables=2, rows=60, sparse_feature_size=8, batch_size=3)
    wl = Workload(stage, "zipf:1.1", seed=1)
    batches = list(wl.batches(n_batches))
    return batches, wl.make_tables()


def _ref(batch, tables):
    return [reference.embedding_bag(tb.indices, w, tb.offsets, mode="sum", include_last_offset=True)
            for tb, w in zip(batch.tables, tables, strict=True)]  # fmt: skip


@pytest.mark.parametrize("spec", ["host", "cached:20%:lru:4-way"])
def test_placed_collection_matches_the_reference(spec):
    batches, tables = _setup()
    ebc = EmbeddingBagCollection.from_arrays(tables, impl="fast")
    placed = EmbeddingBagCollection((60, 60), 8, "fast", weight=ebc.weight, placement=spec)
    try:
        assert placement.live_pinned_bytes() >= 2 * 60 * 8 * 4
        kjts = [KeyedJaggedTensor.from_batch(b, DEV) for b in batches]
        placed.prefetch(kjts[0])  # the pipeline's first step; forward then uses it
        for b, kjt in zip(batches, kjts, strict=True):
            for got, want in zip(placed(kjt), _ref(b, tables), strict=True):
                np.testing.assert_allclose(got.cpu().numpy(), want, rtol=1e-5, atol=1e-6)
    finally:
        placed._placed.close()
    assert placement.live_pinned_bytes() == 0


def test_placed_collection_refuses_other_implementations():
    with pytest.raises(DlrmlabError, match="fused kernel only"):
        EmbeddingBagCollection((10,), 4, "torch", placement="host")
    with pytest.raises(DlrmlabError, match="placement"):
        EmbeddingBagCollection((10,), 4, "fast", placement="disk")
    assert placement.live_pinned_bytes() == 0


def test_dlrm_pipeline_names_take_a_placement():
    from dlrmlab.dlrm.measure import with_peers

    assert "fast@cached:10%:lfu" in with_peers(["fast@cached:10%:lfu"], compile_peer=False)
    with pytest.raises(DlrmlabError, match="placement"):
        with_peers(["fast@disk"], compile_peer=False)
