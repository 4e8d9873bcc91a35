"""Quantized tables against fp32 and the fp16 peers, in one run: what fewer bytes per row buy in speed.

One case of fp32 tables is generated; the others are the same tables and batches stored otherwise: fp16
(torch's ``embedding_bag``, NVIDIA cuEmbed and dlrmlab's fast path read it) and each quantized format
(quantized once, with torch on the GPU when there is one: NumPy takes minutes at the paper shape). Each case
is timed in the serving loop (:func:`dlrmlab.bench.comparison.compare`), one case after the other in the same
process; ``speedup_vs_fp32`` is fp32 ``fast_graph``'s median stage time over the row's. Rows also carry
effective rows/s and bytes/s (a row's stored bytes: codes, scale and bias), and, with
``accuracy=dlrmlab.accuracy.with_accuracy``, the format's error against fp32 (on the DLRM's own seeded tables;
passed in, since the accuracy check runs the DLRM model, a layer above measurement).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from dlrmlab import backend, quant
from dlrmlab.backend import cuda
from dlrmlab.bench.case import BenchCase
from dlrmlab.errors import DlrmlabError

DEFAULT_FORMATS = ("int8", "int4", "fp8")
RESULTS_NAME = "quantized"
#: The fp32 variant every ratio is taken against, and the fp16 peers.
REFERENCE = "fast_graph"
#: dlrmlab's own rows: ``fast_graph``, or its plain twin ``fast`` where the simulator runs it.
OURS = (REFERENCE, "fast")
FP16_PEERS = ("torch", "cuembed_graph")
ACCURACY_COLUMNS = ("pooled_max_abs_err", "pooled_mean_abs_err", "prob_max_abs_diff", "click_flip_share")


def stored_case(case: BenchCase, dtype: str) -> BenchCase:
    """``case`` (fp32 tables) with its tables stored as ``dtype`` (fp16, bf16 or a quantized format): same
    stage otherwise, same batches on the device."""
    from dlrmlab.workload import cast_table

    if case.dtype != "float32":
        raise DlrmlabError(f"stored_case needs a float32 case, got {case.dtype}")
    if quant.is_quantized(dtype):
        host = [quant.quantize_fast(t, dtype) for t in case.host_tables]
        dev: list = []  # the fast kernel packs the host rows; nothing reads per-table device copies
    else:
        host = [cast_table(t, dtype) for t in case.host_tables]
        dev = [cuda.to_device(np.ascontiguousarray(t).reshape(-1)) for t in host]
    return replace(case, stage=case.stage.with_(dtype=dtype), host_tables=host, dev_tables=dev, _refs={},
                   _derived={})  # fmt: skip


def plan(formats: Sequence[str], simulator: bool) -> list[tuple[str, list[str]]]:
    """(table dtype, variants) in the order they run: fp32 fast_graph, the fp16 peers (and dlrmlab's fp16),
    each quantized format. In the simulator the graph variant's plain twin and no cuEmbed."""
    fast = OURS[1] if simulator else REFERENCE
    peers = [p for p in FP16_PEERS if not (simulator and p.startswith("cuembed"))]
    return [("float32", [fast]), ("float16", [*peers, fast]), *[(f, [fast]) for f in formats]]


def run_quantized(
    formats: Sequence[str] = DEFAULT_FORMATS, dataset: str = "random", stage: Any = None, *, seed: int = 0,
    n_batches: int = 4, repeats: int | None = None, warmup_s: float | None = None, accuracy: Any = None,
    out: Any = None, progress: bool = False,
) -> pd.DataFrame:
    """Time every format (see the module docstring); rows appended to ``out``/quantized.csv when given."""
    from dlrmlab.bench import comparison, results
    from dlrmlab.workload import EmbeddingStage, preset

    formats = [f for f in formats if f]
    for f in formats:
        quant.row_format(f)
    stage = preset(stage or backend.default_preset()) if not isinstance(stage, EmbeddingStage) else stage
    stage = stage.with_(dtype="float32")
    for f in formats:
        quant.row_format(f).check_dim(stage.embedding_dim)
    if out is not None:
        results.check_results_dir(out)
    base = BenchCase.create(stage, dataset, seed, n_batches)
    run_id, frames = None, []
    for dtype, variants in plan(formats, backend.SIMULATOR):
        case = base if dtype == "float32" else stored_case(base, dtype)
        res = comparison.compare(case, variants, repeats=repeats, warmup_s=warmup_s, run_id=run_id, progress=progress)
        run_id = res.run_id
        frames.append(res.rows.assign(format=dtype))
        del case
    df = with_rates(pd.concat(frames, ignore_index=True, sort=False), stage)
    if accuracy is not None:
        df = accuracy(df, ["float16", *formats], dataset, stage, seed)
    if out is not None:
        results.append_results(df, RESULTS_NAME, out)
    return df


def with_rates(df: pd.DataFrame, stage: Any) -> pd.DataFrame:
    """Rows/s, stored bytes per row and bytes/s of each row, and its speedup over fp32 ``fast_graph``
    (``fast`` in the simulator)."""
    df = df.copy()
    lookups = stage.lookups_per_batch()
    ms = pd.to_numeric(df["median_ms"], errors="coerce")
    info = [quant.storage(f, stage.embedding_dim) for f in df["format"]]
    df["row_bytes"] = [i["row_bytes"] for i in info]
    df["row_stride"] = [i["row_stride"] for i in info]
    df["rows_per_s"] = lookups / (ms / 1e3)
    df["row_bytes_per_s"] = df["rows_per_s"] * df["row_bytes"]
    ref = df[(df["format"] == "float32") & df["variant"].isin(OURS)]["median_ms"]
    df["speedup_vs_fp32"] = float(ref.iloc[0]) / ms if len(ref) else np.nan
    return df


def latest_run(df: pd.DataFrame) -> pd.DataFrame:
    """The rows of the newest run in a ``quantized.csv`` (the file keeps every run; a figure or table shows one,
    whose ratios were all measured together)."""
    if df.empty:
        return df
    newest = df.loc[pd.to_datetime(df["timestamp"]).idxmax(), "run_id"]
    return df[df["run_id"] == newest]
