"""What storing tables in fewer bytes costs in accuracy: per format, pooled embeddings and DLRM click
probabilities against the fp32 model, on the same seeded weights and batches.

Each format's tables are the values its rows hold (quantized, then dequantized: :mod:`dlrmlab.quant`; fp16
and bf16 by rounding), so the numbers are the format's, not a kernel's (the kernels are checked against
these values elsewhere). Everything here runs on the CPU (or wherever torch's tensors are), no GPU needed.

>>> accuracy(["int8", "int4"], ["random", "zipf:1.05"], "tiny")   # a tidy DataFrame, one row per pair
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from dlrmlab import quant
from dlrmlab.bench.quantized import ACCURACY_COLUMNS
from dlrmlab.config import TABLE_DTYPES
from dlrmlab.errors import DlrmlabError

#: The formats measured by default, widest first.
DEFAULT_FORMATS = ("float16", "bfloat16", "fp8", "int8", "int4")
RESULTS_NAME = "quantized_accuracy"


def check_formats(formats: Sequence[str]) -> list[str]:
    """``formats`` validated (float dtypes and quantized row formats)."""
    valid = [*TABLE_DTYPES, *quant.FORMATS]
    out = [str(f).strip() for f in formats if str(f).strip()]
    bad = [f for f in out if f not in valid]
    if bad or not out:
        raise DlrmlabError(f"unknown table format(s) {', '.join(bad) or '(none)'}; valid: {', '.join(valid)}")
    return out


def stored_values(weight: Any, fmt: str) -> Any:
    """The fp32 values a float32 torch tensor of rows holds once stored as ``fmt``."""
    import torch  # optional dependency

    if fmt in quant.FORMATS:
        return quant.dequantize_torch(quant.quantize_torch(weight, fmt), fmt, int(weight.shape[1]))
    return weight.to(getattr(torch, fmt)).float()


def _model_with_tables(model: Any, weight: Any) -> Any:
    """``model`` (dense layers shared) over other tables of the same shape."""
    from dlrmlab.dlrm.embedding import EmbeddingBagCollection

    e = model.embedding
    new = model.with_embedding("torch")
    new.embedding = EmbeddingBagCollection(e.embedding_sizes, e.embedding_dim, "torch", mode=e.mode, keys=e.keys,
                                           weight=weight, validate=False)  # fmt: skip
    return new


def _errors(ref: Any, emb: list, p_ref: Any, p: Any) -> dict:
    d = np.concatenate([(a - b).abs().flatten().cpu().numpy() for a, b in zip(emb, ref, strict=True)])
    norm = float(np.sqrt(sum(float((b * b).sum()) for b in ref)))
    dp = (p - p_ref).abs().flatten().cpu().numpy()
    flips = ((p >= 0.5) != (p_ref >= 0.5)).flatten().cpu().numpy()
    return {
        "pooled_max_abs_err": float(d.max(initial=0.0)), "pooled_mean_abs_err": float(d.mean()) if d.size else 0.0,
        "pooled_rel_err": float(np.sqrt((d.astype(np.float64) ** 2).sum()) / max(norm, 1e-30)),
        "prob_max_abs_diff": float(dp.max(initial=0.0)), "prob_mean_abs_diff": float(dp.mean()) if dp.size else 0.0,
        "click_flip_share": float(flips.mean()) if flips.size else 0.0, "samples": int(dp.size),
    }  # fmt: skip


def accuracy(
    formats: Sequence[str] = DEFAULT_FORMATS, datasets: Sequence[str] = ("random",), stage: Any = "tiny",
    seed: int = 0, n_batches: int = 1,
) -> pd.DataFrame:
    """One row per (format, dataset): storage (bytes per row), the tables' own error, the pooled embeddings'
    max / mean / relative error against fp32, and the DLRM click probabilities' max and mean |difference| and
    the share of samples whose predicted click (p >= 0.5) flips. The DLRM is the paper artifact's (bottom
    MLP 256-128-dim, top 128-64-1) with DLRM's seeded initialisation; ``n_batches`` batches per dataset."""
    import torch  # optional dependency

    from dlrmlab.datasets import canonical_name
    from dlrmlab.dlrm.measure import Inputs, make_model
    from dlrmlab.workload import EmbeddingStage, Workload, preset

    formats = check_formats(formats)
    stage = preset(stage) if not isinstance(stage, EmbeddingStage) else stage
    stage = stage.with_(dtype="float32")
    if not datasets:
        raise DlrmlabError("need at least one dataset")
    rows = []
    with torch.inference_mode():
        model = make_model(stage, seed)
        cases = []
        for ds in datasets:
            inputs = Inputs.make(Workload(stage, ds, seed=seed), model, int(n_batches))
            refs = [(model.embedding(s), model(d, s)) for d, s in zip(inputs.dense, inputs.sparse, strict=True)]
            cases.append((canonical_name(ds), inputs, refs))
        w = model.embedding.weight
        for fmt in formats:
            values = stored_values(w, fmt)
            other = _model_with_tables(model, values)
            table_err = float((values - w).abs().max())
            for ds, inputs, refs in cases:
                got = [(other.embedding(s), other(d, s)) for d, s in zip(inputs.dense, inputs.sparse, strict=True)]
                emb = [e for g, _ in got for e in g]
                ref = [e for r, _ in refs for e in r]
                p, p_ref = torch.cat([g[1] for g in got]), torch.cat([r[1] for r in refs])
                rows.append({
                    "format": fmt, "dataset": ds, **quant.storage(fmt, stage.embedding_dim),
                    "bytes_vs_fp32": quant.storage(fmt, stage.embedding_dim)["row_bytes"] / (4 * stage.embedding_dim),
                    "table_max_abs_err": table_err, **_errors(ref, emb, p_ref, p), "preset": stage.name,
                    "tables": stage.num_tables, "rows": stage.embedding_sizes[0], "dim": stage.embedding_dim,
                    "batch_size": stage.batch_size, "pooling": str(stage.pooling), "n_batches": int(n_batches),
                    "seed": int(seed),
                })  # fmt: skip
    return pd.DataFrame(rows)


def with_accuracy(df: pd.DataFrame, formats: Sequence[str], dataset: str, stage: Any, seed: int = 0) -> pd.DataFrame:
    """Speed rows (:func:`dlrmlab.bench.quantized.run_quantized`) with each format's error against fp32 beside
    them (fp32 itself: 0), for ``run_quantized(..., accuracy=with_accuracy)``."""
    return attach_accuracy(df, accuracy(list(formats), [dataset], stage, seed=seed), dataset)


def attach_accuracy(df: pd.DataFrame, acc: pd.DataFrame, dataset: str) -> pd.DataFrame:
    """Speed rows with the error columns of ``acc`` (rows of :func:`accuracy`, e.g. computed on a CPU: the
    numbers do not depend on the machine) for ``dataset`` joined by format; fp32 rows get 0."""
    acc = acc[acc["dataset"] == dataset]
    acc = pd.concat([acc, pd.DataFrame([{"format": "float32", **dict.fromkeys(ACCURACY_COLUMNS, 0.0)}])])
    return df.drop(columns=[c for c in ACCURACY_COLUMNS if c in df]).merge(
        acc[["format", *ACCURACY_COLUMNS]], on="format", how="left")
