"""The report section "Beyond one GPU", in Markdown, from prediction rows (``shard_scaling.csv``) and,
where there are some, measured rows (``shard.csv``)."""

from __future__ import annotations

import pandas as pd

from dlrmlab.shard.scaling import CommModel

ASSUMPTIONS = """What the prediction assumes (parameters of `dlrmlab.shard.scaling` and `planner.CostModel`):
collectives take `latency + bytes x (n - 1) / n / busbw` (nccl-tests' bus bandwidth); NVLink 4 at {intra:g} GB/s
(NCCL's effective rate on the H100's 450 GB/s per direction, NVIDIA/nccl-tests#212), InfiniBand NDR at {inter:g}
GB/s per GPU (one 400 Gb/s ConnectX-7 per GPU; an all-to-all does not aggregate NICs, NVIDIA/nccl-tests#267),
{lat:g} us per collective within a host; lookups read `ids x row bytes x (1 - hit rate)` at {gather:.0f} GB/s,
the slowest GPU setting the pace; input distribution, lookups and output distribution in series (an upper
bound: the run overlaps them where the plan allows); DLRM's dense layers data-parallel on `batch / GPUs`
samples."""


def _fmt(v: float, digits: int = 3) -> str:
    return "-" if pd.isna(v) else f"{v:.{digits}g}"


def prediction_table(pred: pd.DataFrame, scaling: str = "strong") -> str:
    """Markdown: samples/s of the embedding stage per plan (rows) and GPU count (columns), per stage; '-'
    where the plan does not fit."""
    d = pred[pred["scaling"] == scaling]
    out = []
    for stage, g in d.groupby("stage", sort=False):
        worlds = sorted(g["world_size"].unique())
        out.append(f"**{stage}** ({g['table_gb'].iloc[0]:.0f} GB of tables), {scaling} scaling, samples/s "
                   f"of the embedding stage (millions):\n")  # fmt: skip
        out.append("| plan | " + " | ".join(f"{n} GPU" for n in worlds) + " |")
        out.append("|---|" + "---|" * len(worlds))
        for plan, p in g.groupby("plan", sort=False):
            vals = p.set_index("world_size")["samples_per_s"]
            out.append(f"| {plan} | " + " | ".join(_fmt(vals.get(n, float('nan')) / 1e6) for n in worlds) + " |")
        out.append("")
    return "\n".join(out)


def measured_table(rows: pd.DataFrame) -> str:
    """Markdown: per run (world size, backend, plan, lookups): each rank's lookup ms alone, imbalance,
    the step times of rank 0, latency, samples/s, correct."""
    lines = ["| ranks | backend | plan | lookups | lookup ms per rank (alone) | imbalance | input / lookup / "
             "output ms (rank 0) | latency ms | samples/s | correct |",
             "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    keys = ["world_size", "backend", "plan", "embedding", "run_id"]
    for (n, be, plan, emb, _), g in rows.groupby(keys, sort=False):
        turn = g[g["stage"] == "lookup_in_turn"].sort_values("rank")["ms"]
        r0 = g[g["rank"] == 0].set_index("stage")["ms"]
        steps = " / ".join(_fmt(r0.get(s, float("nan"))) for s in ("input_dist", "lookup", "output_dist"))
        per_rank = ", ".join(_fmt(v) for v in turn)
        first = g.iloc[0]
        lines.append(f"| {n} | {be} | {plan} | {emb} | {per_rank} | {_fmt(first['imbalance'])} | {steps} "
                     f"| {_fmt(first['latency_ms'])} | {_fmt(first['samples_per_s'])} | {bool(g['correct'].all())} |")
    return "\n".join(lines)


def section(pred: pd.DataFrame, measured: pd.DataFrame | None = None) -> str:
    """The whole section."""
    c = CommModel()
    gather = float(pred["gather_gbps"].iloc[0]) if "gather_gbps" in pred else 3000.0
    parts = ["## Beyond one GPU: the sharded embedding stage", "",
             "Predicted by the scaling model (`dlrmlab shard predict`), not measured on several GPUs:", "",
             prediction_table(pred), ASSUMPTIONS.format(intra=c.intra_busbw_gbps, inter=c.inter_busbw_gbps,
                                                        lat=c.intra_latency_us, gather=gather), ""]  # fmt: skip
    if measured is not None and len(measured):
        parts += ["Measured (`dlrmlab shard run`; ranks sharing one GPU take turns for the per-rank lookups):", "",
                  measured_table(measured), ""]  # fmt: skip
    return "\n".join(parts)
