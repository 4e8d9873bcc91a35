"""Scaling predictions for named stages and plans: the planner's cost per rank through
:func:`dlrmlab.shard.scaling.predict`, strong and weak, with the gather bandwidth optionally calibrated
from a measured ``shard.csv`` (its world-size-1 lookups on a GPU)."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from dlrmlab.errors import DlrmlabError
from dlrmlab.shard import planner, scaling
from dlrmlab.shard.plan import SHARDING_TYPES, ShardingPlan, uniform
from dlrmlab.workload import EmbeddingStage, preset

#: Named stages: the paper's (12 x 500K x 128 fp32, 3 GB), and 12 x 40M x 128 fp32 (246 GB): no single GPU.
STAGES = {"paper": {}, "paper_40M": {"rows": 40_000_000}}
DEFAULT_PLANS = ("auto", *SHARDING_TYPES)


def named_stage(name: str) -> EmbeddingStage:
    if name not in STAGES:
        raise DlrmlabError(f"unknown stage {name!r}; valid: {', '.join(STAGES)}")
    return preset("paper", **STAGES[name]).with_(name=name)


def comm_model(intra_gbps: float | None = None, inter_gbps: float | None = None,
               gpus_per_host: int = 8) -> scaling.CommModel:  # fmt: skip
    d = scaling.CommModel()
    return scaling.CommModel(intra_gbps or d.intra_busbw_gbps, inter_gbps or d.inter_busbw_gbps,
                             d.intra_latency_us, d.inter_latency_us, int(gpus_per_host))  # fmt: skip


def cost_model(comm: scaling.CommModel, measured: pd.DataFrame | None = None) -> planner.CostModel:
    """The default cost model, or one whose gather bandwidth fits a measured world-size-1 lookup time (the
    fast kernel's where there is one) of a GPU run of the paper's stage."""
    base = planner.CostModel(comm=comm)
    if measured is None:
        return base
    m = measured[(measured["world_size"] == 1) & (measured["stage"] == "lookup_in_turn")
                 & (measured["device_type"] == "cuda")]  # fmt: skip
    if m.empty:
        raise DlrmlabError("the calibration file has no world-size-1 lookup rows measured on a GPU")
    m = m[m["embedding"] == "fast"] if (m["embedding"] == "fast").any() else m
    r = m.iloc[-1]
    stage = preset("paper", tables=int(r["tables"]), rows=int(r["rows"]), sparse_feature_size=int(r["dim"]),
                   batch_size=int(r["batch_size"]), pooling=str(r["pooling"]))  # fmt: skip
    w = planner.Workload.from_stage(stage)
    unit = planner.evaluate(uniform("table_wise", stage.num_tables, 1), w, planner.CostModel(1.0, comm))
    bytes_moved = float(unit.lookup_ms.sum()) * 1e6  # at 1 GB/s, ms = bytes / 1e6
    return base.calibrated(float(r["ms"]), bytes_moved)


def _cost_at(stage: EmbeddingStage, plan_name: str, n: int, b: int, model: planner.CostModel,
             budget: float) -> planner.PlanCost:  # fmt: skip
    w = planner.Workload.from_stage(stage.with_(batch_size=b))
    try:
        plan = planner.named_plan(plan_name, w, n, model, budget)
    except DlrmlabError:  # no placement within the budget: row-wise spreads evenly, and still does not fit
        plan = ShardingPlan(n, uniform("row_wise", stage.num_tables, n).tables, plan_name)
    return planner.evaluate(plan, w, model, budget)


def predictions(stages: Sequence[str], world_sizes: Sequence[int], plans: Sequence[str] | None, budget_bytes: float,
                model: planner.CostModel, batch_size: int = 2048) -> pd.DataFrame:  # fmt: skip
    """Strong (global batch ``batch_size``) and weak (``batch_size`` per GPU) scaling rows for every
    stage and plan over ``world_sizes``."""
    frames = []
    for name in stages:
        stage = named_stage(name)
        for p in plans or DEFAULT_PLANS:
            for weak in (False, True):
                df = scaling.scaling_table(lambda n, b, p=p, s=stage: _cost_at(s, p, n, b, model, budget_bytes),
                                           world_sizes, batch_size, weak, model.comm)  # fmt: skip
                frames.append(df.assign(stage=name, plan=p, table_gb=stage.table_bytes() / 1e9))
    out = pd.concat(frames, ignore_index=True)
    c = model.comm
    return out.assign(gather_gbps=model.gather_gbps, intra_busbw_gbps=c.intra_busbw_gbps,
                      inter_busbw_gbps=c.inter_busbw_gbps, intra_latency_us=c.intra_latency_us,
                      inter_latency_us=c.inter_latency_us, gpus_per_host=c.gpus_per_host,
                      budget_gb=budget_bytes / 1e9)  # fmt: skip


def compare_plans(stage_name: str, world_size: int, plans: Sequence[str] = DEFAULT_PLANS,
                  budget_bytes: float = scaling.H100_BUDGET_BYTES,
                  model: planner.CostModel | None = None) -> tuple[pd.DataFrame, dict]:  # fmt: skip
    """Plans side by side on a named stage: a summary row each (cost, imbalance, memory, fits) and the
    per-rank costs by plan name. A plan over the budget stays in (``fits`` False); the planner's is left
    out where it finds none."""
    model = model or planner.CostModel()
    w = planner.Workload.from_stage(named_stage(stage_name))
    costs = {}
    for p in plans:
        try:
            costs[p] = planner.evaluate(planner.named_plan(p, w, world_size, model, budget_bytes), w, model,
                                        budget_bytes)  # fmt: skip
        except DlrmlabError:
            continue
    return pd.DataFrame([{**c.summary(), "plan": name} for name, c in costs.items()]), costs
