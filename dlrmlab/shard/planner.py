"""The planner: a cost model per rank, imbalance, and a greedy placement under a memory budget.

Cost of a shard on a rank (ms per global batch of B samples): the bytes its lookups read from DRAM, ``ids x
row bytes x (1 - L2 hit rate)``, plus its pooled output, over an effective gather bandwidth; plus the
network bytes it receives (ids) and sends (pooled rows) over the bus bandwidth of
:class:`dlrmlab.shard.scaling.CommModel`. Ids are spread over a row-wise table's blocks as ``id_counts``
(per-table id frequencies, e.g. :func:`dlrmlab.hotness.counts` of a batch) say, else evenly; hit rates are
per table (what :mod:`dlrmlab.l2model` predicts or a measurement gives; default 0, no reuse).

:func:`plan_auto` places tables, costliest first, each where it raises the most loaded rank's cost the
least (TorchRec's greedy partitioner works the same way), among table-wise on each rank, row-wise,
column-wise and data-parallel, skipping options over the memory budget or that would leave the tables
still to place no room (their bytes spread evenly); a uniform plan replaces the result where that is
cheaper (greedy placement is not optimal). With room to spare it replicates
(data-parallel: no communication at all); that is the right answer for inference when tables fit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from dlrmlab.errors import DlrmlabError
from dlrmlab.shard.plan import SHARDING_TYPES, Shard, ShardingPlan, TablePlacement, uniform
from dlrmlab.shard.scaling import CommModel

ID_BYTES = 8  # int64 ids
LENGTH_BYTES = 8  # int64 bag lengths
OUT_BYTES = 4  # fp32 pooled rows


@dataclass(frozen=True)
class CostModel:
    """Effective gather bandwidth (GB/s) and the communication model. Default 3000 GB/s: dlrmlab's fast
    kernel on one H100 on uniform ids (README: 0.631 ms for 1.93 GB per batch). :meth:`calibrated` fits it
    to a measured stage time."""

    gather_gbps: float = 3000.0
    comm: CommModel = field(default_factory=CommModel)

    def calibrated(self, measured_ms: float, bytes_moved: float) -> CostModel:
        if measured_ms <= 0 or bytes_moved <= 0:
            raise DlrmlabError(f"calibration needs a positive time and bytes, got {measured_ms} ms, {bytes_moved} B")
        return CostModel(bytes_moved / (measured_ms * 1e-3) / 1e9, self.comm)


@dataclass(frozen=True)
class Workload:
    """What the cost depends on: tables, width, global batch, mean ids per bag, dtype bytes, hit rates and
    id counts per table."""

    embedding_sizes: tuple[int, ...]
    dim: int
    batch_size: int
    pooling: float
    element_bytes: int = 4
    hit_rates: tuple[float, ...] | None = None
    id_counts: tuple[np.ndarray, ...] | None = None

    @classmethod
    def from_stage(cls, stage, hit_rates: Sequence[float] | float | None = None,
                   id_counts: Sequence[np.ndarray] | None = None) -> Workload:  # fmt: skip
        """From a :class:`dlrmlab.workload.EmbeddingStage`."""
        k = stage.num_tables
        hr = None if hit_rates is None else tuple(float(h) for h in np.broadcast_to(hit_rates, (k,)))
        if hr is not None and not all(0 <= h <= 1 for h in hr):
            raise DlrmlabError(f"hit rates must be within [0, 1], got {hr}")
        ic = None if id_counts is None else tuple(np.asarray(c, np.float64) for c in id_counts)
        return cls(tuple(stage.embedding_sizes), stage.embedding_dim, stage.batch_size, stage.pooling.mean,
                   stage.element_bytes, hr, ic)  # fmt: skip

    def hit(self, t: int) -> float:
        return 0.0 if self.hit_rates is None else self.hit_rates[t]

    def id_fraction(self, s: Shard) -> float:
        """Share of table ``s.table``'s ids that fall in the shard's rows."""
        rows = self.embedding_sizes[s.table]
        if self.id_counts is None:
            return s.rows / rows
        c = self.id_counts[s.table]
        total = c.sum()
        return float(c[s.row_start : s.row_end].sum() / total) if total > 0 else s.rows / rows


@dataclass
class PlanCost:
    """Per-rank cost of a plan: lookup ms, network bytes in (ids, lengths) and out (pooled rows by
    all-to-all, row-wise partials by reduce-scatter), memory; and the summaries."""

    plan_name: str
    world_size: int
    batch_size: int
    lookup_ms: np.ndarray
    input_bytes: np.ndarray
    output_bytes: np.ndarray
    reduce_scatter_bytes: np.ndarray
    comm_ms: np.ndarray
    memory_bytes: np.ndarray
    budget_bytes: float | None = None

    @property
    def total_ms(self) -> np.ndarray:
        return self.lookup_ms + self.comm_ms

    @property
    def imbalance(self) -> float:
        """max / mean of the per-rank cost (1.0: perfectly balanced)."""
        t = self.total_ms
        return float(t.max() / t.mean()) if t.mean() > 0 else 1.0

    @property
    def memory_imbalance(self) -> float:
        m = self.memory_bytes
        return float(m.max() / m.mean()) if m.mean() > 0 else 1.0

    @property
    def fits(self) -> bool:
        return self.budget_bytes is None or bool(self.memory_bytes.max() <= self.budget_bytes)

    def per_rank(self) -> pd.DataFrame:
        return pd.DataFrame({
            "rank": np.arange(self.world_size), "lookup_ms": self.lookup_ms, "comm_ms": self.comm_ms,
            "cost_ms": self.total_ms, "input_mb": self.input_bytes / 1e6,
            "output_mb": (self.output_bytes + self.reduce_scatter_bytes) / 1e6, "memory_gb": self.memory_bytes / 1e9,
        })  # fmt: skip

    def summary(self) -> dict:
        return {"plan": self.plan_name, "world_size": self.world_size, "max_cost_ms": float(self.total_ms.max()),
                "mean_cost_ms": float(self.total_ms.mean()), "imbalance": self.imbalance,
                "max_memory_gb": float(self.memory_bytes.max() / 1e9), "memory_imbalance": self.memory_imbalance,
                "fits": self.fits}  # fmt: skip


def _shard_cost(s: Shard, w: Workload, n: int, model: CostModel) -> tuple[float, float, float, float]:
    """(lookup ms, ids in bytes, all-to-all out bytes, reduce-scatter bytes) of one shard on its rank."""
    b, row = w.batch_size, s.dim * w.element_bytes
    if s.sharding == "data_parallel":
        ids, bags = b * w.pooling / n, b / n
    else:
        ids, bags = b * w.pooling * (w.id_fraction(s) if s.sharding == "row_wise" else 1.0), b
    read = ids * row * (1.0 - w.hit(s.table)) + bags * s.dim * OUT_BYTES
    lookup = read / (model.gather_gbps * 1e9) * 1e3
    if s.sharding == "data_parallel":
        return lookup, 0.0, 0.0, 0.0
    ids_in = ids * ID_BYTES + b * LENGTH_BYTES
    out = b * s.dim * OUT_BYTES
    return (lookup, ids_in, 0.0, out) if s.sharding == "row_wise" else (lookup, ids_in, out, 0.0)


def evaluate(plan: ShardingPlan, w: Workload, model: CostModel | None = None,
             budget_bytes: float | None = None) -> PlanCost:  # fmt: skip
    """The per-rank cost of ``plan`` on workload ``w`` (the plan is validated first, budget excepted)."""
    model = model or CostModel()
    n = plan.world_size
    plan.validate(w.embedding_sizes, w.dim, w.element_bytes)
    acc = np.zeros((4, n))
    for s in plan.shards(w.embedding_sizes, w.dim):
        acc[:, s.rank] += _shard_cost(s, w, n, model)
    comm = np.array([model.comm.collective_ms(acc[1, r], n) + model.comm.collective_ms(acc[2, r], n)
                     + model.comm.collective_ms(acc[3, r], n) for r in range(n)])  # fmt: skip
    return PlanCost(plan.name, n, w.batch_size, acc[0], acc[1], acc[2], acc[3], comm,
                    plan.memory_per_rank(w.embedding_sizes, w.dim, w.element_bytes), budget_bytes)  # fmt: skip


def _options(t: int, n: int, dim: int, kinds: Sequence[str]) -> list[TablePlacement]:
    every = tuple(range(n))
    opts = [TablePlacement(t, "table_wise", (r,)) for r in range(n)] if "table_wise" in kinds else []
    if n > 1:
        opts += [TablePlacement(t, k, every) for k in ("row_wise", "data_parallel") if k in kinds]
        if "column_wise" in kinds and dim >= n:
            opts.append(TablePlacement(t, "column_wise", every))
    return opts


def plan_auto(w: Workload, world_size: int, model: CostModel | None = None, budget_bytes: float | None = None,
              kinds: Sequence[str] = SHARDING_TYPES) -> ShardingPlan:  # fmt: skip
    """Greedy placement: tables costliest first, each taking the option that leaves the lowest maximum
    per-rank cost (ties: the lowest total, then the earliest option: table-wise first) within the budget."""
    model, n = model or CostModel(), int(world_size)
    bad = set(kinds) - set(SHARDING_TYPES)
    if bad or not kinds:
        raise DlrmlabError(f"unknown sharding types {sorted(bad)}; valid: {', '.join(SHARDING_TYPES)}")
    k = len(w.embedding_sizes)
    full = [_shard_cost(Shard(t, "table_wise", 0, 0, w.embedding_sizes[t], 0, w.dim), w, n, model)[0]
            for t in range(k)]  # fmt: skip
    load, mem = np.zeros(n), np.zeros(n)
    chosen: dict[int, TablePlacement] = {}
    order = sorted(range(k), key=lambda i: (-full[i], i))
    table_bytes = [w.embedding_sizes[t] * w.dim * w.element_bytes for t in range(k)]
    for pos, t in enumerate(order):
        rest = sum(table_bytes[i] for i in order[pos + 1 :])  # what later tables need at least, spread evenly
        best = None
        for opt in _options(t, n, w.dim, kinds):
            one = ShardingPlan(n, (TablePlacement(0, opt.sharding, opt.ranks),))
            sizes = (w.embedding_sizes[t],)
            sub = Workload(sizes, w.dim, w.batch_size, w.pooling, w.element_bytes,
                           None if w.hit_rates is None else (w.hit_rates[t],),
                           None if w.id_counts is None else (w.id_counts[t],))  # fmt: skip
            c = evaluate(one, sub, model)
            new_mem = mem + c.memory_bytes
            if budget_bytes is not None and max(new_mem.max(), (new_mem.sum() + rest) / n) > budget_bytes:
                continue
            new_load = load + c.total_ms
            key = (round(float(new_load.max()), 9), round(float(new_load.sum()), 9))
            if best is None or key < best[0]:
                best = (key, opt, new_load, new_mem)
        if best is None:
            raise DlrmlabError(f"table {t} ({w.embedding_sizes[t]:,} rows) fits no rank within the memory budget of "
                               f"{budget_bytes / 1e9:.3g} GB per rank over {n} rank(s); add ranks or raise the budget")
        _, chosen[t], load, mem = best
    return _best_of(ShardingPlan(n, tuple(chosen[t] for t in range(k)), "auto"), w, model, budget_bytes, kinds)


def _best_of(greedy: ShardingPlan, w: Workload, model: CostModel, budget_bytes: float | None,
             kinds: Sequence[str]) -> ShardingPlan:  # fmt: skip
    """The greedy plan, or a uniform plan of the allowed types when that one is cheaper (greedy placement
    is not optimal); named ``auto`` either way."""
    def key(p: ShardingPlan) -> tuple[float, float]:
        c = evaluate(p, w, model, budget_bytes)
        return (float(c.total_ms.max()), float(c.total_ms.sum())) if c.fits else (np.inf, np.inf)

    best, best_key = greedy, key(greedy)
    for kind in kinds:
        p = uniform(kind, len(w.embedding_sizes), greedy.world_size)
        if kind == "column_wise" and w.dim < greedy.world_size:
            continue
        k = key(p)
        if k < best_key:
            best, best_key = ShardingPlan(p.world_size, p.tables, "auto"), k
    return best


def named_plan(name: str, w: Workload, world_size: int, model: CostModel | None = None,
               budget_bytes: float | None = None) -> ShardingPlan:  # fmt: skip
    """``auto`` (:func:`plan_auto`), a sharding type for every table (``table_wise`` is round-robin), a
    spec string (``0:tw@1,1:rw``) or a JSON file."""
    if name == "auto":
        return plan_auto(w, world_size, model, budget_bytes)
    if name in SHARDING_TYPES:
        return uniform(name, len(w.embedding_sizes), world_size)
    if ":" in name and not name.endswith(".json"):
        return ShardingPlan.from_spec(name, world_size)
    if name.endswith(".json"):
        plan = ShardingPlan.load(name)
        if plan.world_size != int(world_size):
            raise DlrmlabError(f"plan {name} is for {plan.world_size} rank(s), the run has {world_size}")
        return plan
    raise DlrmlabError(f"unknown plan {name!r}: auto, {', '.join(SHARDING_TYPES)}, a spec (0:tw@1,1:rw) "
                       "or a .json file")


def describe(plan: ShardingPlan, w: Workload) -> pd.DataFrame:
    """One row per shard: table, sharding, rank, rows, columns, GB."""
    return pd.DataFrame([{
        "table": s.table, "sharding": s.sharding, "rank": s.rank, "rows": f"{s.row_start}-{s.row_end}",
        "cols": f"{s.col_start}-{s.col_end}", "gb": s.rows * s.dim * w.element_bytes / 1e9,
    } for s in plan.shards(w.embedding_sizes, w.dim)])  # fmt: skip
