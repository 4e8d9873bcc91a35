"""DLRM end to end on a CUDA GPU: every embedding plug-in against torch, torch's current stream, whole-batch
CUDA-graph capture and replay, and one small measurement with every pipeline (torch.compile included:
about a minute of compiling)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from dlrmlab import reference  # noqa: E402
from dlrmlab.dlrm.embedding import EmbeddingBagCollection, implementations  # noqa: E402
from dlrmlab.dlrm.kjt import KeyedJaggedTensor  # noqa: E402
from dlrmlab.dlrm.model import DLRM, make_dense  # noqa: E402
from dlrmlab.errors import DlrmlabError  # noqa: E402
from dlrmlab.workload import Workload, preset  # noqa: E402

pytestmark = [pytest.mark.gpu, pytest.mark.torch]


@pytest.fixture(scope="module")
def case():
    """4 tables x 20,000 rows x 128 fp32, batch 512, 40 ids per bag, skewed ids; two batches."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA build of torch")
    stage = preset("paper", tables=4, rows=20_000, batch_size=512, pooling=40)
    wl = Workload(stage, "zipf:1.05", seed=5)
    batches = [wl.batch(), wl.batch()]
    return stage, batches, wl.make_tables(), [KeyedJaggedTensor.from_batch(b, "cuda") for b in batches]


def _clone(k: KeyedJaggedTensor) -> KeyedJaggedTensor:
    return KeyedJaggedTensor(k.keys, k.values.clone(), k.offsets.clone(), k.length_per_key, None,
                             [o.clone() for o in k.key_offsets])  # fmt: skip


@pytest.mark.parametrize("impl", list(implementations()))
def test_every_plugin_matches_torch(case, impl):
    _, batches, tables, kjts = case
    ebc = EmbeddingBagCollection.from_arrays(tables, impl, device="cuda")
    want = [w.clone() for w in ebc.with_impl("torch")(kjts[0])]
    got = [g.clone() for g in ebc(kjts[0])]
    torch.cuda.synchronize()
    for g, w in zip(got, want, strict=True):
        assert g.is_cuda and g.shape == w.shape
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)
    tb = batches[0].tables[0]
    ref = reference.embedding_bag(tb.indices, tables[0], tb.offsets, mode="sum", include_last_offset=True)
    np.testing.assert_allclose(got[0].cpu().numpy(), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("impl", ["rpf", "fast"])
def test_plugins_run_on_torchs_current_stream(case, impl):
    _, _, tables, kjts = case
    ebc = EmbeddingBagCollection.from_arrays(tables, impl, device="cuda")
    want = [w.clone() for w in ebc.with_impl("torch")(kjts[1])]
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        values = kjts[1].values.clone()  # made on s: a launch on another stream could read it too early
        k = KeyedJaggedTensor(kjts[1].keys, values, kjts[1].offsets, kjts[1].length_per_key, None,
                              kjts[1].key_offsets)  # fmt: skip
        got = [g.clone() for g in ebc(k)]
        if impl == "fast":
            handle = ebc._stream().handle
            assert int(getattr(handle, "value", handle)) == s.cuda_stream
    s.synchronize()
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)


def _model(stage) -> DLRM:
    return DLRM("torch", embedding_sizes=stage.embedding_sizes, seed=0)


@pytest.mark.parametrize("impl", ["fast", "torch", "rpf"])
def test_whole_batch_graph_replays_and_refills(case, impl):
    from dlrmlab.dlrm.graph import CapturedCall

    stage, _, _, kjts = case
    m = _model(stage)
    dense = [make_dense(stage.batch_size, seed=i, device="cuda") for i in range(2)]
    with torch.inference_mode():
        want = [m(dense[i], kjts[i]).clone() for i in range(2)]
        pm = m.with_embedding(impl)
        g = CapturedCall(pm, dense[0].clone(), _clone(kjts[0]))
        torch.testing.assert_close(g.replay().clone(), want[0], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(g.call(dense[1], kjts[1]).clone(), want[1], rtol=1e-5, atol=1e-6)
        pm(dense[0], kjts[0])  # eager calls in between (same buffers) do not break the next replay
        torch.testing.assert_close(g.replay().clone(), want[1], rtol=1e-5, atol=1e-6)
        g.close()


def test_tables_on_the_wrong_device_are_refused(case):
    _, _, tables, kjts = case
    ebc = EmbeddingBagCollection.from_arrays(tables, "fast", device="cuda")
    with pytest.raises(DlrmlabError, match="tables are on cuda:0 but the sparse inputs on cpu"):
        ebc(kjts[0].to("cpu"))
    cpu = EmbeddingBagCollection.from_arrays(tables, "fast", device="cpu")
    with pytest.raises(DlrmlabError, match="need the tables on a CUDA device"):
        cpu(kjts[0].to("cpu"))


def test_measurement_with_every_pipeline():
    """A small sweep (two batch sizes) with all pipelines, torch.compile included: rows are complete,
    outputs correct, timings valid."""
    from dlrmlab.dlrm.measure import run_dlrm

    stage = preset("paper", tables=4, rows=20_000, batch_size=256, pooling=20)
    names = ["optmt", "rpf", "fast", "fast_graph", "torch_graph", "rpf_graph"]
    df, skipped = run_dlrm(names, ["random"], stage,
                           batch_sizes=[128, 256], repeats=5, n_batches=2, warmup_s=0.05)  # fmt: skip
    assert skipped == {}
    assert set(df["pipeline"]) == {"torch", "torch_compile", *names}
    assert df["correct"].all() and df["timing_valid"].all() and (df["latency_ms"] > 0).all()
    eager = df["execution"] == "eager"
    assert (df.loc[eager, "embedding_ms"] > 0).all() and df.loc[~eager, "embedding_ms"].isna().all()
    assert df["speedup_vs_torch_compile"].notna().all()
