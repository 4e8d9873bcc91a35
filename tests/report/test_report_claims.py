"""The report's GPU path without a GPU: every claim analysed, drawn and written from synthetic measurements
shaped like the harness's, DLRM's and ncu's rows (``timing_valid=True``), so a mistake in the paper-preset path
shows up here rather than on the device. Plus the figure conventions and the markdown helpers."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from dlrmlab.report import claims, style, writer
from dlrmlab.report.context import ClaimSkipped, Context, resolve_datasets

DATASETS = ["trace:medium", "synthetic-high", "random"]
#: kernel-time speedup over PyTorch's kernel of each variant (stage time a bit lower: launches count)
GAIN = {"torch": 0.95, "baseline": 1.0, "optmt": 1.05, "optmt_rpf": 1.12, "rpf": 1.08, "rpf_l1": 0.8,
        "rpf_shared": 1.02, "l2p": 1.3, "optmt_l2p": 1.3, "combined": 1.4, "l2window": 1.1, "fast_graph": 2.5,
        "fast_graph+window": 3.0, "fast": 1.6}  # fmt: skip


class FakeGpu(Context):
    """A Context whose measurements are synthetic GPU rows (nothing runs)."""

    @property
    def simulator(self) -> bool:
        return False

    def runnable(self, specs):
        ok = [s for s in specs if not s[1].startswith("cuembed")]
        return ok, {s[0]: "cuEmbed peer unavailable: set DLRMLAB_CUEMBED_DIR" for s in specs if s not in ok}

    def compare(self, dataset, specs):
        rows = []
        for label, name, params in specs:
            g = GAIN[name] * (1 + 0.02 * params.get("prefetch_distance", 0)) / params.get("pin_every", 1) ** 0.02
            rows.append({"config": label, "variant": name, "dataset": dataset, "params": str(params),
                         "kernel_ms": 0.9 / g, "median_ms": 1.2 / (0.9 * g + 0.1), "speedup_vs_torch": g / 0.95,
                         "correct": True, "error": None, "max_rel_err": 1e-7, "timing_valid": True, "n_runs": 30})
        return pd.DataFrame(rows)

    def dlrm(self):
        rows = []
        for ds in self.datasets:
            for p, g in (("torch", 1.0), ("baseline", 1.0), ("optmt_rpf", 1.1), ("fast_graph", 2.2),
                         ("torch_graph", 1.1)):
                emb = 1.0 / g
                rows.append({"pipeline": p, "embedding": p, "execution": "eager", "dataset": ds, "batch_size": 2048,
                             "latency_ms": emb + 0.2, "bottom_mlp_ms": 0.05, "embedding_ms": emb,
                             "interaction_ms": 0.05, "top_mlp_ms": 0.1, "staged_total_ms": emb + 0.2,
                             "embedding_share": emb / (emb + 0.2), "speedup_vs_torch": 1.2 / (emb + 0.2),
                             "correct": True, "error": None, "embedding_rel_err": 1e-7, "timing_valid": True})
        return pd.DataFrame(rows), {}

    def shape_grid(self, datasets):
        rows = []
        for dim in (32, 64, 128, 256):
            for ds in datasets:
                for name, ms, p in (("torch", 1.0, {}), ("cuembed_graph", 0.5, {"layout": "fixed"}),
                                    ("fast_graph", 0.4 if dim < 256 else 0.52, {"layout": "plain", "hot_share": 0.1,
                                                                                 "config_source": "rule"})):
                    rows.append({"variant": name, "dataset": ds, "dim": dim, "batch": 2048, "pooling": 150,
                                 "median_ms": ms, "correct": True, "params": json.dumps(p), "effective_gbps": 1.0})
        return pd.DataFrame(rows)

    def quantized(self):
        return pd.DataFrame([{"variant": v, "format": f, "median_ms": ms, "row_bytes": b, "speedup_vs_fp32": 0.6 / ms,
                              "correct": True, "timing_valid": True}
                             for v, f, ms, b in (("fast_graph", "float32", 0.6, 512), ("torch", "float16", 1.0, 256),
                                                 ("fast_graph", "float16", 0.3, 256), ("fast_graph", "int8", 0.24, 136),
                                                 ("fast_graph", "int4", 0.21, 68), ("fast_graph", "fp8", 0.25, 132))])

    def ncu(self, variant):
        return pd.DataFrame([{"kernel": "k", "registers": 45, "theoretical_occupancy": 0.625,
                              "achieved_occupancy": 0.55, "occupancy_limiter": "registers",
                              "stall_long_scoreboard_share": 0.64, "stall_long_scoreboard_cpi": 20.0,
                              "stall_wait_share": 0.1, "stall_wait_cpi": 3.0, "stall_selected_share": 0.05,
                              "stall_selected_cpi": 1.0}])  # fmt: skip


@pytest.fixture
def ctx(monkeypatch):
    c = FakeGpu("paper", DATASETS, env={"gpu": "NVIDIA H100 80GB HBM3 (sm_90, 132 SMs, L2 50 MiB)", "mode": "gpu",
                                        "family": "h100", "date": "2026-11-26 12:00 UTC", "command": "dlrmlab x",
                                        "versions": {"numba": "0.68"}})  # fmt: skip
    pred = pd.DataFrame([{"dataset": ds, "label": style.dataset_label(ds), "variant": v, "hit_rate": h}
                         for ds in DATASETS for v, h in zip(claims.L2_VARIANTS, (0.3, 0.5, 0.4, 0.3, 0.45),
                                                            strict=True)])  # fmt: skip
    c._memo["l2model"] = (True, (pred, "quarter scale"))
    monkeypatch.setattr(claims, "_compiled", lambda ctx, v: {"registers": 45 if v == "baseline" else 40,
                                                              "spill_bytes": 0, "theoretical_occupancy": 0.625,
                                                              "occupancy_limiter": "registers"})  # fmt: skip

    def fake_tune(stage, ds, variant, caps, repeats, progress):
        return pd.DataFrame([{"variant": "optmt", "dataset": ds, "max_registers": c,
                              "registers": 45 if c is None else min(c, 45), "theoretical_occupancy": 0.625,
                              "kernel_ms": 0.9 if c is None else 0.85, "median_ms": 1.0, "correct": True,
                              "error": None, "timing_valid": True} for c in caps])  # fmt: skip

    monkeypatch.setattr(claims, "tune_register_cap", fake_tune)
    return c


@pytest.mark.parametrize("name", [n for n in claims.CLAIMS if n != "hotness"])
def test_every_claim_on_gpu_rows(ctx, name, tmp_path):
    res = claims.CLAIMS[name].run(ctx)
    assert res.status == "ok" and res.figure is not None and res.text
    assert res.reproduced in (claims.YES, claims.PARTLY, claims.NO, claims.BEYOND)
    assert "simulator" not in res.text and "nan" not in res.ours.lower()
    assert len(res.text.split(". ")) <= 5
    w = writer.ReportWriter(tmp_path, ctx, None, [name], claims.CLAIMS)
    w.add(claims.CLAIMS[name], res, 1.0)
    report = (tmp_path / writer.REPORT).read_text()
    assert (tmp_path / f"{name}.png").is_file() and (tmp_path / f"{name}.svg").is_file()
    assert "No timings were taken" not in report and "NVIDIA H100 80GB HBM3" in report
    assert "trace:" not in report.split("## Summary")[1]  # datasets by label


def test_gpu_verdicts_compare_with_the_paper(ctx):
    conf = claims.configurations(ctx)
    assert conf.reproduced == claims.PARTLY and "1.40x" in conf.ours and "2.03x" in conf.text
    assert set(conf.data["label"]) == {"medium-reuse trace", "high reuse (synthetic)", "uniform random"}
    l2p = claims.l2p(ctx)
    assert "pin cost excluded" in l2p.ours and l2p.reproduced in (claims.YES, claims.PARTLY)
    beyond = claims.beyond(ctx)
    assert beyond.reproduced == claims.BEYOND and any("cuEmbed" in n for n in beyond.notes)
    e2e = claims.end_to_end(ctx)
    assert e2e.reproduced == claims.PARTLY and "1.77x" in e2e.text
    # against the strongest all-PyTorch form of the run: torch_graph (1.109 ms), not eager (1.2 ms)
    assert "strongest all-PyTorch form of the same run (eager, one CUDA graph), it reaches 1.69x" in e2e.text
    assert "torch_graph" not in set(e2e.data["pipeline"])
    assert claims.occupancy(ctx).reproduced == claims.YES
    assert claims.stalls(ctx).reproduced == claims.YES
    assert claims.embedding_share(ctx).reproduced == claims.YES


def test_verdict_thresholds():
    assert claims.verdict(2.0, 2.03) == claims.YES
    assert claims.verdict(1.2, 2.03) == claims.PARTLY
    assert claims.verdict(1.01, 2.03) == claims.NO
    assert claims.verdict(math.nan, 2.03) == claims.NO


def test_ncu_missing_skips_with_the_reason(monkeypatch):
    c = Context("tiny", ["random"])
    monkeypatch.setattr(Context, "simulator", property(lambda self: False))
    monkeypatch.setattr("shutil.which", lambda name, *a, **k: None)
    with pytest.raises(ClaimSkipped, match="`ncu` is not on PATH"):
        c.ncu("baseline")


@pytest.mark.parametrize("dataset, label", [
    ("trace:/x/y/reuse_low_500K.txt", "low-reuse trace"),
    ("trace:low", "low-reuse trace"),
    ("trace:reuse_medium_500K.txt", "medium-reuse trace"),
    ("trace:/data/datasets/reuse_medium/table_500K.txt", "medium-reuse trace"),
    ("trace:/home/me/my_ids.txt", "trace my_ids"),
    ("synthetic-high", "high reuse (synthetic)"),
    ("random", "uniform random"),
    ("zipf:1.05", "Zipf 1.05 (synthetic)"),
])  # fmt: skip
def test_dataset_labels_carry_no_paths(dataset, label):
    assert style.dataset_label(dataset) == label


def test_one_colour_per_technique():
    from dlrmlab.variants import TECHNIQUES

    colours = [t.color for t in TECHNIQUES.values()]
    assert len(set(colours)) == len(colours)
    assert style.color("optmt_rpf") == style.color("rpf") == style.color("rpf_l1")
    assert style.color("l2window") == TECHNIQUES["window"].color
    s = style.bar_style("fast_graph+window")
    assert s["color"] == TECHNIQUES["fast"].color and s["edgecolor"] == TECHNIQUES["window"].color
    assert "hatch" not in style.bar_style("fast_graph") and style.color("no such variant") == style.color("baseline")
    assert len(style.shades("optmt", 4)) == 4 and style.shades("optmt", 0) == []


def test_md_table_formats_by_column():
    df = pd.DataFrame({"label": ["a|b"], "speedup_kernel": [1.234], "embedding_share": [0.5], "median_ms": [0.12345],
                       "max_rel_err": [3e-8], "registers": [45.0], "correct": [True], "x": [np.nan]})
    t = writer.md_table(df)
    assert "a\\|b | 1.23x | 50.0% | 0.1235 | 3.0e-08 | 45 | yes | – |" in t


def test_default_datasets_skip_missing_traces(tmp_path, monkeypatch):
    monkeypatch.setenv("DLRMLAB_DATA_DIR", str(tmp_path))
    usable, skipped = resolve_datasets(None)
    assert usable == ["synthetic-high", "random"]
    assert set(skipped) == {"trace:low", "trace:medium"}  # not here, and not downloaded (the tests are offline)
    for label, why in skipped.items():
        assert "DLRMLAB_OFFLINE is set" in why and "dlrmlab data fetch" in why and "fitted to it instead" in why
        assert "\n" not in why, label


def test_the_report_shows_the_committed_quantized_run_without_a_gpu():
    """On a CPU the quantized claim shows the newest committed H100 run, labelled, beside the CPU error table."""
    from dlrmlab import backend
    from dlrmlab.explore import claim_context
    from dlrmlab.reproduce import run_claim

    if not backend.SIMULATOR or not claims.COMMITTED_QUANTIZED.exists():
        pytest.skip("measures on a GPU; needs the committed H100 run otherwise")
    res, _ = run_claim(claims.CLAIMS["quantized"], claim_context())
    assert res.status == "ok" and "committed results, not this machine" in res.ours
    assert res.data["run_id"].nunique() == 1 and {"int8", "int4", "fp8"} <= set(res.data["format"])
    assert "int8 2.49x" in res.ours and res.figure is not None and "accuracy" in res.tables
