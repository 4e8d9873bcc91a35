"""``dlrmlab host-tables``: tables in host memory behind an HBM cache, measured against their bound.
Importing this module is cheap: the parser is built for every ``dlrmlab`` command."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from dlrmlab.bench.results import check_results_dir
from dlrmlab.datasets import canonical_name, trace_path
from dlrmlab.errors import DlrmlabError
from dlrmlab.workload import preset

#: the GPU shape: 8 tables of 15M rows x 128 fp32 (61 GB), the paper's batch and pooling
HOST_TABLES, HOST_ROWS = 8, 15_000_000
DEFAULT_BUDGETS = "1%,3%,10%,30%"
#: the default datasets; a paper trace among them that is not on this machine is left out with a warning
DEFAULT_DATASETS = "random,trace:medium,zipf:1.05"
#: largest error of a checked bag against the float64 reference (fp32 sums of up to a few hundred rows)
TOLERANCE = 1e-3


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="auto", help="paper (8 tables of 15M rows x 128 fp32, 61 GB, on a GPU) or tiny "
                   "(default: paper on a GPU, tiny in the simulator)")  # fmt: skip
    p.add_argument("--tables", type=int, help="number of tables (paper: 8)")
    p.add_argument("--rows", type=int, help="rows per table (paper: 15,000,000)")
    p.add_argument("--dim", type=int, help="embedding dim")
    p.add_argument("--batch", type=int, help="batch size")
    p.add_argument("--pooling", help="ids per bag: N, uniform:LO-HI or poisson:MEAN")
    p.add_argument("--dataset", help=f"comma-separated datasets (default {DEFAULT_DATASETS}, the trace only where it "
                   "is found); trace ids are spread over the tables' rows")  # fmt: skip
    p.add_argument("--budgets", default=DEFAULT_BUDGETS, help="cache budgets, a share of the tables' bytes "
                   "(default %(default)s)")  # fmt: skip
    p.add_argument("--ways", type=int, default=32, help="cache associativity (default %(default)s)")
    p.add_argument("--warmup", type=int, help="batches served before timing (default 4; 1 in the simulator)")
    p.add_argument("--batches", type=int, help="timed batches (default 10; 2 in the simulator)")
    p.add_argument("--threads", type=int, default=16, help="CPU threads filling the host tables (the cache is "
                   "managed on the GPU; default %(default)s)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="seed of the ids and tables (default %(default)s)")
    p.add_argument("--out", help="results directory; rows go to OUT/<gpu family>/host_tables.csv and host_link.csv "
                   "(default: $DLRMLAB_RESULTS_DIR, else ./dlrmlab-results)")  # fmt: skip


def stage(args: argparse.Namespace, preset_name: str) -> Any:
    """The stage shape of the command's options (paper: the host-table shape)."""
    over: dict = {}
    if preset_name == "paper":
        over = {"tables": HOST_TABLES, "rows": HOST_ROWS}
    for key, name in (("rows", "rows"), ("tables", "tables"), ("batch", "batch_size"), ("dim", "sparse_feature_size")):
        v = getattr(args, key)
        if v is not None:
            if v <= 0:
                raise DlrmlabError(f"--{key} must be positive, got {v}")
            over[name] = v
    if args.pooling is not None:
        over["pooling"] = args.pooling
    return preset(preset_name, **over)


def _datasets(option: str | None) -> list[str]:
    """The datasets to run; a bad name or a missing trace is refused before any memory is pinned, except a
    default trace that is not here (left out, with a warning)."""
    datasets = [d.strip() for d in (option if option is not None else DEFAULT_DATASETS).split(",") if d.strip()]
    if not datasets:
        raise DlrmlabError("--dataset needs at least one dataset")
    kept = []
    for d in datasets:
        name = canonical_name(d)
        if name.startswith("trace:"):
            try:
                found = trace_path(name[6:]).is_file()
            except DlrmlabError:
                if option is not None:
                    raise
                found = False
            if not found:
                if option is not None:
                    raise DlrmlabError(f"{d}: no such trace file")
                print(f"dlrmlab: warning: {d} is not on this machine (set DLRMLAB_DATA_DIR or run `dlrmlab data "
                      "fetch`); running the other datasets", file=sys.stderr)
                continue
        kept.append(d)
    return kept


def run_command(args: argparse.Namespace, out_dir: Any, preset_name: str) -> int:
    from dlrmlab import backend, hostbench, hostreport  # numba: the CLI's parser imports this module
    from dlrmlab.placement import parse_budget  # numba: the CLI's parser imports this module

    budgets = [parse_budget(b) for b in args.budgets.split(",") if b.strip()]
    if not budgets or any(not 0 < b <= 1 for b in budgets):
        raise DlrmlabError(f"--budgets must be shares of the tables in (0, 1], e.g. 1%,10%; got {args.budgets!r}")
    datasets = _datasets(args.dataset)
    warmup = args.warmup if args.warmup is not None else (1 if backend.SIMULATOR else 4)
    timed = args.batches if args.batches is not None else (2 if backend.SIMULATOR else 10)
    if warmup < 0 or timed <= 0 or args.threads <= 0 or args.ways <= 0:
        raise DlrmlabError("--warmup must be >= 0; --batches, --threads and --ways positive")
    st = stage(args, preset_name)
    out = check_results_dir(out_dir)
    t0 = time.perf_counter()
    df = hostbench.run(st, datasets, budgets, out, warmup=warmup, timed=timed, ways=args.ways,
                       threads=args.threads, seed=args.seed, command=" ".join(["dlrmlab", *sys.argv[1:]]))
    print(f"appended {len(df)} row(s) to {out}/host_tables.csv, the link's rates to {out}/host_link.csv "
          f"({time.perf_counter() - t0:.0f} s, pinning and unpinning included)")
    written = hostreport.write(out)
    print(f"wrote {', '.join(str(p) for p in written)}")
    bad = df[df["max_abs_err"] > TOLERANCE]
    for r in bad.itertuples():
        print(f"dlrmlab: incorrect result: {r.dataset} {r.placement_spec}: max abs error {r.max_abs_err:.3g}")
    return 1 if len(bad) else 0
