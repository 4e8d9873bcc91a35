"""The CPU L2 model: exact small cases, orders, pinning, validation, sweeps, the ncu join, speed."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pandas as pd
import pytest

from dlrmlab import l2model as m
from dlrmlab.errors import DlrmlabError

LINE = 128


def small(sets: int = 8, ways: int = 4, **kw) -> m.L2Config:
    """A cache of ``sets`` x ``ways`` 128-byte lines; persisting_max up to all ways but one."""
    kw.setdefault("persisting_max", (ways - 1) * sets * LINE)
    return m.L2Config(size=sets * ways * LINE, line=LINE, sector=32, ways=ways, **kw)


def one_table(ids, rows: int = 1024) -> m.Trace:
    return m.Trace([[np.asarray(ids, np.int64)]], (rows,))


# --- geometry ---------------------------------------------------------------------------------------------


def test_h100_defaults():
    c = m.L2Config()
    assert (c.size, c.line, c.sector, c.ways) == (52_428_800, 128, 32, 16)
    assert c.persisting_max == 32_768_000
    assert c.sets == 25_600 and c.way_bytes == 3_276_800
    assert c.carve_out_ways(32_768_000) == 10  # the H100's maximum is exactly 10 of 16 ways
    assert c.carve_out_ways(30_720_000) == 10  # rounded up to whole ways
    assert c.carve_out_ways(1) == 1 and c.carve_out_ways(0) == 0
    assert c.describe()["sets"] == 25_600


@pytest.mark.parametrize(
    "kw, words",
    [
        ({"size": 1000}, ["size", "1000", "line x ways"]),
        ({"line": 100}, ["line", "100", "sector"]),
        ({"ways": 0}, ["ways", "0"]),
        ({"sector": 2.5}, ["sector", "2.5"]),
        ({"ways": True}, ["ways", "True"]),
        ({"line": 1024, "sector": 32, "size": 1024 * 16 * 10}, ["16 sectors"]),
        ({"persisting_max": 52_428_800}, ["persisting_max", "52428800"]),
        ({"persisting_max": -1}, ["persisting_max", "-1"]),
        ({"lend_unused": "yes"}, ["lend_unused"]),
    ],
)
def test_config_validation(kw, words):
    with pytest.raises(DlrmlabError) as e:
        m.L2Config(**kw)
    for w in words:
        assert w in str(e.value)


def test_carve_out_over_max_is_refused():
    with pytest.raises(DlrmlabError, match="carve_out.*40000000"):
        m.L2Config().carve_out_ways(40_000_000)
    with pytest.raises(DlrmlabError, match="carve_out"):
        m.simulate(one_table([0]), 128, small(), pinned=[[0]], carve_out=small().persisting_max + 1)


# --- exact small cases ------------------------------------------------------------------------------------


def test_a_trace_that_fits_hits_after_first_touch():
    ids = list(range(32)) * 3  # 32 lines = the whole 8 x 4 cache
    r = m.simulate(one_table(ids), 128, small())
    assert r.lookups == 96 and r.line_accesses == 96
    assert r.line_hits == 64 and r.sector_hits == 64 * 4 and r.sector_accesses == 96 * 4
    assert r.hit_rate == pytest.approx(2 / 3)
    assert r.dram_bytes == 32 * 4 * 32  # first touches only
    assert r.evictions == 0


def test_cyclic_over_capacity_plus_one_in_one_set_never_hits():
    cfg = small(sets=8, ways=4)
    five = [0, 8, 16, 24, 32]  # five lines of set 0, four ways
    assert m.simulate(one_table(five * 20), 128, cfg).hit_rate == 0.0
    four = five[:4]
    r = m.simulate(one_table(four * 20), 128, cfg)
    assert r.sector_hits == (80 - 4) * 4


def test_associativity():
    pair = [0, 8] * 10  # two lines of one set
    assert m.simulate(one_table(pair), 128, small(sets=8, ways=1)).hit_rate == 0.0  # direct-mapped: conflict
    assert m.simulate(one_table(pair), 128, small(sets=8, ways=2)).line_hits == 18
    five = [0, 8, 16, 24, 32] * 10
    assert m.simulate(one_table(five), 128, small(sets=8, ways=4)).hit_rate == 0.0
    assert m.simulate(one_table(five), 128, small(sets=8, ways=8)).line_hits == 45


def test_multi_line_rows_read_every_line_and_sector():
    r = m.simulate(one_table([3, 3]), 512, small())  # 4 lines per 512-byte row
    assert r.line_accesses == 8 and r.line_hits == 4 and r.sector_accesses == 32 and r.sector_hits == 16


def test_sectors_a_line_present_but_sector_missing_is_a_miss():
    # 64-byte rows: rows 0 and 1 share line 0, two sectors each
    r = m.simulate(one_table([0, 1, 0, 1]), 64, small())
    assert r.line_accesses == 4 and r.sector_accesses == 8
    assert r.sector_hits == 4  # the second touches
    assert r.line_hits == 2
    assert r.dram_bytes == 4 * 32


def test_tables_have_distinct_address_ranges():
    tr = m.Trace([[np.array([5]), np.array([5])]], (100, 100))
    r = m.simulate(tr, 128, small())
    assert r.sector_hits == 0  # row 5 of table 0 is not row 5 of table 1
    bases = m.table_bases((100, 100), 128)
    assert bases[1] >= 100 * 128 and bases[1] % m.TABLE_ALIGN == 0


def lru_reference(lines, sets, ways, pinned=frozenset(), pin_ways=0):
    """Pure-Python set-associative LRU, pinned lines in their own LRU partition of ``pin_ways``."""
    normal = [OrderedDict() for _ in range(sets)]
    pers = [OrderedDict() for _ in range(sets)]
    hits = 0
    for ln in lines:
        s = ln % sets
        part, cap = (pers[s], pin_ways) if (ln in pinned and pin_ways) else (normal[s], ways - pin_ways)
        if ln in part:
            hits += 1
            part.move_to_end(ln)
        else:
            if len(part) >= cap:
                part.popitem(last=False)
            part[ln] = True
    return hits


@pytest.mark.parametrize("seed", range(6))
def test_matches_a_python_lru_reference(seed):
    rng = np.random.default_rng(seed)
    sets, ways = int(rng.choice([1, 4, 8])), int(rng.choice([1, 2, 4, 8]))
    pin_ways = int(rng.integers(0, ways)) if ways > 1 else 0
    ids = rng.zipf(1.3, 3000) % 200
    pinned = np.unique(rng.choice(200, 20, replace=False)) if pin_ways else None
    cfg = small(sets=sets, ways=ways)
    kw = {"pinned": [pinned], "carve_out": pin_ways * sets * LINE} if pinned is not None else {}
    r = m.simulate(one_table(ids, 200), 128, cfg, **kw)
    ref = lru_reference(ids.tolist(), sets, ways, frozenset(pinned.tolist()) if pinned is not None else frozenset(),
                        pin_ways)
    assert r.line_hits == ref


# --- orders -----------------------------------------------------------------------------------------------


def test_table_major_vs_interleaved():
    cfg = small(sets=1, ways=1)
    tr = m.Trace([[np.array([0, 0]), np.array([0, 0])]], (10, 10))
    assert m.simulate(tr, 128, cfg, order="table-major").line_hits == 2  # t0 miss, hit; t1 miss, hit
    assert m.simulate(tr, 128, cfg, order="interleaved", tables_at_once=2).line_hits == 0  # t0, t1, t0, t1
    assert m.simulate(tr, 128, cfg, order="interleaved", tables_at_once=1).line_hits == 2


def test_interleaved_order_is_round_robin_over_groups():
    parts = [np.arange(3), np.arange(3) + 10, np.arange(3) + 20, np.arange(3) + 30]
    flat = np.concatenate(parts)
    got = flat[m._order(parts, "interleaved", 2)]
    assert got.tolist() == [0, 10, 1, 11, 2, 12, 20, 30, 21, 31, 22, 32]
    # unequal lengths advance at the same relative pace
    got = np.concatenate([np.arange(4), [10, 11]])[m._order([np.arange(4), np.array([10, 11])], "interleaved", 2)]
    assert sorted(got.tolist()) == [0, 1, 2, 3, 10, 11] and got.tolist().index(11) > got.tolist().index(1)


# --- pinning and the carve-out ----------------------------------------------------------------------------


def test_pinning_keeps_pinned_rows_hitting():
    cfg = small(sets=8, ways=4)
    stream = []
    for k in range(1, 30):  # row 0, then four other lines of set 0, again and again
        stream += [0, 8 * (4 * k), 8 * (4 * k + 1), 8 * (4 * k + 2), 8 * (4 * k + 3)]
    tr = one_table(stream, 2048)
    plain = m.simulate(tr, 128, cfg)
    pinned = m.simulate(tr, 128, cfg, pinned=[[0]], carve_out=cfg.way_bytes)
    assert plain.line_hits == 0
    assert pinned.pinned_sector_accesses == 29 * 4
    assert pinned.pinned_sector_hits == 28 * 4  # all but the first touch
    assert pinned.line_hits == 28
    assert pinned.carve_out_bytes == cfg.way_bytes and pinned.pinned_rows == 1


def test_carve_out_reduces_normal_capacity():
    cfg = small(sets=8, ways=4)
    four = one_table([0, 8, 16, 24] * 10, 2048)  # four lines of set 0: fits four ways
    assert m.simulate(four, 128, cfg).line_hits == 36
    # one way set aside for a pinned row never looked up: three ways left, a cyclic miss
    r = m.simulate(four, 128, cfg, pinned=[[1000]], carve_out=cfg.way_bytes)
    assert r.line_hits == 0
    # unless normal lines may borrow carve-out ways no pinned line holds
    lend = m.simulate(four, 128, cfg.with_(lend_unused=True), pinned=[[1000]], carve_out=cfg.way_bytes)
    assert lend.line_hits == 36


def test_pinned_lines_are_not_evicted_by_normal_lines_but_by_each_other():
    cfg = small(sets=1, ways=4)
    # pinned rows 0, 1 (one carve-out way); normal rows 10..12 (three ways)
    ids = [0, 10, 11, 12, 0, 10, 11, 12]
    r = m.simulate(one_table(ids, 100), 128, cfg, pinned=[[0]], carve_out=cfg.way_bytes)
    assert r.line_hits == 4
    r = m.simulate(one_table([0, 1, 0, 1], 100), 128, cfg, pinned=[[0, 1]], carve_out=cfg.way_bytes)
    assert r.line_hits == 0  # two pinned lines, one persisting way


def test_pin_modes_prefill_and_hit_ratio():
    cfg = small(sets=8, ways=4)
    tr = m.Trace([[np.array([0, 1, 2]), np.array([0, 1])]], (64, 64))
    pins = [[0, 1], [0]]
    # a pin kernel before each table: the pinned rows hit on their first lookup; its fetches are counted apart
    r = m.simulate(tr, 128, cfg, pinned=pins, carve_out=cfg.way_bytes * 2, pin="table")
    assert r.line_hits == 3 and r.prefill_dram_bytes == 3 * 128
    r = m.simulate(tr, 128, cfg, pinned=pins, carve_out=cfg.way_bytes * 2, pin="batch", order="interleaved")
    assert r.line_hits == 3 and r.prefill_dram_bytes == 3 * 128
    # a window: persisting from first touch, nothing prefetched
    r = m.simulate(tr, 128, cfg, pinned=pins, carve_out=cfg.way_bytes * 2, pin="window")
    assert r.line_hits == 0 and r.prefill_dram_bytes == 0 and r.pinned_sector_accesses == 3 * 4
    r = m.simulate(tr, 128, cfg, pinned={0: [0, 1], 1: [0]}, carve_out=cfg.way_bytes, pin="window", hit_ratio=0.0)
    assert r.pinned_sector_accesses == 0
    with pytest.raises(DlrmlabError, match="order='table-major'"):
        m.simulate(tr, 128, cfg, pinned=pins, pin="table", order="interleaved")


def test_hit_ratio_selects_about_that_share_of_lines():
    ids = np.arange(20_000)
    r = m.simulate(one_table(ids, 20_000), 128, m.L2Config(), pinned=[ids], hit_ratio=0.3)
    assert r.pinned_share == pytest.approx(0.3, abs=0.02)


# --- warm-up and passes -----------------------------------------------------------------------------------


def test_warmup_is_not_counted_and_passes_replay():
    cfg = small()
    tr = one_table([0, 1, 2])
    assert m.simulate(tr, 128, cfg).line_hits == 0
    assert m.simulate(tr, 128, cfg, warmup=tr).line_hits == 3
    first, second = m.simulate(tr, 128, cfg, passes=2, all_passes=True)
    assert (first.line_hits, second.line_hits) == (0, 3)


# --- traces and validation --------------------------------------------------------------------------------


def test_trace_from_workload_and_conversions():
    from dlrmlab.workload import Workload, preset

    stage = preset("tiny")
    tr = m.Trace.from_workload(stage, "random", seed=0, n_batches=2)
    assert tr.n_batches == 2 and tr.n_tables == 3 and tr.rows == stage.embedding_sizes
    assert tr.lookups == 2 * 3 * stage.batch_size * 5
    b = next(Workload(stage, "random", seed=0).batches(1))
    assert np.array_equal(m.Trace.of(b).ids[0][1], b.tables[1].indices)
    assert m.Trace.of([b, b]).n_batches == 2
    assert m.Trace.of([[0, 1], [2]]).rows == (2, 3)  # per-table id lists of one batch
    assert m.Trace.of([[np.array([1]), np.array([2])], [np.array([3]), np.array([0])]]).n_batches == 2
    sel = tr.select([1], [2])
    assert sel.n_batches == 1 and sel.ids[0][0].size == 0 and sel.ids[0][2].size == stage.batch_size * 5
    assert tr.counts(0).sum() == 2 * stage.batch_size * 5


@pytest.mark.parametrize(
    "call, words",
    [
        (lambda: m.Trace([[np.array([5])]], (5,)), ["id 5", "0..4"]),
        (lambda: m.Trace([[np.array([-1])]], (5,)), ["id -1"]),
        (lambda: m.Trace([[np.array([1]), np.array([1])]], (5,)), ["2 tables"]),
        (lambda: m.Trace([[np.array([0.5])]], (5,)), ["integer"]),
        (lambda: m.Trace.of(np.arange(3)), ["wrap"]),
        (lambda: m.simulate(one_table([0]), 128, small(), order="random"), ["order", "random"]),
        (lambda: m.simulate(one_table([0]), 0, small()), ["row_bytes", "0"]),
        (lambda: m.simulate(one_table([0]), 128, small(), tables_at_once=0), ["tables_at_once", "0"]),
        (lambda: m.simulate(one_table([0]), 128, small(), hit_ratio=1.5), ["hit_ratio", "1.5"]),
        (lambda: m.simulate(one_table([0]), 128, small(), pin="sometimes"), ["pin mode", "sometimes"]),
        (lambda: m.simulate(one_table([0]), 128, small(), pinned=[[0], [1]]), ["one row array per table"]),
        (lambda: m.simulate(one_table([0], 10), 128, small(), pinned=[[10]]), ["pinned", "0..9"]),
        (lambda: m.simulate(one_table([0]), 128, small(), passes=0), ["passes", "0"]),
        (lambda: m.simulate(one_table([0]), 128, config="H100"), ["L2Config"]),
        (lambda: m.policy_for("nonsense"), ["nonsense", "fast"]),
        (lambda: m.Policy("x", order="sideways"), ["sideways"]),
        (lambda: m.hit_rate_table({}), ["empty"]),
        (lambda: m.hit_rate_table({"a": one_table([0])}, warmup_batches=1), ["warmup_batches=1"]),
    ],
)
def test_validation_errors_name_the_argument(call, words):
    with pytest.raises(DlrmlabError) as e:
        call()
    for w in words:
        assert w in str(e.value)


# --- policies, layouts, sweeps ----------------------------------------------------------------------------


def test_policies_cover_the_variants():
    assert m.policy_for("fast_graph+window").name == "fast+window"
    assert m.policy_for("torch").name == "per-table"
    assert m.policy_for("l2p").pin == "table"
    assert m.policy_for("fast").order == "interleaved"
    assert m.policy_for(m.POLICIES["fast"]) is m.POLICIES["fast"]


def test_split_budget_matches_the_window_variants():
    rng = np.random.default_rng(1)
    counts = [np.sort(rng.zipf(1.5, 300) % 50)[::-1] for _ in range(3)]
    ours = m.split_budget(counts, 512, 40 * 512)
    assert sum(ours) == 40
    l2window = pytest.importorskip("dlrmlab.l2window")
    assert ours == l2window.split_budget(counts, [512] * 3, 40 * 512)


def test_layouts():
    tr = m.Trace([[np.array([3, 3, 3, 1]), np.array([2, 2, 0])]], (5, 4))
    plain = m.layout(tr, 512)
    assert plain[0][1] - plain[0][0] == 512 and plain[1][0] >= 5 * 512
    ranked = m.layout(tr, 512, "ranked")
    assert ranked[0][3] == ranked[0].min() and ranked[1][2] == ranked[1].min()  # hottest rows first
    split = m.layout(tr, 512, "split-hot", hot_rows=[1, 1])
    assert {split[0][3], split[1][2]} == {0, 512}  # every table's hottest row at the front, together
    all_addr = np.concatenate(split)
    assert np.unique(all_addr).size == all_addr.size
    with pytest.raises(DlrmlabError, match="hot_rows"):
        m.layout(tr, 512, "split-hot")
    with pytest.raises(DlrmlabError, match="layout"):
        m.layout(tr, 512, "diagonal")


def test_hit_rate_table_is_tidy_and_pinning_helps_skewed_data():
    from dlrmlab.workload import preset

    stage = preset("paper", tables=2, rows=20_000, batch_size=64, pooling=50)
    traces = {d: m.Trace.from_workload(stage, d, seed=0, n_batches=2) for d in ("random", "zipf:1.1")}
    cfg = m.L2Config(size=128 * 16 * 64, persisting_max=128 * 64 * 8)  # 128 KiB: far smaller than the tables
    fits = m.POLICIES["per-table+l2p"].with_(name="l2p-fits", hot_rows=64)  # 64 x 512 B: half the carve-out
    over = m.POLICIES["per-table+l2p"].with_(name="l2p-60K", hot_rows=60_000)
    df = m.hit_rate_table(traces, [*m.POLICIES, fits, over], 512, cfg, warmup_batches=1)
    assert len(df) == 2 * (len(m.POLICIES) + 2)
    assert {"dataset", "policy", "hit_rate", "dram_bytes", "prefill_dram_bytes", "pinned_share"} <= set(df.columns)
    assert df["hit_rate"].between(0, 1).all()
    h = df.set_index(["dataset", "policy"])["hit_rate"]
    assert h["zipf:1.1", "per-table"] > h["random", "per-table"]
    assert h["zipf:1.1", "l2p-fits"] > h["zipf:1.1", "per-table"]
    assert h["zipf:1.1", "per-table+window"] > h["zipf:1.1", "per-table"]
    # pinning 60K rows per table through a 64 KB carve-out only thrashes it, and costs normal capacity
    assert h["zipf:1.1", "l2p-60K"] < h["zipf:1.1", "per-table"]
    sweep = m.carve_out_sweep(traces["zipf:1.1"], [0, cfg.way_bytes, 4 * cfg.way_bytes], config=cfg)
    assert sweep["carve_out"].tolist() == [0, cfg.way_bytes, 4 * cfg.way_bytes]
    fp = m.footprint_table(traces, 512, cfg)
    assert set(fp["dataset"]) == set(traces) and (fp["distinct_rows_per_table"] > 0).all()


# --- against ncu ------------------------------------------------------------------------------------------


def test_ncu_predictions_and_compare():
    model = m.ncu_predictions(["random"], ["baseline", "torch", "fast"], preset="tiny", n_batches=4)
    assert set(model["warm_state"]) == set(m.WARM_STATES)
    assert len(model) == 3 * 2
    # tiny tables fit in L2: a replayed launch hits everything it touched before
    replay = model[(model["warm_state"] == "replayed launch") & (model["variant"] == "baseline")]
    assert replay["predicted"].iloc[0] == 1.0
    ncu = pd.DataFrame({"variant": ["baseline", "fast", "rpf_l1x"], "dataset": ["random"] * 3,
                        "l2_hit_rate": [0.5, 0.25, 0.1], "l1_hit_rate": [0.5, 0.0, 0.0]})
    cmp = m.compare_with_ncu(model, ncu)
    assert set(cmp["variant"]) == {"baseline", "fast"}  # torch was not profiled; rpf_l1x has no policy
    row = cmp[(cmp["variant"] == "baseline") & (cmp["warm_state"] == "replayed launch")].iloc[0]
    assert row["measured"] == 0.5 and row["difference"] == pytest.approx(0.5)
    assert row["measured_onchip"] == pytest.approx(0.75) and row["difference_onchip"] == pytest.approx(0.25)
    # a hit_rate_table joins by policy
    table = m.hit_rate_table({"random": m.Trace.from_workload("tiny", "random")}, ["per-table", "fast"])
    cmp2 = m.compare_with_ncu(table, ncu)
    assert set(cmp2["policy"]) == {"per-table", "fast"}
    with pytest.raises(DlrmlabError, match="l2_hit_rate"):
        m.compare_with_ncu(model, ncu.drop(columns="l2_hit_rate"))


def test_teaching_datasets(tmp_path, monkeypatch):
    monkeypatch.delenv("DLRMLAB_DATA_DIR", raising=False)
    ds, note = m.teaching_datasets()
    assert ds == {"low": "low", "medium": "medium", "random": "random"} and "not found" in note
    (tmp_path / "reuse_low_500K.txt").write_text("1\n2\n")
    (tmp_path / "reuse_medium_500K.txt").write_text("3\n")
    monkeypatch.setenv("DLRMLAB_DATA_DIR", str(tmp_path))
    ds, note = m.teaching_datasets()
    assert ds["low (trace)"] == f"trace:{tmp_path / 'reuse_low_500K.txt'}" and "real traces" in note
    stage, cfg, note = m.teaching_setup("tiny")
    assert cfg.size * 4 == m.H100_L2_BYTES and stage.embedding_sizes[0] * 4 == 500_000 and "quarter" in note
    assert stage.num_tables == 12 and stage.batch_size * 4 == 2048
    stage, cfg, _ = m.teaching_setup("paper")
    assert stage.num_tables == 12 and cfg == m.L2Config()
    with pytest.raises(DlrmlabError, match="preset"):
        m.teaching_setup("huge")


# --- speed ------------------------------------------------------------------------------------------------


def test_a_moderate_trace_completes():
    """Half a million lookups of 512-byte rows (2M line accesses) through the full H100 geometry."""
    rng = np.random.default_rng(0)
    ids = [rng.integers(0, 200_000, 250_000), rng.integers(0, 200_000, 250_000)]
    r = m.simulate(m.Trace([ids], (200_000, 200_000)), 512, order="interleaved")
    assert r.line_accesses == 2_000_000 and 0 < r.hit_rate < 1


def test_ncu_comparison_finds_trace_files_by_name(tmp_path, monkeypatch):
    (tmp_path / "t.txt").write_text("\n".join(str(i % 97) for i in range(500)) + "\n")
    prof = pd.DataFrame({"variant": ["baseline", "fast", "nonsense"], "dataset": ["trace:.dev/t.txt"] * 3,
                         "seed": 0, "preset": "tiny", "l2_hit_rate": [0.9, 0.8, 0.1], "l1_hit_rate": 0.0})
    path = tmp_path / "profile.csv"
    prof.to_csv(path, index=False)
    monkeypatch.delenv("DLRMLAB_DATA_DIR", raising=False)
    with pytest.raises(DlrmlabError, match="nothing to compare"):
        m.ncu_comparison(path)
    monkeypatch.setenv("DLRMLAB_DATA_DIR", str(tmp_path))
    out = tmp_path / "out" / "cmp.csv"
    df = m.ncu_comparison(path, out=out)
    assert set(df["variant"]) == {"baseline", "fast"} and set(df["dataset"]) == {"trace:.dev/t.txt"}
    assert len(df) == 4 and out.exists()
    assert df["predicted"].between(0, 1).all()
