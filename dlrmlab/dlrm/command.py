"""``dlrmlab dlrm``: DLRM end to end, every pipeline side by side. Importing this module is cheap (no
torch): the parser is built for every ``dlrmlab`` command."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from dlrmlab.bench.results import append_results, check_results_dir
from dlrmlab.errors import DlrmlabError
from dlrmlab.published import PUBLISHED
from dlrmlab.validate import arg_int, arg_seconds
from dlrmlab.workload import MAX_BATCH

DEFAULT_EMBEDDINGS = "torch,torch_compile,optmt,rpf,fast,fast_graph"
RESULTS_NAME = "dlrm"
#: The headline table (markdown) written beside the figures: best dlrmlab pipeline against eager and the
#: strongest all-PyTorch form of the same run, per dataset at batch 2048.
BEST_TABLE = "dlrm_best.md"
PLOTS = {"breakdown": "dlrm_breakdown.png", "speedup": "dlrm_speedup.png", "sweep": "dlrm_latency_throughput.png"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--embedding", default=DEFAULT_EMBEDDINGS,
                   help="embedding pipelines, comma-separated: torch, a paper variant (baseline, optmt, rpf, rpf_l1, "
                   "rpf_shared, optmt_rpf), fast; NAME_graph = whole batch in one CUDA graph; torch_compile. torch, "
                   "torch_graph and torch_compile are always added as peers (on a GPU); fast@PLACEMENT reads the "
                   "tables from host memory: fast@host, fast@cached:10%%:lru (default %(default)s)")  # fmt: skip
    p.add_argument("--dataset", default="random", help="comma-separated: random, low, medium, high, zipf:A, trace:PATH")
    p.add_argument("--preset", default="auto", help="paper or tiny (default: paper on a GPU, tiny in the simulator)")
    p.add_argument("--batch-sizes", help="comma-separated batch sizes, or 'sweep' for 256,...,16384 "
                   "(default: the preset's batch)")  # fmt: skip
    p.add_argument("--out", help="results directory; rows go to OUT/<gpu family>/dlrm.csv (default: "
                   "$DLRMLAB_RESULTS_DIR, else ./dlrmlab-results)")
    p.add_argument("--repeats", type=arg_int,
                   help="timed rounds per pipeline (default 50; 2 in the simulator)")
    p.add_argument("--batches", type=arg_int, default=2,
                   help="distinct batches rotated through rounds (default 2)")
    p.add_argument("--warmup", type=arg_seconds, help="warm-up seconds (default 0.3; 0 in the simulator)")
    p.add_argument("--seed", type=arg_int, default=0,
                   help="seed of the ids, bag sizes and tables (default %(default)s)")
    p.add_argument("--table-dtype", help="table storage: float32 (default), float16, bfloat16, or quantized rows "
                   "int8, int4, fp8: the fast pipelines read those rows, the others (torch's) the fp32 values they "
                   "hold, so outputs still compare exactly")  # fmt: skip
    p.add_argument("--no-compile", action="store_true",
                   help="leave out the torch.compile and torch_graph peers (compiling is slow)")
    p.add_argument("--plots", action="store_true", help="also write the figures (PNG) beside the CSV")
    p.add_argument("--json", action="store_true", help="print the rows as JSON records")
    p.add_argument("--quiet", action="store_true", help="no progress lines")


def _batch_sizes(text: str | None) -> list[int] | None:
    from dlrmlab.dlrm.measure import SWEEP_BATCH_SIZES  # torch: optional; the CLI's parser imports this module

    if not text:
        return None
    if text.strip() == "sweep":
        return list(SWEEP_BATCH_SIZES)
    try:
        sizes = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise DlrmlabError(f"--batch-sizes: comma-separated integers or 'sweep', got {text!r}") from None
    if not sizes or min(sizes) <= 0 or max(sizes) > MAX_BATCH:
        raise DlrmlabError(f"--batch-sizes must be integers in [1, {MAX_BATCH:,}], got {text!r}")
    return sizes


def format_rows(df) -> str:
    """The CLI's table; rows not timed on a GPU (``timing_valid`` False) show correctness only, no times. The
    last ratio is against the strongest all-PyTorch form of the run (``best_torch``, when ``df`` has it:
    :func:`dlrmlab.dlrm.measure.strongest_torch`)."""
    if not df.empty and not df["timing_valid"].astype(bool).any():
        cols = [c for c in ("pipeline", "dataset", "batch_size", "correct", "error") if c in df and df[c].notna().any()]
        return df[cols].to_string(index=False, na_rep="-")
    cols = ["pipeline", "dataset", "batch_size", "latency_ms", "samples_per_s", "bottom_mlp_ms", "embedding_ms",
            "interaction_ms", "top_mlp_ms", "embedding_share", "speedup_vs_torch", "speedup_vs_best_torch",
            "best_torch", "correct"]  # fmt: skip
    cols = [c for c in cols if c in df]
    return df[cols].to_string(index=False, float_format=lambda v: f"{v:.4g}")


def write_plots(df, out_dir: Path) -> list[Path]:
    """The three figures from every row of the results file (the latest measurement of each pipeline,
    dataset and batch size), so separate runs (datasets at 2048, a sweep on one dataset) add up. The sweep
    figure only once some dataset has several batch sizes. On a GPU also the headline table (:data:`BEST_TABLE`)."""
    from dlrmlab.dlrm import plots  # torch: optional; the CLI's parser imports this module

    made = [(plots.stage_breakdown(df), PLOTS["breakdown"]), (plots.speedup_by_dataset(df), PLOTS["speedup"])]
    if df.groupby("dataset")["batch_size"].nunique().max() > 1:
        made.append((plots.latency_vs_throughput(df), PLOTS["sweep"]))
    paths = []
    for fig, name in made:
        fig.savefig(out_dir / name, dpi=120, bbox_inches="tight")
        paths.append(out_dir / name)
    if df["timing_valid"].astype(bool).any():
        from dlrmlab.dlrm.measure import best_markdown  # torch: optional; the CLI's parser imports this module

        (out_dir / BEST_TABLE).write_text(best_markdown(df))
        paths.append(out_dir / BEST_TABLE)
    return paths


def run_command(args: argparse.Namespace, out_dir: Path) -> int:
    """Parse the names, check the output directory, run, print, append, plot."""
    from dlrmlab import backend  # numba: the CLI's parser imports this module

    try:
        # torch: optional; asked here whether it is installed
        import torch  # noqa: F401
    except Exception as e:
        raise DlrmlabError(f"dlrmlab dlrm needs PyTorch (pip install -e '.[torch]'): {e}") from None
    from dlrmlab.dlrm.measure import (  # torch: optional; the CLI's parser imports this module
        best_pipelines,
        run_dlrm,
        strongest_torch,
    )

    names = [x.strip() for x in args.embedding.split(",") if x.strip()]
    datasets = [x.strip() for x in args.dataset.split(",") if x.strip()]
    preset = backend.default_preset() if args.preset in (None, "auto") else args.preset
    if args.table_dtype:
        from dlrmlab.workload import preset as make_preset

        preset = make_preset(preset, dtype=args.table_dtype)
    check_results_dir(out_dir)
    say = (lambda s: None) if args.quiet or args.json else (lambda s: print(s, flush=True))
    if backend.SIMULATOR:
        say("no CUDA GPU: simulator mode; outputs are checked, timings mean nothing (timing_valid=False)")
    path = out_dir / f"{RESULTS_NAME}.csv"
    df, skipped = run_dlrm(names, datasets, preset, batch_sizes=_batch_sizes(args.batch_sizes), seed=args.seed,
                           n_batches=args.batches, repeats=args.repeats, warmup_s=args.warmup,
                           compile_peer=not args.no_compile, progress=say,
                           on_rows=lambda rows: append_results(rows, RESULTS_NAME, out_dir))  # fmt: skip
    notes = [f"skipped {k}: {v}" for k, v in skipped.items()]
    if args.json:
        print(df.to_json(orient="records"))
    else:
        print(format_rows(strongest_torch(df) if len(df) else df))
        best = best_pipelines(df) if not backend.SIMULATOR else df.iloc[:0]
        if not best.empty:
            print(f"\nbest dlrmlab pipeline at batch 2048, against eager torch and the strongest all-PyTorch form "
                  f"measured in this run (best_torch: eager, its whole-model CUDA graph or torch.compile), with "
                  f"dlrmlab's targets; the paper's best: {PUBLISHED['end_to_end']}x on A100:")
            print(best.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
        notes.append(f"appended {len(df)} row(s) to {path}")
        if args.plots and len(df) and df["latency_ms"].notna().any():
            notes += [f"wrote {p}" for p in write_plots(pd.read_csv(path), out_dir)]
    if backend.SIMULATOR:
        notes.append("simulator: outputs checked; no times shown (the CSV's times have timing_valid=False and "
                     "measure nothing)")
    for n in notes:
        print(n, file=sys.stderr if args.json else sys.stdout)
    return 0 if df["correct"].astype(bool).all() else 1
