"""The sharded embedding stage: plans, planner, scaling model, and gloo runs at 2 and 4 local processes
against the single-process reference (tiny sizes, CPU). Every distributed run has a hard timeout."""

from __future__ import annotations

import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from dlrmlab.errors import DlrmlabError  # noqa: E402
from dlrmlab.shard import planner, scaling  # noqa: E402
from dlrmlab.shard.dist import ShardError  # noqa: E402
from dlrmlab.shard.plan import SHARDING_TYPES, ShardingPlan, uniform  # noqa: E402
from dlrmlab.shard.run import RunConfig, run  # noqa: E402
from dlrmlab.workload import preset  # noqa: E402

pytestmark = pytest.mark.torch

SIZES, DIM = (1000, 700, 1500), 32  # the tiny preset


def _cfg(plan: str, **kw) -> RunConfig:
    return RunConfig(plan=plan, **{"repeats": 1, "warmup": 0, "timeout_s": 15, **kw})


# --- plans -----------------------------------------------------------------------------------------------


def test_plan_spec_json_round_trip_and_shards_cover_tables():
    plan = ShardingPlan.from_spec("0:tw@1,1:rw,2:cw@0+1", 2)
    assert ShardingPlan.from_json(plan.to_json()) == plan
    assert ShardingPlan.from_spec(plan.spec(), 2).tables == plan.tables
    shards = plan.shards(SIZES, DIM)
    rw = [s for s in shards if s.table == 1]
    assert [(s.row_start, s.row_end) for s in rw] == [(0, 350), (350, 700)]
    cw = [s for s in shards if s.table == 2]
    assert [(s.col_start, s.col_end) for s in cw] == [(0, 16), (16, 32)]
    assert plan.memory_per_rank(SIZES, DIM).sum() == sum(SIZES) * DIM * 4


@pytest.mark.parametrize("spec, world, budget, message", [
    ("0:tw@3,1:tw@0,2:tw@1", 2, None, "placed on rank 3, but the world has 2"),
    ("0:rw@0,1:tw@0,2:tw@1", 2, None, "must span all 2 ranks"),
    ("0:tw@0,1:tw@0,2:tw@0", 2, 100_000, "over its memory budget"),
])  # fmt: skip
def test_bad_plans_are_refused_with_the_reason(spec, world, budget, message):
    with pytest.raises(DlrmlabError, match=message):
        ShardingPlan.from_spec(spec, world).validate(SIZES, DIM, 4, budget)


def test_plan_refuses_missing_tables_and_unknown_types():
    with pytest.raises(DlrmlabError, match="exactly once"):
        ShardingPlan.from_spec("0:tw@0,2:tw@0", 1)
    with pytest.raises(DlrmlabError, match="unknown sharding"):
        ShardingPlan.from_spec("0:xx@0", 1)


# --- planner and scaling model ---------------------------------------------------------------------------


def test_planner_balances_and_respects_the_budget():
    stage = preset("paper", tables=12, rows=40_000_000)
    w = planner.Workload.from_stage(stage)
    auto = planner.plan_auto(w, 8, budget_bytes=scaling.H100_BUDGET_BYTES)
    cost = planner.evaluate(auto, w, budget_bytes=scaling.H100_BUDGET_BYTES)
    naive = planner.evaluate(uniform("table_wise", 12, 8), w)
    assert cost.fits and cost.memory_bytes.max() <= scaling.H100_BUDGET_BYTES
    look = naive.lookup_ms
    assert look.max() / look.mean() == pytest.approx(4 / 3)  # 2 tables on 4 ranks, 1 on the others
    assert 1.0 < naive.imbalance < 4 / 3  # communication evens it out a little
    assert cost.total_ms.max() < naive.total_ms.max()
    with pytest.raises(DlrmlabError, match="fits no rank"):
        planner.plan_auto(w, 2, budget_bytes=scaling.H100_BUDGET_BYTES)


def test_planner_replicates_tables_that_fit_and_reads_skew_from_id_counts():
    w = planner.Workload.from_stage(preset("tiny"))
    assert {p.sharding for p in planner.plan_auto(w, 2).tables} == {"data_parallel"}
    counts = [np.r_[np.full(n // 2, 10.0), np.zeros(n - n // 2)] for n in SIZES]  # every id in the first half
    skewed = planner.Workload.from_stage(preset("tiny"), id_counts=counts)
    rw = uniform("row_wise", 3, 2)
    assert planner.evaluate(rw, skewed).lookup_ms[1] < planner.evaluate(rw, w).lookup_ms[1]


def test_comm_model_follows_nccl_tests_bus_bandwidth():
    m = scaling.CommModel(intra_busbw_gbps=100.0, intra_latency_us=0.0)
    assert m.collective_ms(8e9, 8) == pytest.approx(8e9 * 7 / 8 / 100e9 * 1e3)
    assert m.collective_ms(1e9, 1) == 0.0
    across = scaling.CommModel(inter_busbw_gbps=50.0, inter_latency_us=0.0).collective_ms(16e9, 16)
    assert across == pytest.approx(16e9 / 16 * 8 / 50e9 * 1e3)  # half the peers on the other host, via the NIC


def test_scaling_table_marks_stages_that_do_not_fit():
    stage = preset("paper", tables=12, rows=40_000_000)

    def cost(n, b):
        w = planner.Workload.from_stage(stage.with_(batch_size=b))
        return planner.evaluate(uniform("table_wise", 12, n), w, budget_bytes=scaling.H100_BUDGET_BYTES)

    df = scaling.scaling_table(cost, [1, 2, 4, 8, 16], 2048)
    assert list(df["fits"]) == [False, False, True, True, True]
    assert df["latency_ms"].isna().sum() == 2 and (df.loc[df.fits, "samples_per_s"] > 0).all()
    assert list(df["hosts"]) == [1, 1, 1, 1, 2]


# --- on torch.distributed (gloo, CPU) --------------------------------------------------------------------


def _assert_correct(rows, world):
    assert {r["rank"] for r in rows} == set(range(world))
    assert all(r["correct"] for r in rows), [(r["plan"], r["rank"], r["stage_rel_err"]) for r in rows]
    assert {"input_dist", "lookup", "output_dist", "lookup_in_turn", "e2e"} <= {r["stage"] for r in rows}


def test_every_plan_type_and_a_mixed_plan_match_one_process_at_2_ranks():
    cfgs = [_cfg(p, model=(p == "row_wise")) for p in [*SHARDING_TYPES, "0:tw@1,1:rw,2:cw"]]
    cfgs.append(_cfg("0:dp,1:cw,2:rw", mode="mean", model=False))
    cfgs.append(_cfg("0:tw@0,1:rw,2:cw", tables_kind="procedural", model=True))
    rows = run(cfgs, 2, timeout_s=60)
    _assert_correct(rows, 2)
    assert {r["plan"] for r in rows} == {*SHARDING_TYPES, "custom"}
    assert {r["tables_kind"] for r in rows} == {"random", "procedural"}
    assert all(r["dlrm_rel_err"] < 1e-5 for r in rows if r["plan"] == "row_wise")


def test_mixed_and_row_wise_plans_match_at_4_ranks():
    cfgs = [_cfg("0:tw@3,1:rw,2:cw@1+2", model=True), _cfg("row_wise", model=False), _cfg("table_wise", model=False)]
    rows = run(cfgs, 4, timeout_s=60)  # table_wise: 3 tables on 4 ranks, rank 3 holds none
    _assert_correct(rows, 4)


def test_world_size_one_runs_in_process():
    rows = run(_cfg("table_wise", model=False), 1)
    _assert_correct(rows, 1)


def test_a_killed_rank_gives_a_clear_error_not_a_hang():
    t0 = time.monotonic()
    with pytest.raises(ShardError, match=r"rank 0: .* failed .* a peer rank died|rank 1 exited with code 17"):
        run(_cfg("table_wise", fail_rank=1, timeout_s=10), 2, timeout_s=45)
    assert time.monotonic() - t0 < 45


def test_a_bad_plan_fails_on_every_rank_before_any_collective():
    with pytest.raises(ShardError, match="placed on rank 3, but the world has 2"):
        run(_cfg("0:tw@3,1:tw@0,2:tw@1"), 2, timeout_s=45)
    with pytest.raises(DlrmlabError, match="over its memory budget"):
        run(_cfg("table_wise", budget_gb=1e-5), 2, timeout_s=45)


def test_fast_kernel_lookups_in_the_simulator():
    from dlrmlab import backend

    if not backend.SIMULATOR:
        pytest.skip("the simulator run of the fast kernel; on a GPU the gpu tests cover it")
    rows = run(_cfg("0:tw@0,1:rw,2:cw", embedding="fast", model=False, pooling=2, batch=4), 2, timeout_s=90)
    _assert_correct(rows, 2)


@pytest.mark.gpu
def test_world_size_one_nccl_and_two_gloo_ranks_on_one_gpu():
    rows = run([RunConfig(plan=p, backend="nccl", device="cuda", repeats=2, embedding=e)
                for p in ("table_wise", "row_wise") for e in ("torch", "fast")], 1)  # fmt: skip
    _assert_correct(rows, 1)
    rows = run([RunConfig(plan="0:tw@1,1:rw,2:cw", backend="gloo", device="cuda", repeats=2, embedding="fast")], 2)
    _assert_correct(rows, 2)


# --- the command -----------------------------------------------------------------------------------------


def test_cli_plan_save_show_and_errors(tmp_path, capsys):
    from dlrmlab.cli import main

    path = tmp_path / "plan.json"
    assert main(["shard", "plan", "--preset", "paper", "--world", "8", "--rows", "40000000", "--save", str(path)]) == 0
    out = capsys.readouterr().out
    assert "imbalance (max/mean cost)" in out and "fits the budget: True" in out
    assert ShardingPlan.load(path).world_size == 8
    assert main(["shard", "show", str(path), "--preset", "paper", "--rows", "40000000"]) == 0
    assert main(["shard", "plan", "--world", "2", "--plan", "0:tw@3", "--preset", "tiny"]) == 2
    assert "the plan places 1 tables, the stage has 3" in capsys.readouterr().err
    assert main(["shard", "plan", "--preset", "paper", "--world", "2", "--rows", "40000000"]) == 2
    assert "fits no rank within the memory budget" in capsys.readouterr().err


def test_cli_predict_and_run_write_tidy_rows(tmp_path):
    import pandas as pd

    from dlrmlab.cli import main

    assert main(["shard", "predict", "--world", "1,2,8", "--plan", "table_wise", "--out", str(tmp_path)]) == 0
    pred = pd.concat([pd.read_csv(p) for p in tmp_path.glob("*/shard_scaling.csv")])
    assert set(pred["stage"]) == {"paper", "paper_40M"} and set(pred["scaling"]) == {"strong", "weak"}
    assert not pred[(pred.stage == "paper_40M") & (pred.world_size < 4)]["fits"].any()
    assert main(["shard", "run", "--preset", "tiny", "--plan", "row_wise", "--repeats", "1", "--warmup", "0",
                 "--no-model", "--out", str(tmp_path)]) == 0  # fmt: skip
    rows = pd.concat([pd.read_csv(p) for p in tmp_path.glob("*/shard.csv")])
    assert rows["correct"].all() and set(rows["stage"]) >= {"input_dist", "lookup", "output_dist", "e2e"}
    assert rows["command"].str.startswith("dlrmlab shard run").all()
    assert main(["shard", "report", "--out", str(tmp_path)]) == 0
    text = next(tmp_path.glob("*/shard_report.md")).read_text()
    assert "| table_wise |" in text and "| 1 | gloo | row_wise | torch |" in text and "nccl-tests" in text


def test_campaign_steps_skip_plans_that_do_not_fit():
    from dlrmlab.shard import campaign

    steps = campaign.steps(preset("paper"), 8, "out")
    large = [s for s in steps if "procedural" in s]
    assert {s[s.index("--nproc") + 1] for s in large} == {"4", "8"}  # 246 GB needs 4 GPUs of 70 GB
    assert not any("data_parallel" in s for s in large)
    assert steps[-1][:2] == ["shard", "alltoall"] and campaign.counts_up_to(6) == [1, 2, 4, 6]


def test_a_shard_can_live_in_host_memory_behind_an_hbm_cache():
    from dlrmlab import backend, placement

    if not backend.SIMULATOR:
        pytest.skip("the simulator run of the fast kernel; on a GPU the gpu tests cover it")
    rows = run(_cfg("table_wise", embedding="fast@cached:30%:4-way", model=False, pooling=2, batch=4), 1)
    _assert_correct(rows, 1)
    assert placement.live_pinned_bytes() == 0  # the shards' pinned tables are gone with the run
