"""DLRM end to end on the CPU: the model, the embedding-stage module and its plug-ins (through Numba's CUDA
simulator where there is no GPU), errors, timing rows, CLI and figures. Sizes are tiny: every simulated
launch costs about a second."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")

from dlrmlab import backend, reference  # noqa: E402
from dlrmlab.dlrm.embedding import EmbeddingBagCollection, embedding_names, resolve  # noqa: E402
from dlrmlab.dlrm.kjt import KeyedJaggedTensor  # noqa: E402
from dlrmlab.dlrm.model import DLRM, make_dense  # noqa: E402
from dlrmlab.errors import DlrmlabError  # noqa: E402
from dlrmlab.workload import Workload, preset  # noqa: E402

pytestmark = pytest.mark.torch
DEV = "cpu" if backend.SIMULATOR else "cuda"


@pytest.fixture(scope="module")
def tiny():
    stage = preset("tiny")
    wl = Workload(stage, "medium", seed=3)
    batch = wl.batch()
    return stage, batch, wl.make_tables(), KeyedJaggedTensor.from_batch(batch, DEV)


def _ref(batch, tables):
    return [reference.embedding_bag(tb.indices, w, tb.offsets, mode="sum", include_last_offset=True)
            for tb, w in zip(batch.tables, tables, strict=True)]  # fmt: skip


def _model(stage, impl="torch", **kw):
    d = stage.embedding_dim
    return DLRM(impl, arch_mlp_bot=(16, 24, d), arch_mlp_top=(12, 1), embedding_sizes=stage.embedding_sizes,
                seed=1, device=DEV, **kw)  # fmt: skip


# --- the batch -------------------------------------------------------------------------------------------


def test_kjt_from_batch_splits_per_key_without_device_reads(tiny):
    stage, batch, _, kjt = tiny
    assert kjt.stride == stage.batch_size and kjt.num_keys == stage.num_tables
    assert kjt.length_per_key == [tb.indices.size for tb in batch.tables]
    for (ids, off, w), tb in zip(kjt.split(), batch.tables, strict=True):
        np.testing.assert_array_equal(ids.cpu().numpy(), tb.indices)
        np.testing.assert_array_equal(off.cpu().numpy(), tb.offsets)
        assert w is None
    # TorchRec's constructor gives the same batch
    lengths = torch.from_numpy(np.concatenate([np.diff(tb.offsets) for tb in batch.tables]))
    k2 = KeyedJaggedTensor.from_lengths(kjt.keys, kjt.values.cpu(), lengths)
    np.testing.assert_array_equal(k2.offsets.numpy(), kjt.offsets.cpu().numpy())
    assert k2.length_per_key == kjt.length_per_key
    assert kjt.table_offsets().cpu().tolist() == [stage.batch_size * t for t in range(stage.num_tables + 1)]


def test_kjt_rejects_inconsistent_shapes(tiny):
    _, _, _, kjt = tiny
    with pytest.raises(DlrmlabError, match="do not split into 3 keys"):
        KeyedJaggedTensor(kjt.keys, kjt.values, kjt.offsets[:-1], kjt.length_per_key)
    with pytest.raises(DlrmlabError, match="length_per_key"):
        KeyedJaggedTensor(kjt.keys, kjt.values, kjt.offsets, [1, 2, 3])
    with pytest.raises(DlrmlabError, match="integer ids"):
        KeyedJaggedTensor(kjt.keys, kjt.values.float(), kjt.offsets, kjt.length_per_key)
    other = KeyedJaggedTensor(kjt.keys[:2], kjt.values[:10], kjt.offsets[:17], [5, 5])
    with pytest.raises(DlrmlabError, match="same keys and shapes"):
        kjt.copy_(other)


# --- names -----------------------------------------------------------------------------------------------


def test_names_resolve_to_implementation_and_execution():
    assert resolve("fast_graph") == ("fast", "graph")
    assert resolve("rpf") == ("rpf", "eager")
    assert resolve("torch_compile") == ("torch", "compile")
    assert {"torch", "fast", "fast_graph", "torch_compile", "optmt_rpf"} <= set(embedding_names())
    with pytest.raises(DlrmlabError, match="torch.compile applies"):
        resolve("rpf_compile")
    with pytest.raises(DlrmlabError, match="valid: torch"):
        resolve("nope")


# --- the embedding stage -----------------------------------------------------------------------------------


@pytest.mark.parametrize("impl", ["torch", "baseline", "fast"])
def test_plugins_match_the_reference(tiny, impl):
    _, batch, tables, kjt = tiny
    ebc = EmbeddingBagCollection.from_arrays(tables, impl, device=DEV)
    out = [o.cpu().numpy() for o in ebc(kjt)]
    for o, r in zip(out, _ref(batch, tables), strict=True):
        np.testing.assert_allclose(o, r, rtol=1e-5, atol=1e-5)


def test_tables_are_held_once_and_shared(tiny):
    stage, _, tables, _ = tiny
    ebc = EmbeddingBagCollection.from_arrays(tables, "torch", device=DEV)
    other = ebc.with_impl("fast_graph")
    assert other.weight.data_ptr() == ebc.weight.data_ptr() and other.execution == "graph"
    assert ebc.table(1).data_ptr() == ebc.weight.data_ptr() + stage.embedding_sizes[0] * stage.embedding_dim * 4
    packed = ebc._packed()
    if backend.SIMULATOR:  # the simulator's array wraps the tensor's memory
        assert np.shares_memory(packed.packed._ary, ebc.weight.numpy())
    else:
        assert packed.packed.device_ctypes_pointer.value == ebc.weight.data_ptr()


def test_drop_in_for_a_list_of_embedding_bags(tiny):
    _, batch, _, _ = tiny
    torch.manual_seed(0)
    bags = [torch.nn.EmbeddingBag(n, 32, mode="sum").to(DEV) for n in (50, 70, 90)]
    ebc = EmbeddingBagCollection.from_embedding_bags(bags, "fast")
    assert not ebc.include_last_offset
    ids = [torch.randint(0, n, (12,), device=DEV) for n in (50, 70, 90)]
    offs = [torch.tensor([0, 3, 3, 7], device=DEV) for _ in range(3)]  # 4 bags, one empty, last offset implied
    want = [b(i, o) for b, i, o in zip(bags, ids, offs, strict=True)]
    for impl in ("torch", "fast"):
        got = ebc.with_impl(impl).forward_tables(ids, offs)
        for g, w in zip(got, want, strict=True):
            torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)
    bags[0].weight.data.zero_()  # copied once: the module does not follow later changes of the source
    assert ebc.table(0).abs().sum() > 0
    with pytest.raises(DlrmlabError, match="padding_idx"):
        EmbeddingBagCollection.from_embedding_bags([torch.nn.EmbeddingBag(5, 4, padding_idx=0)])


def test_validation_happens_before_any_launch(tiny, monkeypatch):
    _, _, tables, kjt = tiny
    import dlrmlab.fused

    def boom(*a, **k):
        raise AssertionError("launched")

    monkeypatch.setattr(dlrmlab.fused, "fused_forward", boom)
    meta = EmbeddingBagCollection([1000, 700, 1500], 32, "fast", weight=torch.empty((3200, 32), device="meta"))
    with pytest.raises(DlrmlabError, match="tables are on meta but the sparse inputs on"):
        meta(kjt)
    two = EmbeddingBagCollection.from_arrays(tables[:2], "fast", device=DEV)
    with pytest.raises(DlrmlabError, match="3 keys, the embedding stage 2 tables"):
        two(kjt)


# --- the model -------------------------------------------------------------------------------------------


def _dlrm_by_hand(m: DLRM, dense, pooled):
    """facebookresearch/dlrm's dot interaction, written out."""
    x = m.bot_l(dense)
    feats = [x, *pooled]
    dots = [(feats[i] * feats[j]).sum(1) for i in range(len(feats)) for j in range(i)]
    return m.top_l(torch.cat([x, torch.stack(dots, 1)], 1))


def test_dlrm_forward_is_dlrms(tiny):
    stage, _, _, kjt = tiny
    m = _model(stage)
    dense = make_dense(stage.batch_size, 16, seed=2, device=DEV)
    with torch.inference_mode():
        p = m(dense, kjt)
        want = _dlrm_by_hand(m, dense, m.embedding(kjt))
    assert p.shape == (stage.batch_size, 1) and bool(((p > 0) & (p < 1)).all())
    assert m.num_interactions == 32 + 4 * 3 // 2 and m.top_l[0].in_features == m.num_interactions
    torch.testing.assert_close(p, want, rtol=1e-5, atol=1e-6)
    ids, offs = [v for v, _, _ in kjt.split()], [o for _, o, _ in kjt.split()]
    with torch.inference_mode():
        torch.testing.assert_close(m.forward_lists(dense, ids, offs), p)


def test_dlrm_with_fast_embedding_agrees_with_torch(tiny):
    stage, _, _, kjt = tiny
    m = _model(stage)
    dense = make_dense(stage.batch_size, 16, seed=2, device=DEV)
    with torch.inference_mode():
        want = m(dense, kjt)
        got = m.with_embedding("fast")(dense, kjt)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert m.embedding.impl == "torch"  # with_embedding left the original alone


def test_dlrm_errors_name_the_shapes(tiny):
    stage, _, _, kjt = tiny
    m = _model(stage)
    with pytest.raises(DlrmlabError, match=r"\(8, 13\) are 13 wide but the bottom MLP \(arch_mlp_bot 16-24-32\)"):
        m(torch.zeros(8, 13, device=DEV), kjt)
    with pytest.raises(DlrmlabError, match=r"batch sizes differ: dense \(4, 16\) has 4 samples.* 8"):
        m(torch.zeros(4, 16, device=DEV), kjt)
    with pytest.raises(DlrmlabError, match="embedding width 32 does not match the interaction.* ends at 64"):
        DLRM(m.embedding, arch_mlp_bot=(16, 64))
    with pytest.raises(DlrmlabError, match="float32"):
        m(torch.zeros(8, 16, dtype=torch.float64, device=DEV), kjt)


# --- measurement, CLI, figures -----------------------------------------------------------------------------


def test_run_dlrm_rows_in_the_simulator():
    from dlrmlab.dlrm.measure import ROW_COLUMNS, run_dlrm

    if not backend.SIMULATOR:
        pytest.skip("CPU check of the simulator path")
    df, skipped = run_dlrm(["fast", "fast_graph"], ["random"], "tiny", repeats=1, n_batches=1)
    assert list(df.columns) == ROW_COLUMNS
    assert list(df["pipeline"]) == ["torch", "fast"] and df["correct"].all()
    assert not df["timing_valid"].any() and (df["latency_ms"] > 0).all() and (df["embedding_ms"] > 0).all()
    assert df.loc[df["pipeline"] == "torch", "speedup_vs_torch"].item() == 1.0
    assert "fast_graph" in skipped and "CUDA GPU" in skipped["fast_graph"]


def test_cli_dlrm_writes_rows_and_figures(tmp_path, capsys):
    from dlrmlab.cli import main

    if not backend.SIMULATOR:
        pytest.skip("CPU check of the simulator path")
    rc = main(["dlrm", "--embedding", "torch", "--dataset", "random,high", "--repeats", "1", "--batches", "1",
               "--out", str(tmp_path), "--plots"])  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 0 and "simulator mode" in out and "no times shown" in out
    df = pd.read_csv(tmp_path / "simulator" / "dlrm.csv")
    assert len(df) == 2 and set(df["dataset"]) == {"random", "synthetic-high"}
    assert (tmp_path / "simulator" / "dlrm_breakdown.png").stat().st_size > 0
    assert main(["dlrm", "--embedding", "warp9", "--out", str(tmp_path)]) == 2
    assert "unknown embedding 'warp9'" in capsys.readouterr().err


def _fake_rows() -> pd.DataFrame:
    rows = []
    for ds in ("random", "synthetic-high"):
        for b in (256, 2048):
            for name, ex, lat in (("torch", "eager", 1.5), ("fast", "eager", 0.9), ("fast_graph", "graph", 0.5)):
                split = ex == "eager"
                rows.append({"pipeline": name, "execution": ex, "embedding": name.split("_")[0], "dataset": ds,
                             "batch_size": b, "latency_ms": lat * b / 2048, "samples_per_s": b / lat * 1e3,
                             "bottom_mlp_ms": 0.1 if split else np.nan, "embedding_ms": lat - 0.3 if split else np.nan,
                             "interaction_ms": 0.1 if split else np.nan, "top_mlp_ms": 0.1 if split else np.nan,
                             "speedup_vs_torch": 1.5 / lat, "correct": True, "timing_valid": True,
                             "timestamp": "2026-01-01"})  # fmt: skip
    return pd.DataFrame(rows)


def test_figures_say_one_thing_each():
    from dlrmlab.dlrm import plots

    df = _fake_rows()
    fig = plots.stage_breakdown(df)
    assert "batch 2048" in fig._suptitle.get_text() and len(fig.axes) == 2
    assert fig.axes[0].get_ylabel() == "time per batch (ms)"
    fig = plots.speedup_by_dataset(df)
    assert "speedup" in fig.axes[0].get_ylabel() and "1.77x" in " ".join(
        t.get_text() for t in fig.axes[0].get_legend().get_texts())
    fig = plots.latency_vs_throughput(df, "synthetic-high")
    assert fig.axes[0].get_xlabel() == "throughput (samples/s)" and len(fig.axes[0].lines) == 3
    with pytest.raises(DlrmlabError, match="no timed rows"):
        plots.stage_breakdown(df.assign(correct=False))
    traced = df.replace({"dataset": {"synthetic-high": "trace:/home/me/data/reuse_medium_500K.txt"}})
    fig = plots.speedup_by_dataset(traced)
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert "medium-reuse trace" in labels and not any("/home" in lab for lab in labels)


def test_best_pipelines_reports_targets_and_the_paper():
    from dlrmlab.dlrm.measure import best_pipelines

    best = best_pipelines(_fake_rows())
    high = best[best["dataset"] == "synthetic-high"].iloc[0]
    assert high["best"] == "fast_graph" and high["speedup_vs_torch"] == pytest.approx(3.0)
    assert high["target_vs_torch"] == 2.5 and high["paper_end_to_end"] == 1.77


def test_embedding_module_bounds_check_modes():
    """``bounds_check`` on the torch module: the fast kernel skips a bad id (ignore) or raises naming it
    (fatal), with ``validate=False`` (no host copy of the ids); refused where the fast kernel does not read."""
    ebc = lambda impl="fast", **kw: EmbeddingBagCollection([6, 5], 8, impl, device=DEV, validate=False, **kw)  # noqa: E731
    ids = torch.tensor([0, 5, 7, 1, 4, 2], device=DEV)  # 7 is outside table 0 (6 rows)
    kjt = KeyedJaggedTensor.from_lengths(["t0", "t1"], ids, torch.tensor([2, 1, 2, 1]))
    good = KeyedJaggedTensor.from_lengths(["t0", "t1"], torch.tensor([0, 5, 0, 1, 4, 2], device=DEV),
                                          torch.tensor([2, 1, 2, 1]))  # fmt: skip
    want = [t.clone() for t in ebc()(good)]
    want[0][1] -= ebc().weight[0]  # the bad id's bag: row 0 stood in for it in ``good``
    got = ebc(bounds_check="ignore")(kjt)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g.cpu().numpy(), w.cpu().numpy(), rtol=1e-5, atol=1e-6)
    with pytest.raises(DlrmlabError, match=r"1 id\(s\) out of their table's range .* position 2 is 7"):
        ebc(bounds_check="fatal")(kjt)
    with pytest.raises(DlrmlabError, match="the fast kernel's device check"):
        ebc("torch", bounds_check="fatal")
    with pytest.raises(DlrmlabError, match="cannot hold: use 'ignore'"):
        ebc("fast_graph", bounds_check="warning")
    with pytest.raises(DlrmlabError, match="bounds_check must be one of"):
        ebc(bounds_check="strict")


def test_ratios_are_against_the_strongest_torch_form_of_the_same_run():
    from dlrmlab.dlrm.measure import best_pipelines, strongest_torch

    rows = []
    for run, (eager, graph, compiled) in (("r1", (1.5, 1.2, 1.6)), ("r2", (1.5, np.nan, 1.0))):
        for name, emb, lat, ok in (("torch", "torch", eager, True), ("torch_graph", "torch", graph, True),
                                   ("torch_compile", "torch", compiled, run == "r1"),
                                   ("fast_graph", "fast", 0.6, True)):
            rows.append({"run_id": run, "pipeline": name, "embedding": emb, "dataset": f"random-{run}",
                         "batch_size": 2048, "latency_ms": lat, "correct": ok, "speedup_vs_torch": eager / lat})
    d = strongest_torch(pd.DataFrame(rows)).set_index(["run_id", "pipeline"])
    assert d.loc[("r1", "fast_graph"), "best_torch"] == "torch_graph"  # faster than eager and compile
    assert d.loc[("r1", "fast_graph"), "speedup_vs_best_torch"] == pytest.approx(1.2 / 0.6)
    # r2: compile was fastest but wrong, the graph not measured: eager is the strongest correct form
    assert d.loc[("r2", "fast_graph"), "best_torch"] == "torch"
    best = best_pipelines(pd.DataFrame(rows)).set_index("dataset")
    assert best.loc["random-r1", "speedup_vs_best_torch"] == pytest.approx(2.0)
    assert pd.isna(best.loc["random-r1", "target_vs_best_torch"])  # no target for this dataset
