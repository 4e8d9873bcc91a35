"""The serving loop that re-decides its row layout as the ids move: it switches exactly where the rule says
(with hysteresis), re-packs the tables on each switch, and every batch equals the reference."""

from __future__ import annotations

import numpy as np
import pytest

from dlrmlab import reference, rules
from dlrmlab.errors import DlrmlabError
from dlrmlab.fused import AdaptiveServer
from dlrmlab.workload import JaggedBatch, TableBatch

ROWS, DIM, BAGS, POOL = 64, 64, 2, 32  # 256-byte rows x 32 ids: 8 KiB bags, long enough for split-hot


def _batch(rng: np.random.Generator, skewed: bool) -> JaggedBatch:
    tables = []
    for _ in range(2):
        ids = rng.integers(0, 2, BAGS * POOL) if skewed else rng.integers(0, ROWS, BAGS * POOL)
        tables.append(TableBatch(ids.astype(np.int64), np.arange(0, BAGS * POOL + 1, POOL, dtype=np.int64)))
    return JaggedBatch.from_tables(tables)


@pytest.mark.slow
def test_a_drifting_stream_switches_where_the_rule_says_and_matches_the_reference():
    rng = np.random.default_rng(0)
    weights = [rng.standard_normal((ROWS, DIM)).astype(np.float32) for _ in range(2)]
    phases = [False, True, True, False, False]  # random -> skewed -> random
    k_bytes = 4 * DIM * 4  # the carve-out holds 4 rows
    served, previous = [], None
    with AdaptiveServer(weights, every=2, persisting_bytes=k_bytes) as server:
        for i, skewed in enumerate(phases):
            batch = _batch(rng, skewed)
            out, s = server(batch)
            host = out.copy_to_host()
            for t in range(2):
                tb = batch.table(t)
                ref = reference.embedding_bag(tb.indices, weights[t], tb.offsets, mode="sum", include_last_offset=True)
                np.testing.assert_allclose(host[t * BAGS:(t + 1) * BAGS], ref, rtol=1e-5, atol=1e-5)
            # the rule, asked directly with the same ids, on the batches the server re-decides at
            assert s.decided == (i % 2 == 0)
            if s.decided:
                ids = [batch.table(t).indices for t in range(2)]
                previous = rules.choose_layout(ids, DIM * 4, k_bytes, previous=previous, pooling_mean=POOL)
            assert (s.layout, s.reason) == (previous.layout, previous.reason)
            served.append(s)
    layouts = [s.layout for s in served]
    # decided at 0 (random: plain), 2 (skewed: split-hot) and 4 (random: plain again); between decisions the
    # layout stays, though batch 1's ids are already skewed and batch 3's random again
    assert layouts == ["plain", "plain", "split-hot", "split-hot", "plain"]
    assert [s.repacked for s in served] == [False, False, True, False, True]
    assert served[-1].repacks == 2 and served[2].params()["layout_reason"].startswith("the 4 hottest rows")
    assert served[3].hot_share == served[2].hot_share  # not re-decided at 3: the choice of batch 2 serves


def test_the_server_refuses_a_batch_of_other_tables():
    w = [np.zeros((8, 4), np.float32)]
    with AdaptiveServer(w) as server, pytest.raises(DlrmlabError, match="2 tables, the server 1"):
        server(_batch(np.random.default_rng(0), False))
    with pytest.raises(DlrmlabError, match="every must be positive"):
        AdaptiveServer(w, every=0)


def test_a_sampled_share_is_exact_below_the_sample_and_separates_skew_above_it():
    rng = np.random.default_rng(1)
    flat, skewed = [rng.integers(0, 100_000, 50_000)], [rng.zipf(1.5, 50_000) % 100_000]
    assert rules.sampled_share(flat, 100, 10**6) == rules.hot_share(flat, 100)
    assert rules.sampled_share(flat, 1000, 5000) < 0.2 < 0.75 < rules.sampled_share(skewed, 1000, 5000)
