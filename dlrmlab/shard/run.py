"""One sharded run on every rank: build, check against one process's result, time, gather tidy rows.

:func:`rank_main` is what each rank runs (under ``torchrun`` or :func:`dlrmlab.shard.dist.run_ranks`):
every rank makes the same seeded tables and global batch, keeps its shards and its samples, checks the
sharded stage (and DLRM on it) against the single-process reference on the global batch, then times:

* ``e2e``: the overlapped forward, synchronised before and after (wall ms on each rank);
* ``input_dist``, ``lookup``, ``output_dist``: the same steps one after another, synchronised;
* ``lookup_in_turn``: each rank's lookups alone, ranks taking turns between barriers, so ranks that share
  one GPU do not contend: per-rank lookup times and their imbalance are real measurements;
* ``dlrm_e2e`` (with ``model=True``): DLRM on the sharded stage.

Rank 0 gathers every rank's rows. Timings in the simulator or on CPU tensors are not GPU timings
(``timing_valid`` False).
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from dlrmlab import backend
from dlrmlab.dlrm.kjt import KeyedJaggedTensor
from dlrmlab.dlrm.model import DLRM, make_dense
from dlrmlab.errors import DlrmlabError
from dlrmlab.shard import planner, tables
from dlrmlab.shard.dist import Group, collective, env_world, free_port, process_group, run_ranks
from dlrmlab.shard.model import ShardedDLRM
from dlrmlab.shard.stage import ShardedEmbeddingBagCollection
from dlrmlab.workload import Batch, EmbeddingStage, TableBatch, Workload, preset

TABLE_KINDS = ("random", "procedural")
#: Relative error (max |diff| / max |reference|) under which a sharded result counts as equal.
REL_TOL = 1e-5


@dataclass(frozen=True)
class RunConfig:
    """Everything a run needs, picklable (it travels to spawned ranks)."""

    preset: str = "tiny"
    tables: int | None = None
    rows: int | None = None
    dim: int | None = None
    batch: int | None = None
    pooling: int | None = None
    dataset: str = "random"
    plan: str = "table_wise"
    embedding: str = "torch"
    backend: str = "gloo"
    device: str = "cpu"
    mode: str = "sum"
    repeats: int = 5
    warmup: int = 1
    seed: int = 0
    timeout_s: float = 60.0
    model: bool = True
    budget_gb: float | None = None
    tables_kind: str = "random"  # random: seeded tables, every rank makes them all; procedural: hashed entries
    fail_rank: int | None = None  # testing: this rank exits abruptly before the output distribution

    def stage(self) -> EmbeddingStage:
        over = {k: v for k, v in (("tables", self.tables), ("rows", self.rows), ("sparse_feature_size", self.dim),
                                  ("batch_size", self.batch), ("pooling", self.pooling)) if v is not None}  # fmt: skip
        return preset(self.preset, **over)


def local_batch(batch: Batch, rank: int, world: int) -> Batch:
    """Rank ``rank``'s samples of a global batch (every table's bags ``rank * B_local ...``)."""
    tables = []
    for tb in batch.tables:
        b = tb.num_bags // world
        o = tb.offsets
        lo, hi = int(o[rank * b]), int(o[(rank + 1) * b])
        tables.append(TableBatch(tb.indices[lo:hi], (o[rank * b : (rank + 1) * b + 1] - lo), None))
    return Batch(tables)


def _median_ms(fn: Callable[[], Any], sync: Callable[[], None], repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def _rel_err(got: list[torch.Tensor], ref: list[torch.Tensor]) -> float:
    num = max(float((g.float() - r.float()).abs().max()) if r.numel() else 0.0 for g, r in zip(got, ref, strict=True))
    den = max(float(r.abs().max()) if r.numel() else 0.0 for r in ref)
    return num / den if den > 0 else num


def _build(cfg: RunConfig, g: Group) -> dict:
    stage = cfg.stage()
    if stage.batch_size % g.world_size:
        raise DlrmlabError(f"the global batch {stage.batch_size} does not split over {g.world_size} ranks")
    if stage.dtype != "float32":
        raise DlrmlabError("the sharded stage runs float32 tables")
    if cfg.tables_kind not in TABLE_KINDS:
        raise DlrmlabError(f"unknown tables {cfg.tables_kind!r}; valid: {', '.join(TABLE_KINDS)}")
    w = planner.Workload.from_stage(stage)
    budget = None if cfg.budget_gb is None else cfg.budget_gb * 1e9
    plan = planner.named_plan(cfg.plan, w, g.world_size, budget_bytes=budget)
    plan.validate(stage.embedding_sizes, stage.embedding_dim, 4, budget)  # before any table is made
    procedural = cfg.tables_kind == "procedural"
    bot = (16 if stage.embedding_dim < 64 else 256, 128 if stage.embedding_dim >= 128 else 64, stage.embedding_dim)
    # procedural: the dense layers only (one-row tables; the dense weights do not depend on the tables' rows)
    model = DLRM("torch", arch_mlp_bot=bot, device=g.device, seed=cfg.seed, mode=cfg.mode,
                 embedding_sizes=(1,) * stage.num_tables if procedural else stage.embedding_sizes)  # fmt: skip
    model.embedding.validate = False
    source = (lambda s: tables.shard_weight(s, cfg.seed, g.device)) if procedural else model.embedding.weight
    sharded = ShardedEmbeddingBagCollection(plan, g, stage.embedding_sizes, source, cfg.embedding, cfg.mode,
                                            memory_budget=budget, dim=stage.embedding_dim)  # fmt: skip
    wl = Workload(stage, cfg.dataset, seed=cfg.seed)
    batch = wl.batch()
    b_local = stage.batch_size // g.world_size
    local = KeyedJaggedTensor.from_batch(local_batch(batch, g.rank, g.world_size), g.device)
    kjt = None if procedural else KeyedJaggedTensor.from_batch(batch, g.device)
    dense = make_dense(stage.batch_size, model.arch_mlp_bot[0], cfg.seed, g.device)
    sl = slice(g.rank * b_local, (g.rank + 1) * b_local)
    return {"stage": stage, "plan": plan, "model": model, "sharded": sharded, "kjt": kjt, "local": local,
            "dense": dense, "dense_local": dense[sl].contiguous(), "slice": sl, "workload": w,
            "budget": budget, "dataset": wl.dataset}  # fmt: skip


def _check(cfg: RunConfig, g: Group, b: dict) -> dict:
    """Sharded against one process on the global batch (the torch plug-in; procedural tables: pooled
    from the entries of the rows read), this rank's rows."""
    sl, m = b["slice"], b["model"]
    with torch.inference_mode():
        if b["kjt"] is None:
            ref = tables.pooled(b["local"], b["stage"].embedding_dim, cfg.seed, cfg.mode)
        else:
            ref = [o[sl] for o in m.embedding(b["kjt"])]
        if cfg.fail_rank == g.rank:
            os._exit(17)  # a rank dying mid-step: the others must fail clearly, not hang
        got = b["sharded"](b["local"])
        out = {"stage_rel_err": _rel_err(got, ref)}
        if cfg.model:
            x = b["dense_local"]
            ref_p = m.top_l(m.interact(m.bot_l(x), ref)) if b["kjt"] is None else m(b["dense"], b["kjt"])[sl]
            got_p = ShardedDLRM(m, b["sharded"])(x, b["local"])
            out["dlrm_rel_err"] = _rel_err([got_p], [ref_p])
    return out


def _time(cfg: RunConfig, g: Group, b: dict) -> dict:
    sh: ShardedEmbeddingBagCollection = b["sharded"]
    dev = g.device
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    local = b["local"]
    t: dict = {}
    with torch.inference_mode():
        collective(g, "barrier", dist.barrier)
        t["e2e"] = _median_ms(lambda: sh(local), sync, cfg.repeats, cfg.warmup)
        steps = [sh.forward_timed(local)[1] for _ in range(cfg.repeats)]
        for k in ("input_dist_ms", "lookup_ms", "output_dist_ms"):
            t[k[:-3]] = statistics.median(s[k] for s in steps)
        t["input_bytes"], t["output_bytes"] = steps[0]["input_bytes"], steps[0]["output_bytes"]
        d = sh.dispatch(local)
        for r in range(g.world_size):  # each rank's lookups alone, in turn
            collective(g, "barrier", dist.barrier)
            if r == g.rank:
                t["lookup_in_turn"] = _median_ms(lambda: sh.lookup(d), sync, cfg.repeats, cfg.warmup)
        collective(g, "barrier", dist.barrier)
        if cfg.model:
            m = ShardedDLRM(b["model"], sh)
            t["dlrm_e2e"] = _median_ms(lambda: m(b["dense_local"], local), sync, cfg.repeats, cfg.warmup)
    return t


def _rows(cfg: RunConfig, g: Group, b: dict, check: dict, t: dict, run_id: str) -> list[dict]:
    stage, plan = b["stage"], b["plan"]
    cost = planner.evaluate(plan, b["workload"], budget_bytes=b["budget"])
    base = {
        "run_id": run_id, "timestamp": datetime.now(UTC).isoformat(timespec="seconds"), "plan": plan.name,
        "plan_spec": plan.spec(), "world_size": g.world_size, "backend": g.backend, "device_type": g.device.type,
        "embedding": cfg.embedding, "dataset": b["dataset"], "tables_kind": cfg.tables_kind,
        "preset": stage.name, "tables": stage.num_tables,
        "rows": stage.embedding_sizes[0], "dim": stage.embedding_dim, "batch_size": stage.batch_size,
        "local_batch": stage.batch_size // g.world_size, "pooling": str(stage.pooling), "mode": cfg.mode,
        "rank": g.rank, "shard_gb": b["sharded"].shard_bytes() / 1e9, "predicted_cost_ms": float(cost.total_ms[g.rank]),
        "stage_rel_err": check["stage_rel_err"], "dlrm_rel_err": check.get("dlrm_rel_err", np.nan),
        "correct": bool(check["stage_rel_err"] < REL_TOL and check.get("dlrm_rel_err", 0.0) < REL_TOL),
        "repeats": cfg.repeats, "timing_valid": g.device.type == "cuda" and not backend.SIMULATOR,
        "gpu_name": torch.cuda.get_device_name(g.device) if g.device.type == "cuda" else None,
        "torch_version": torch.__version__,
    }  # fmt: skip
    serial = t["input_dist"] + t["lookup"] + t["output_dist"]
    bytes_of = {"input_dist": t["input_bytes"], "output_dist": t["output_bytes"]}
    stages = ["input_dist", "lookup", "output_dist", "lookup_in_turn", "e2e"]
    stages += ["dlrm_e2e"] if "dlrm_e2e" in t else []
    return [{**base, "stage": s, "ms": t[s], "bytes": bytes_of.get(s, 0), "overlap_ms": serial - t["e2e"]}
            for s in stages]  # fmt: skip


def rank_main(rank: int | None, world: int | None, init: str | None, cfgs: list[RunConfig], run_id: str) -> list[dict]:
    """One rank's runs of every configuration in one process group (the first's backend, device and
    timeout); rank 0 returns every rank's rows with the cross-rank summaries, the others []."""
    first = cfgs[0]
    if any((c.backend, c.device) != (first.backend, first.device) for c in cfgs):
        raise DlrmlabError("the configurations of one run must share the backend and device")
    out: list[dict] = []
    with process_group(first.backend, rank=rank, world_size=world, init_method=init, timeout_s=first.timeout_s,
                       device=first.device) as g:  # fmt: skip
        if g.device.type == "cpu" and world != 1:
            torch.set_num_threads(1)  # local ranks share the host's cores
        for cfg in cfgs:
            b = _build(cfg, g)
            check = _check(cfg, g, b)
            t = _time(cfg, g, b)
            rows = _rows(cfg, g, b, check, t, run_id)
            del b
            gathered: list = [None] * g.world_size
            collective(g, "gathering the result rows", dist.all_gather_object, gathered, rows)
            if g.rank == 0:
                out += summarise([r for part in gathered for r in part])
            if g.device.type == "cuda":
                torch.cuda.empty_cache()
    return out


def summarise(rows: list[dict]) -> list[dict]:
    """Cross-rank columns on every row: lookup imbalance (max / mean of ``lookup_in_turn`` over ranks),
    the run's latency (slowest rank's e2e) and samples/s of the global batch."""
    turn = [r["ms"] for r in rows if r["stage"] == "lookup_in_turn"]
    e2e = max(r["ms"] for r in rows if r["stage"] == "e2e")
    dl = [r["ms"] for r in rows if r["stage"] == "dlrm_e2e"]
    imb = max(turn) / statistics.mean(turn) if turn and statistics.mean(turn) > 0 else np.nan
    for r in rows:
        r.update(imbalance=imb, latency_ms=e2e, samples_per_s=r["batch_size"] / e2e * 1e3 if e2e > 0 else np.nan,
                 dlrm_latency_ms=max(dl) if dl else np.nan)  # fmt: skip
    return rows


def run(cfgs: RunConfig | list[RunConfig], world_size: int = 1, timeout_s: float | None = None) -> list[dict]:
    """Run every configuration on ``world_size`` local ranks (1: in this process) and return rank 0's
    gathered rows."""
    cfgs = [cfgs] if isinstance(cfgs, RunConfig) else list(cfgs)
    if not cfgs:
        raise DlrmlabError("nothing to run")
    run_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    first = cfgs[0]
    if first.backend == "nccl" and world_size > torch.cuda.device_count():
        raise DlrmlabError(f"nccl needs one GPU per rank: {world_size} rank(s), {torch.cuda.device_count()} GPU(s); "
                           "use gloo to put several ranks on one GPU")  # fmt: skip
    if world_size == 1:
        return rank_main(0, 1, f"tcp://127.0.0.1:{free_port()}", cfgs, run_id)
    limit = timeout_s if timeout_s is not None else first.timeout_s * 4 + 60 * len(cfgs)
    return run_ranks(rank_main, world_size, (cfgs, run_id), timeout_s=limit,
                     start_method="spawn" if first.device == "cuda" else None)[0]  # fmt: skip


def config_dict(cfg: RunConfig) -> dict:
    return asdict(cfg)


# --- the group's own all-to-all bandwidth ----------------------------------------------------------------


def _alltoall_rank(rank: int | None, world: int | None, init: str | None, sizes: list[int], backend_: str,
                   device: str, repeats: int) -> list[dict]:  # fmt: skip
    with process_group(backend_, rank=rank, world_size=world, init_method=init, device=device) as g:
        sync = (lambda: torch.cuda.synchronize(g.device)) if g.device.type == "cuda" else (lambda: None)
        rows = []
        for nbytes in sizes:
            n = max(g.world_size, nbytes // 4 // g.world_size * g.world_size)
            x = torch.ones(n, dtype=torch.float32, device=g.device)
            y = torch.empty_like(x)

            def once(x=x, y=y):
                collective(g, "all-to-all bandwidth", dist.all_to_all_single, y, x)

            collective(g, "barrier", dist.barrier)
            ms = _median_ms(once, sync, repeats, 2)
            algbw = n * 4 / (ms * 1e-3) / 1e9
            rows.append({"rank": g.rank, "world_size": g.world_size, "backend": g.backend, "device_type": g.device.type,
                         "bytes_per_rank": n * 4, "ms": ms, "algbw_gbps": algbw,
                         "busbw_gbps": algbw * (g.world_size - 1) / g.world_size})  # fmt: skip
        gathered: list = [None] * g.world_size
        collective(g, "gathering the result rows", dist.all_gather_object, gathered, rows)
    return [r for part in gathered for r in part] if g.rank == 0 else []


def alltoall_bandwidth(sizes: list[int], world_size: int, backend_: str = "nccl", device: str = "cuda",
                       repeats: int = 20) -> list[dict]:  # fmt: skip
    """``all_to_all_single`` of ``sizes`` bytes per rank: median ms, algorithm and bus bandwidth as
    nccl-tests defines them (busbw = algbw x (n - 1) / n), per rank. Under torchrun it joins that world."""
    if not sizes or min(sizes) <= 0 or repeats < 1:
        raise DlrmlabError("need positive message sizes and repeats")
    if env_world() is not None:
        return _alltoall_rank(None, None, None, sizes, backend_, device, repeats)
    if world_size == 1:
        return _alltoall_rank(0, 1, f"tcp://127.0.0.1:{free_port()}", sizes, backend_, device, repeats)
    return run_ranks(_alltoall_rank, world_size, (sizes, backend_, device, repeats), timeout_s=300,
                     start_method="spawn" if device == "cuda" else None)[0]  # fmt: skip
