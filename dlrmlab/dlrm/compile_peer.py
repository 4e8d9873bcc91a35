"""The strongest torch.compile peer: every setting a PyTorch user would reach for, measured side by side.

A "vs torch.compile" ratio is only as honest as the compile settings behind it. :data:`SETTINGS` holds the
ones a user tries: the modes (``reduce-overhead``, ``max-autotune``, ``max-autotune-no-cudagraphs``), with
``fullgraph=True`` and ``dynamic=False`` (one fixed shape per batch size, no graph breaks), and CUDA graphs
over the whole model (``torch.cuda.graph`` around eager or compiled code: no launch gaps between stages).
:func:`compare_settings` times them all, interleaved with eager, after a correctness check against eager,
on the same inputs; ``python -m dlrmlab.dlrm.compile_peer --out OUT`` writes the rows
(``OUT/<gpu family>/compile_peer.csv``) and names the fastest compiled setting, recorded in the user's tuning
cache. The setting the ``torch_compile`` peer uses is data (:func:`peer_setting`: that cache, else
``compile_peer`` in ``dlrmlab/tuned/defaults.json``, per GPU family). Compile (and autotuning) time is kept
out of the timings and recorded apart (``compile_s``).

Every ratio ``dlrmlab dlrm`` prints against PyTorch's best is against the fastest all-PyTorch form of the
same run: eager, eager in one whole-model CUDA graph (``torch_graph``) or this peer
(:func:`dlrmlab.dlrm.measure.strongest_torch`).

Without a GPU the settings that need one (CUDA graphs, ``reduce-overhead``, ``max-autotune``) are skipped
with the reason and the others run on the CPU, correctness only (``timing_valid=False``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch  # this module is the torch peer: torch is its subject

from dlrmlab import backend, tuned
from dlrmlab.bench import env as benv
from dlrmlab.bench.schema import BASELINE
from dlrmlab.datasets import canonical_name
from dlrmlab.device import family
from dlrmlab.dlrm.measure import OUT_ATOL, Inputs, _recompile_limit, _sync, make_model
from dlrmlab.errors import DlrmlabError


@dataclass(frozen=True)
class Setting:
    """One way to run the all-PyTorch DLRM: ``compile`` kwargs (None: eager) and whether the whole forward
    is then captured in one ``torch.cuda.graph`` per batch."""

    compile: dict | None
    graph: bool = False

    @property
    def needs_gpu(self) -> bool:
        mode = (self.compile or {}).get("mode", "default")
        return self.graph or mode in ("reduce-overhead", "max-autotune")  # these two use CUDA graphs


_STATIC = {"fullgraph": True, "dynamic": False}
#: Every setting compared, by the name rows carry. ``eager`` is the reference of every ratio.
SETTINGS: dict[str, Setting] = {
    "eager": Setting(None),
    "eager+cuda_graph": Setting(None, graph=True),
    "reduce-overhead": Setting({"mode": "reduce-overhead"}),
    "reduce-overhead+static": Setting({"mode": "reduce-overhead", **_STATIC}),
    "default+static": Setting({**_STATIC}),
    "default+static+cuda_graph": Setting({**_STATIC}, graph=True),
    "max-autotune-no-cudagraphs+static": Setting({"mode": "max-autotune-no-cudagraphs", **_STATIC}),
    "max-autotune-no-cudagraphs+static+cuda_graph": Setting({"mode": "max-autotune-no-cudagraphs", **_STATIC},
                                                            graph=True),
    "max-autotune+static": Setting({"mode": "max-autotune", **_STATIC}),
}
#: Settings to leave out of a quick run (max-autotune's GEMM search takes minutes).
SLOW = ("max-autotune+static",)


#: The peer's setting on a GPU with no measured one: the fastest compiled setting measured on the H100
#: (``results/h100/compile_peer.csv``), and one without cudagraph trees. ``reduce-overhead`` was the slowest
#: compiled setting there, and on an H200 (2026-12-06), the DLRM measurement with it as the peer once hit an
#: illegal memory access that did not recur in a second run; cudagraph trees have open reports of the same
#: (pytorch/pytorch#169849, #170617).
DEFAULT_SETTING = "default+static"


def peer_setting(gpu_family: str | None = None) -> str:
    """The setting the ``torch_compile`` peer uses on ``gpu_family``: the fastest compiled setting this module's
    command measured here (the user's tuning cache), else the shipped one, else :data:`DEFAULT_SETTING`."""
    entry = tuned.compile_peer_entry(gpu_family or family())
    name = entry.params.get("setting", DEFAULT_SETTING) if entry else DEFAULT_SETTING
    if name not in SETTINGS or SETTINGS[name].compile is None:
        where = tuned.cache_path() if entry and entry.source == "user-cache" else tuned.SHIPPED.name
        raise DlrmlabError(f"compile_peer setting {name!r} in {where} is not a compiled setting; valid: "
                           f"{', '.join(n for n, s in SETTINGS.items() if s.compile is not None)}")  # fmt: skip
    return name


def runner(model: Any, setting: Setting, inputs: Inputs, compiled: dict) -> tuple[Callable[[int], Any], list]:
    """``run(i)`` for batch ``i`` (no sync) under ``setting``, and the objects to close after. ``compiled``
    keeps compiled functions across calls (one compilation per setting while shapes stay the same)."""
    d = inputs.dense
    # separate tensors per table, as dlrm_s_pytorch's loader gives them (no aliased views for dynamo)
    lists = [([v.clone() for v, _, _ in k.split()], [o.clone() for _, o, _ in k.split()]) for k in inputs.sparse]
    key = json.dumps(setting.compile, sort_keys=True)
    if setting.compile is None:
        fn = model.forward_lists
    else:
        if key not in compiled:
            compiled[key] = torch.compile(model.forward_lists, **setting.compile)
        fn = compiled[key]
    cudagraph_trees = (setting.compile or {}).get("mode") in ("reduce-overhead", "max-autotune")

    def call(i: int) -> Any:
        if cudagraph_trees:
            torch.compiler.cudagraph_mark_step_begin()  # each call is a new inference step
        return fn(d[i], *lists[i])

    for i in range(len(d)):  # compile (or autotune), let cudagraph trees warm up and record
        for _ in range(3):
            call(i)
    if not setting.graph:
        return call, []
    from dlrmlab.dlrm.graph import CapturedCall

    graphs = [CapturedCall(fn, d[i], *lists[i]) for i in range(len(d))]
    return (lambda i: graphs[i].replay()), graphs


def _event() -> Any:
    """A torch CUDA event on torch's current stream (the simulator's host-clock stand-in without a GPU)."""
    return backend.HostEvent() if backend.SIMULATOR else torch.cuda.Event(enable_timing=True)


def _time_rounds(runs: dict[str, Callable[[int], Any]], n_batches: int, repeats: int) -> dict[str, list[float]]:
    """Interleaved rounds (the order rotates each round): per setting, the milliseconds of each forward."""
    ev = (_event(), _event())
    names = list(runs)
    out: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        for k in range(len(names)):
            name = names[(k + r) % len(names)]
            _sync()
            ev[0].record()
            runs[name](r % n_batches)
            ev[1].record()
            ev[1].synchronize()
            out[name].append(ev[0].elapsed_time(ev[1]))
    return out


def compare_settings(
    datasets: Sequence[str], stage: Any = None, *, settings: Sequence[str] | None = None, seed: int = 0,
    n_batches: int = 2, repeats: int | None = None,
) -> pd.DataFrame:
    """One row per (dataset, setting): median/p10/p90 latency, compile time, correctness against eager, and
    ``speedup_vs_eager``. Settings that cannot run here (or fail to compile) get a row with the reason."""
    from dlrmlab import validate
    from dlrmlab.workload import EmbeddingStage, Workload, preset

    names = list(settings or [n for n in SETTINGS if n not in SLOW])
    unknown = [n for n in names if n not in SETTINGS]
    if unknown:
        raise DlrmlabError(f"unknown setting(s) {', '.join(unknown)}; valid: {', '.join(SETTINGS)}")
    names = ["eager"] + [n for n in names if n != "eager"]
    seed, n_batches, repeats, _ = validate.bench_numbers(seed=seed, n_batches=n_batches, repeats=repeats)
    repeats = repeats or (2 if backend.SIMULATOR else 50)
    stage = preset(stage or backend.default_preset()) if not isinstance(stage, EmbeddingStage) else stage
    for ds in datasets:
        validate.check_stage(stage, n_batches, dataset=ds)
    rows, compiled = [], {}
    torch._dynamo.reset()  # every setting compiles from scratch: compile_s is comparable, no stale graphs
    with torch.inference_mode(), _recompile_limit(len(names) + 8):  # one graph per compiled setting
        model = make_model(stage, seed)
        model = model.with_embedding(BASELINE)
        for ds in datasets:
            rows += _one_dataset(model, Workload(stage, ds, seed=seed), names, compiled, n_batches, repeats)
    df = pd.DataFrame(rows)
    eager = df[df["setting"] == "eager"].set_index("dataset")["latency_ms"]
    df["speedup_vs_eager"] = df["dataset"].map(eager) / df["latency_ms"]
    return df


def _one_dataset(model: Any, wl: Any, names: list[str], compiled: dict, n_batches: int, repeats: int) -> list[dict]:
    inputs = Inputs.make(wl, model, n_batches)
    _sync()
    ref = model(inputs.dense[0], inputs.sparse[0]).clone()
    runs, info, closers = {}, {}, []
    for name in names:
        s = SETTINGS[name]
        if s.needs_gpu and backend.SIMULATOR:
            info[name] = {"correct": False, "error": "needs a CUDA GPU (CUDA graphs)"}
            continue
        t0 = time.perf_counter()
        try:
            run, close = runner(model, s, inputs, compiled)
            _sync()
            err = float((run(0) - ref).abs().max())
        except Exception as e:  # one setting that does not compile must not hide the others
            info[name] = {"correct": False, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"}
            print(f"compile_peer: {name} failed: {info[name]['error']}", file=sys.stderr, flush=True)
            continue
        closers += close
        ok = err <= OUT_ATOL
        info[name] = {"correct": ok, "max_abs_err": err, "compile_s": time.perf_counter() - t0,
                      "error": None if ok else "outputs differ from eager's"}
        print(f"compile_peer: {name} ready in {info[name]['compile_s']:.1f} s (compile and warm-up, not timed)",
              file=sys.stderr, flush=True)  # fmt: skip
        if ok:
            runs[name] = run
    try:
        times = _time_rounds(runs, n_batches, repeats)
    finally:
        for c in closers:
            c.close()
    d = wl.stage.describe()
    base = {"dataset": canonical_name(wl.dataset), "preset": d["preset"], "batch_size": d["batch"],
            "device": family(), "timing_valid": not backend.SIMULATOR, "torch_version": torch.__version__}
    rows = []
    for name in names:
        t = times.get(name, [])
        rows.append({**base, "setting": name, "compile": json.dumps(SETTINGS[name].compile),
                     "cuda_graph": SETTINGS[name].graph, "latency_ms": float(np.median(t)) if t else np.nan,
                     "latency_p10_ms": float(np.percentile(t, 10)) if t else np.nan,
                     "latency_p90_ms": float(np.percentile(t, 90)) if t else np.nan, "n_runs": len(t),
                     "max_abs_err": np.nan, "compile_s": np.nan, **info.get(name, {})})
    return rows


def _geomeans(df: pd.DataFrame) -> pd.Series:
    """Geometric-mean latency over the datasets of each compiled setting correct on every dataset and timed on
    a GPU."""
    d = df[(df["setting"] != "eager") & df["timing_valid"].astype(bool)]
    d = d[~d["setting"].str.startswith("eager")]
    ok = d.groupby("setting").filter(lambda g: g["correct"].astype(bool).all() and g["latency_ms"].notna().all())
    return ok.groupby("setting")["latency_ms"].apply(lambda v: float(np.exp(np.log(v).mean())))


def best_setting(df: pd.DataFrame) -> str | None:
    """The compiled setting with the lowest geometric-mean latency over the datasets, among those correct on
    every dataset and timed on a GPU (None if there is none)."""
    g = _geomeans(df)
    return None if g.empty else str(g.idxmin())


def record_best(df: pd.DataFrame, command: str) -> tuple[str, Path] | None:
    """Record the fastest compiled setting of ``df`` in the user's tuning cache, unless a faster one measured
    on the same datasets is recorded there already (runs of a few settings each add up). Returns the setting
    recorded, and where; None when nothing was timed correct here."""
    g = _geomeans(df)
    if g.empty:
        return None
    best, ms, datasets = str(g.idxmin()), float(g.min()), sorted(set(df["dataset"]))
    prev = tuned.compile_peer_entry(family())
    if prev is not None and prev.source == "user-cache" and prev.params.get("datasets") == datasets \
            and prev.params.get("geomean_ms", np.inf) <= ms and prev.params.get("setting") in SETTINGS:
        return str(prev.params["setting"]), tuned.cache_path()
    t = df[df["setting"] == best]
    measured = (f"{benv.environment().get('gpu_name')}, {time.strftime('%Y-%m-%d')}: {command}; "
                + ", ".join(f"{r.dataset} {r.latency_ms:.3f} ms" for r in t.itertuples()))  # fmt: skip
    entry = {"setting": best, "geomean_ms": ms, "datasets": datasets, "measured": measured}
    return best, tuned.store_compile_peer(family(), entry)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m dlrmlab.dlrm.compile_peer``: time every setting, append the rows, name the fastest."""
    from dlrmlab.bench.results import append_results, check_results_dir, default_dir
    from dlrmlab.validate import arg_int

    ap = argparse.ArgumentParser(prog="python -m dlrmlab.dlrm.compile_peer", description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="random", help="comma-separated datasets (default %(default)s)")
    ap.add_argument("--preset", default="auto", help="paper or tiny (default: paper on a GPU, tiny without)")
    ap.add_argument("--settings", help=f"comma-separated, of: {', '.join(SETTINGS)} (default: all but "
                                       f"{', '.join(SLOW)})")
    ap.add_argument("--repeats", type=arg_int, help="timed rounds (default 50; 2 without a GPU)")
    ap.add_argument("--out", help="rows go to OUT/<gpu family>/compile_peer.csv (default ./dlrmlab-results)")
    args = ap.parse_args(argv)
    try:
        out = check_results_dir((Path(args.out) if args.out else default_dir()) / family())
        df = compare_settings([x.strip() for x in args.dataset.split(",") if x.strip()],
                              None if args.preset == "auto" else args.preset,
                              settings=[x.strip() for x in args.settings.split(",")] if args.settings else None,
                              repeats=args.repeats)  # fmt: skip
    except DlrmlabError as e:
        print(f"dlrmlab: error: {e}", file=sys.stderr)
        return 2
    cols = ["dataset", "setting", "latency_ms", "speedup_vs_eager", "compile_s", "correct", "error"]
    if not df["timing_valid"].any():
        cols = [c for c in cols if c not in ("latency_ms", "speedup_vs_eager")]
    print(df[cols].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"appended {len(df)} row(s) to {append_results(df, 'compile_peer', out)}")
    command = f"python -m dlrmlab.dlrm.compile_peer {' '.join(argv if argv is not None else sys.argv[1:])}"
    recorded = record_best(df, command)
    if recorded:
        print(f"fastest torch.compile setting measured here: {recorded[0]} (in {recorded[1]}: the torch_compile "
              "peer of `dlrmlab dlrm` uses it)")
    else:
        print("no compiled setting timed correct here (or no GPU): nothing chosen")
    return 0 if df.loc[df["error"].isna(), "correct"].astype(bool).all() else 1


if __name__ == "__main__":
    sys.exit(main())
