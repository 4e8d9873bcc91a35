"""Quantized tables where users meet them: the torch EmbeddingBagCollection, the DLRM pipeline, bench cases,
the accuracy table and the speed run's pieces (simulator, tiny sizes)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dlrmlab import accuracy, cli, quant, reference
from dlrmlab.bench import quantized
from dlrmlab.bench.case import BenchCase
from dlrmlab.errors import DlrmlabError
from dlrmlab.workload import preset

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch


def test_embedding_bag_collection_from_bags_quantized():
    from dlrmlab.dlrm.embedding import EmbeddingBagCollection

    torch.manual_seed(0)
    bags = [torch.nn.EmbeddingBag(n, 16, mode="mean") for n in (20, 30)]
    ids = [torch.randint(0, n, (9,)) for n in (20, 30)]
    offs = [torch.tensor([0, 4]), torch.tensor([0, 5])]
    ebc = EmbeddingBagCollection.from_embedding_bags(bags, impl="fast", dtype="int8")
    assert ebc.weight.dtype == torch.uint8 and ebc.weight.shape == (50, 32) and "dtype=int8" in repr(ebc)
    for b, i, o, out in zip(bags, ids, offs, ebc.forward_tables(ids, offs), strict=True):
        q = quant.quantize(b.weight.detach().numpy(), "int8")
        ref = reference.embedding_bag(i.numpy(), q, np.r_[o.numpy(), 9], mode="mean", include_last_offset=True,
                                      weight_format="int8")
        np.testing.assert_allclose(out.numpy(), ref, rtol=1e-5, atol=1e-6)
    with pytest.raises(DlrmlabError, match="fast kernel only"):
        EmbeddingBagCollection.from_embedding_bags(bags, impl="torch", dtype="int4")


def test_dlrm_serves_quantized_rows_and_torch_reads_their_values():
    from dlrmlab.dlrm.measure import Inputs, make_model
    from dlrmlab.workload import Workload

    stage = preset("tiny", dtype="int4", batch_size=2, embedding_sizes=(100, 60))
    model = make_model(stage, seed=1)
    fast = model.with_embedding("fast")
    assert fast.embedding.table_dtype == "int4" and model.embedding.table_dtype == "float32"
    inputs = Inputs.make(Workload(stage, "random", seed=1), model, 1)
    with torch.inference_mode():
        p_torch = model(inputs.dense[0], inputs.sparse[0])
        p_fast = fast(inputs.dense[0], inputs.sparse[0])
    torch.testing.assert_close(p_fast, p_torch, rtol=1e-5, atol=1e-6)


def test_bench_case_of_quantized_tables_and_cli(tmp_path, capsys):
    case = BenchCase.create(preset("tiny", dtype="fp8"), "random", n_batches=1)
    assert case.host_tables[0].dtype == np.uint8 and case.host_tables[0].shape[1] == 36
    assert case.stage.bytes_per_batch() == case.stage.lookups_per_batch() * 36 + 3 * 8 * 32 * 4
    rc = cli.main(["bench", "--variant", "fast", "--dataset", "random", "--table-dtype", "int8", "--no-torch",
                   "--batches", "1", "--tables", "1", "--batch", "2", "--repeats", "1", "--out", str(tmp_path),
                   "--quiet"])
    assert rc == 0 and "fast" in capsys.readouterr().out
    assert cli.main(["bench", "--variant", "baseline", "--dataset", "random", "--table-dtype", "int8",
                     "--no-torch", "--out", str(tmp_path), "--quiet"]) == 2


def test_stored_case_and_rates():
    base = BenchCase.create("tiny", "random", n_batches=1)
    q = quantized.stored_case(base, "int4")
    assert q.dtype == "int4" and q.host_batches is base.host_batches
    np.testing.assert_array_equal(q.host_tables[1], quant.quantize(base.host_tables[1], "int4"))
    half = quantized.stored_case(base, "float16")
    assert half.host_tables[0].dtype == np.float16 and len(half.dev_tables) == 3
    rows = pd.DataFrame({"variant": ["fast", "fast", "torch"], "format": ["float32", "int8", "float16"],
                         "median_ms": [2.0, 1.0, 4.0]})
    df = quantized.with_rates(rows, base.stage)
    assert df["speedup_vs_fp32"].tolist() == [1.0, 2.0, 0.5]
    assert df["row_bytes"].tolist() == [128, 40, 64] and df["row_stride"].tolist() == [128, 48, 64]
    lookups = base.stage.lookups_per_batch()
    assert df["rows_per_s"].iloc[1] == pytest.approx(lookups / 1e-3)
    assert quantized.plan(["int8"], simulator=True) == [("float32", ["fast"]), ("float16", ["torch", "fast"]),
                                                        ("int8", ["fast"])]


def test_accuracy_table_orders_the_formats():
    df = accuracy.accuracy(["float16", "int8", "int4"], ["random"], preset("tiny", batch_size=4))
    assert list(df["format"]) == ["float16", "int8", "int4"] and (df["samples"] == 4).all()
    err = df.set_index("format")["pooled_max_abs_err"]
    assert 0 < err["float16"] < err["int8"] < err["int4"]
    assert (df["click_flip_share"].between(0, 1)).all() and (df["prob_max_abs_diff"] >= 0).all()
    assert df.set_index("format")["row_bytes"].to_dict() == {"float16": 64, "int8": 40, "int4": 20}
    with pytest.raises(DlrmlabError, match="unknown table format"):
        accuracy.check_formats(["int2"])


def test_accuracy_rows_join_speed_rows_by_format():
    """Errors computed elsewhere (a CPU) join the speed rows of one dataset by format; fp32 rows get 0, and
    columns already there are replaced, not duplicated."""
    speed = pd.DataFrame({"format": ["float32", "int8", "int4"], "median_ms": [0.6, 0.3, 0.2],
                          "prob_max_abs_diff": [9.0, 9.0, 9.0]})  # fmt: skip
    cols = dict.fromkeys(quantized.ACCURACY_COLUMNS, 0.5)
    acc = pd.DataFrame([{"format": "int8", "dataset": "random", **cols},
                        {"format": "int8", "dataset": "zipf:1.05", **dict.fromkeys(cols, 7.0)}])  # fmt: skip
    got = accuracy.attach_accuracy(speed, acc, "random").set_index("format")
    assert list(got.columns).count("prob_max_abs_diff") == 1
    assert got.loc["float32", "prob_max_abs_diff"] == 0.0 and got.loc["int8", "click_flip_share"] == 0.5
    assert pd.isna(got.loc["int4", "pooled_max_abs_err"])  # no accuracy row for it: missing, not invented


def test_a_figure_takes_the_newest_run_of_a_results_file():
    """results/h100/quantized.csv keeps every run; the notebook's figure shows one, whose ratios share a run."""
    rows = pd.DataFrame({"run_id": ["a", "a", "b", "b"], "format": ["float32", "int8"] * 2,
                         "timestamp": ["2026-12-06T10:41:01+00:00", "2026-12-06T10:41:40+00:00",
                                       "2026-12-06T15:06:52+00:00", "2026-12-06T15:07:32+00:00"],
                         "speedup_vs_fp32": [1.0, 1.25, 1.0, 2.48]})  # fmt: skip
    assert quantized.latest_run(rows)["speedup_vs_fp32"].tolist() == [1.0, 2.48]
    assert quantized.latest_run(rows.iloc[:0]).empty
