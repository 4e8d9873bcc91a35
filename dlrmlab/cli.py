"""The ``dlrmlab`` command. Handlers are thin: parse, call the library, print.

Exit status (also in ``dlrmlab --help``): 0 ok; 1 a result was incorrect (or an experiment failed); 2 a bad
request (a user error: one ``dlrmlab: error:`` line, never a traceback); 130 interrupted (Ctrl-C: the rows
already appended stay, and are listed); 141 stdout was closed early (``dlrmlab bench --json | head -1``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

from dlrmlab import __version__, hotness, paper_data, validate
from dlrmlab.bench import results
from dlrmlab.bench.results import append_results, check_results_dir, default_dir
from dlrmlab.config import KERNEL_MODES, json_object
from dlrmlab.device import family
from dlrmlab.dlrm.command import add_arguments as add_dlrm_arguments
from dlrmlab.errors import EXIT_BROKEN_PIPE, EXIT_INCORRECT, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, DlrmlabError
from dlrmlab.host_command import add_arguments as add_host_arguments
from dlrmlab.shard.command import add_arguments as add_shard_arguments
from dlrmlab.validate import MAX_BATCHES, MAX_IDS, MAX_REPEATS, SEED_MAX, SHRINK_HINT, arg_int, arg_seconds
from dlrmlab.validate import integer as check_integer
from dlrmlab.validate import seconds as check_seconds
from dlrmlab.workload import MAX_BATCH, MAX_DIM, MAX_ROWS, MAX_TABLES, Workload, preset

EXIT_CODES_HELP = (
    "exit status: 0 ok; 1 a result was incorrect (a variant's output did not match the NumPy reference, or an "
    "experiment failed); 2 a bad request (user error); 130 interrupted (Ctrl-C: rows already appended are "
    "kept and listed); 141 stdout closed early (e.g. piped into head)"
)

_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}

#: The range of every numeric flag (by its ``argparse`` dest), checked for whichever command has it, before
#: the command runs: a refusal names the flag as typed. ``None`` bounds a duration in seconds.
FLAG_RANGES: dict[str, tuple[int, int] | None] = {
    "rows": (1, MAX_ROWS), "tables": (1, MAX_TABLES), "batch": (1, MAX_BATCH), "dim": (1, MAX_DIM),
    "seed": (0, SEED_MAX), "ids": (1, MAX_IDS), "repeats": (1, MAX_REPEATS), "batches": (1, MAX_BATCHES),
    "launch_skip": (0, MAX_REPEATS), "launch_count": (1, MAX_REPEATS), "serving_block": (1, MAX_REPEATS),
    "repeat_runs": (1, MAX_REPEATS), "warmup": None, "timeout": None,
}  # fmt: skip


def check_flags(args: argparse.Namespace) -> None:
    """Every numeric flag given in range (:data:`FLAG_RANGES`), or a :class:`DlrmlabError` naming it."""
    for dest, bounds in FLAG_RANGES.items():
        value = getattr(args, dest, None)
        if value is None:
            continue
        flag = "--" + dest.replace("_", "-")
        if bounds is None:
            check_seconds(flag, value)
            if dest == "timeout" and value == 0:
                raise DlrmlabError(f"{flag} must be positive, got {value}")
        else:
            check_integer(flag, value, *bounds)


def _command(name: str):
    def deco(fn):
        _COMMANDS[name] = fn
        return fn

    return deco


# --- info ------------------------------------------------------------------------------------------------


def info_dict() -> dict:
    from dlrmlab import backend, cudart, device, tuned  # numba (backend): not loaded by --help or a usage error

    versions = {"dlrmlab": __version__, "python": platform.python_version(), **cudart.package_versions()}
    out: dict = {"mode": backend.mode(), "versions": versions, "fast_path_knobs": tuned.describe(device.family())}
    missing = backend.missing_toolkit()
    if missing:
        out["toolkit_missing"] = missing
    if backend.SIMULATOR:
        out["message"] = backend.describe_mode()
        out["reasons"] = backend.simulator_reasons()
        return out
    p = cudart.device_properties()
    keys = ("name", "compute_capability", "sms", "l2_bytes", "persisting_l2_max_bytes",
            "access_policy_max_window_bytes", "regs_per_sm", "threads_per_sm", "global_mem_bytes")
    out["gpu"] = {k: p[k] for k in keys}
    out["driver"] = cudart.driver_version()
    return out


@_command("info")
def _info(args: argparse.Namespace) -> int:
    d = info_dict()
    if args.json:
        print(json.dumps(d, indent=2))
        return EXIT_OK
    if "gpu" in d:
        for k, v in d["gpu"].items():
            print(f"{k:32s} {v:,}" if isinstance(v, int) else f"{k:32s} {v}")
        print(f"{'driver (CUDA)':32s} {d['driver']}")
    else:
        print(d["message"])
        for why in d.get("reasons", []):
            print(f"  why: {why}")
    if d.get("toolkit_missing"):
        print(f"  CUDA toolkit pieces numba-cuda compiles kernels with are missing: {', '.join(d['toolkit_missing'])}"
              f"; {'kernels will not compile on the GPU' if 'gpu' in d else 'needed on a GPU machine'}: "
              "pip install -e '.[gpu]' (numba-cuda[cu12], CUDA 12 drivers or newer)")
    print(f"{'fast-path knobs':32s} {d['fast_path_knobs']}")
    for k, v in d["versions"].items():
        print(f"{k:32s} {v or 'not installed'}")
    return EXIT_OK


# --- workload --------------------------------------------------------------------------------------------


def _preset(args: argparse.Namespace) -> str:
    """The one --preset default rule: ``auto`` is paper on a GPU, tiny in the simulator."""
    from dlrmlab import backend  # numba (backend): not loaded by --help or a usage error

    return backend.default_preset() if args.preset in (None, "auto") else args.preset


def _out_dir(args: argparse.Namespace):
    """Every command writes under ``<--out>/<gpu family>/`` (``simulator`` without a GPU)."""
    return (Path(args.out).expanduser() if args.out else default_dir()) / family()


def _stage_from_args(args: argparse.Namespace):
    over = {}
    for key, name in (("rows", "rows"), ("tables", "tables"), ("batch", "batch_size"), ("dim", "sparse_feature_size")):
        v = getattr(args, key, None)
        if v is not None:
            if v <= 0:
                raise DlrmlabError(f"--{key} must be positive, got {v}")
            over[name] = v
    if getattr(args, "pooling", None) is not None:
        over["pooling"] = args.pooling
    if getattr(args, "table_dtype", None) is not None:
        over["dtype"] = args.table_dtype
    return preset(_preset(args), **over)


def workload_describe(args: argparse.Namespace) -> dict:
    # Hotness is a CPU analysis: ``auto`` is the paper's shape on any machine (no kernel runs here).
    args = argparse.Namespace(**{**vars(args), "preset": "paper" if args.preset in (None, "auto") else args.preset})
    stage = _stage_from_args(args)
    n = int(args.ids if args.ids is not None else stage.lookups_per_batch())
    validate.check_memory(f"describing {n:,} ids of {args.dataset}",  # the ids, their copies and sorts
                          host=4 * 8 * n + validate.stream_bytes(stage, args.dataset))
    wl = Workload(stage, args.dataset, seed=args.seed)
    d = stage.describe()
    what = f"the first {n:,} ids" if args.ids is not None else f"one batch ({n:,} ids)"
    rows = d["rows"] if isinstance(d["rows"], int) else d["rows"][0]
    return {"describes": f"{what} of {wl.dataset} for the {d['preset']} preset's tables of {rows:,} rows (a "
                         "trace's ids >= rows are skipped, as the paper's artifact does)",
            "dataset": wl.dataset, "seed": args.seed, **d, **hotness.describe(wl.ids(args.ids))}


@_command("workload")
def _workload(args: argparse.Namespace) -> int:
    d = workload_describe(args)
    if args.json:
        print(json.dumps(d))
        return EXIT_OK
    for k, v in d.items():
        if k == "top_coverage":
            for kk, vv in v.items():
                print(f"{'top ' + kk + ' rows take':24s} {vv:.1%}")
        else:
            print(f"{k:24s} {v:,}" if isinstance(v, int) else f"{k:24s} {v}")
    return EXIT_OK


# --- data ------------------------------------------------------------------------------------------------


@_command("data")
def _data(args: argparse.Namespace) -> int:
    return paper_data.command(args)


# --- reproduce -------------------------------------------------------------------------------------------


@_command("reproduce")
def _reproduce(args: argparse.Namespace) -> int:
    from dlrmlab.bench.results import default_dir
    from dlrmlab.reproduce import reproduce  # numba (backend): not loaded by --help or a usage error

    return reproduce(
        preset=args.preset, out=args.out or default_dir(), only=_names(args.only) or None,
        datasets=_names(args.datasets) or None,
        repeats=args.repeats, force=args.force, quiet=args.quiet,
    )


# --- profile ---------------------------------------------------------------------------------------------


@_command("profile")
def _profile(args: argparse.Namespace) -> int:
    from dlrmlab.bench import ncu  # numba (backend): not loaded by --help or a usage error

    knobs = json_object(args.knobs, "--knobs") if args.knobs is not None else {}
    dtype = {"table_dtype": args.table_dtype} if args.table_dtype else {}
    ncu.check_profilable(args.variant, _preset(args), knobs, **dtype)  # refusals first: nothing is created under --out
    out = check_results_dir(_out_dir(args))
    df = ncu.profile_variant(
        args.variant, args.dataset, _preset(args), args.seed, args.kernel_regex, args.launch_skip, args.launch_count,
        knobs=knobs, **dtype,
    )
    print(ncu.format_summary(df))
    path = append_results(df, "profile", out)
    print(f"\nappended {len(df)} row(s) to {path}")
    return EXIT_OK


# --- bench -----------------------------------------------------------------------------------------------


def _names(text: str | None) -> list[str]:
    return [x.strip() for x in (text or "").split(",") if x.strip()]


def _unique(names: list[str], option: str) -> list[str]:
    """``names`` without repeats (first occurrence kept); a repeat is announced on stderr, not run twice."""
    seen = list(dict.fromkeys(names))
    if len(seen) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        print(f"dlrmlab: warning: {option}: {', '.join(twice)} given more than once; running each once",
              file=sys.stderr)
    return seen


def _non_negative(option: str, value: float | int | None) -> None:
    if value is not None and value < 0:
        raise DlrmlabError(f"{option} must be non-negative, got {value}")


def _positive(option: str, value: float | int | None) -> None:
    if value is not None and value <= 0:
        raise DlrmlabError(f"{option} must be positive, got {value}")


def _list_variants() -> int:
    from dlrmlab import backend  # numba (backend): not loaded by --help or a usage error
    from dlrmlab.variants import VARIANTS  # numba (backend): not loaded by --help or a usage error

    for name in sorted(VARIANTS):
        spec = VARIANTS[name]
        where = " [GPU only]" if spec.gpu_only else ""
        print(f"{name:18s} {spec.description}{where}")
    if backend.SIMULATOR:
        print("(simulator mode: GPU-only variants cannot run here)")
    return EXIT_OK


@_command("tune")
def _tune(args: argparse.Namespace) -> int:
    from dlrmlab import tune, tuned  # numba (backend): not loaded by --help or a usage error
    from dlrmlab.bench.results import append_results, check_results_dir
    from dlrmlab.workload import preset

    _positive("--repeats", args.repeats)
    out = check_results_dir(_out_dir(args)) if args.out else None  # an unwritable --out fails before the sweep
    if args.target == "fast":
        stage = _preset(args) if args.table_dtype is None else preset(_preset(args), dtype=args.table_dtype)
        result = tune.tune_fast(
            stage, args.dataset, quick=args.quick, space=tune.parse_space(args.space), repeats=args.repeats,
            variant=args.variant or "fast_graph", progress=not args.quiet,
        )
        rows, table = result.ranking, result.rows
        cols = ["candidate", "median_ms", *[c for c in rows if c.startswith("ms[")], "p10_ms", "p90_ms",
                "speedup_vs_torch", "correct"]
    else:
        try:
            caps = [None if c == "none" else int(c) for c in args.caps.split(",")] if args.caps else None
        except ValueError:
            raise DlrmlabError(f"--caps: comma-separated integers or 'none', got {args.caps!r}") from None
        rows = tune.tune_register_cap(
            _preset(args), args.dataset, variant=args.variant or "optmt", caps=caps, repeats=args.repeats,
            progress=not args.quiet,
        )
        table = rows
        cols = ["max_registers", "registers", "theoretical_occupancy", "occupancy_limiter", "median_ms", "correct"]
    simulated = rows.empty or not bool(rows.iloc[0].get("timing_valid", False))
    if simulated:  # simulated times measure nothing: not shown
        cols = [c for c in cols if not c.endswith("_ms") and not c.startswith(("ms[", "speedup"))]
    print(rows[[c for c in cols if c in rows]].to_string(index=False))
    if simulated:
        print("simulator: timings not meaningful, so no times shown and none is ranked; every candidate's output "
              "was checked"
              + (" (your tuning cache was left as it was)" if args.target == "fast" else ""))
    if out is not None:
        print(f"appended {len(table)} row(s) to {append_results(table, f'tune_{args.target}', out)}")
    else:
        print("no CSV written (pass --out DIR to append the table to DIR/<gpu family>/tune_<target>.csv)")
    if args.target == "fast" and not simulated:
        print(f"best configuration stored in {tuned.cache_path()}")
    return EXIT_OK


@_command("bench")
def _bench(args: argparse.Namespace) -> int:
    if args.list:
        return _list_variants()
    from dlrmlab import backend  # numba (backend): not loaded by --help or a usage error
    from dlrmlab.bench import schema, sweep, text  # numba (backend): not loaded by --help or a usage error

    variants, datasets = _unique(_names(args.variant), "--variant"), _unique(_names(args.dataset), "--dataset")
    _non_negative("--warmup", args.warmup)
    _positive("--repeats", args.repeats)
    _positive("--repeat-runs", args.repeat_runs)
    if not variants:
        raise DlrmlabError("--variant is required (dlrmlab bench --list shows the variants)")
    if not datasets:
        raise DlrmlabError(f"--dataset is required: {DATASETS_HELP}")
    if args.cuembed_dir:
        os.environ["DLRMLAB_CUEMBED_DIR"] = args.cuembed_dir
    out = _out_dir(args)
    res = sweep.run_bench(
        variants, datasets, _stage_from_args(args), seed=args.seed, n_batches=args.batches, weighted=args.weighted,
        mode=args.mode, repeats=args.repeats, warmup_s=args.warmup, cold_l2=args.cold_l2, timing_mode=args.timing,
        serving_block=args.serving_block, include_torch=not args.no_torch, repeat_runs=args.repeat_runs, out=out,
        progress=not args.quiet,
    )
    rows = res.rows
    notes = []
    if not args.no_torch and schema.BASELINE not in set(rows["variant"]):
        notes.append("torch is not usable here: no speedup_vs_torch")
    if args.json:
        print(rows.to_json(orient="records"))
        notes += [text.SIMULATOR_NOTICE] if backend.SIMULATOR else []
    else:
        print(text.format_table(rows))
        notes.append(f"appended {len(rows)} row(s) to {out}/bench.csv, per-run times to {out}/bench_runs.csv")
    for n in notes:
        print(n, file=sys.stderr if args.json else sys.stdout)
    return EXIT_OK if rows["correct"].astype(bool).all() else EXIT_INCORRECT


# --- quantize --------------------------------------------------------------------------------------------


@_command("quantize")
def _quantize(args: argparse.Namespace) -> int:
    from dlrmlab import backend
    from dlrmlab.bench.results import append_results, check_results_dir

    datasets = _unique(_names(args.dataset), "--dataset")
    if not datasets:
        raise DlrmlabError(f"--dataset is required: {DATASETS_HELP}")
    stage, out = _stage_from_args(args), check_results_dir(_out_dir(args))
    from dlrmlab import accuracy  # torch (the DLRM model): not loaded by --help or a usage error

    if args.quantize_command == "accuracy":
        _positive("--batches", args.batches)
        formats = _names(args.format) or list(accuracy.DEFAULT_FORMATS)
        df = accuracy.accuracy(accuracy.check_formats(formats), datasets, stage, seed=args.seed,
                               n_batches=args.batches)  # fmt: skip
        cols = ["format", "dataset", "row_bytes", "pooled_max_abs_err", "pooled_mean_abs_err", "prob_max_abs_diff",
                "click_flip_share"]  # fmt: skip
        print(df[cols].to_string(index=False, float_format=lambda v: f"{v:.3g}"))
        print(f"appended {len(df)} row(s) to {append_results(df, accuracy.RESULTS_NAME, out)}")
        return 0
    from dlrmlab.bench import quantized

    _positive("--repeats", args.repeats)
    _non_negative("--warmup", args.warmup)
    if len(datasets) != 1:
        raise DlrmlabError("quantize speed takes one --dataset per run")
    if args.cuembed_dir:
        os.environ["DLRMLAB_CUEMBED_DIR"] = args.cuembed_dir
    formats = _names(args.format) or list(quantized.DEFAULT_FORMATS)
    df = quantized.run_quantized(formats, datasets[0], stage, seed=args.seed, repeats=args.repeats,
                                 warmup_s=args.warmup,
                                 accuracy=None if args.no_accuracy else accuracy.with_accuracy, out=out,
                                 progress=not args.quiet)  # fmt: skip
    cols = ["variant", "format", "correct", "median_ms", "rows_per_s", "row_bytes", "row_bytes_per_s",
            "speedup_vs_fp32", "error"]  # fmt: skip
    print(df[[c for c in cols if c in df]].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    if backend.SIMULATOR:
        print("simulator: timings not meaningful")
    print(f"appended {len(df)} row(s) to {out / quantized.RESULTS_NAME}.csv")
    ran = df[~df["error"].fillna("").astype(str).str.startswith("skipped")]
    return 0 if ran["correct"].astype(bool).all() else 1


# --- dlrm ------------------------------------------------------------------------------------------------


@_command("dlrm")
def _dlrm(args: argparse.Namespace) -> int:
    from dlrmlab.dlrm.command import run_command  # three modules' run_command: each where it is called

    return run_command(args, _out_dir(args))


@_command("host-tables")
def _host_tables(args: argparse.Namespace) -> int:
    from dlrmlab.host_command import run_command  # three modules' run_command: each where it is called

    return run_command(args, _out_dir(args), _preset(args))


@_command("shard")
def _shard(args: argparse.Namespace) -> int:
    from dlrmlab.shard.command import run_command  # three modules' run_command: each where it is called

    return run_command(args, _out_dir(args) if hasattr(args, "out") else None)


# --- parser ----------------------------------------------------------------------------------------------


DATASETS_HELP = ("trace:low, trace:medium (the artifact's traces, downloaded on first use), trace:PATH, random, "
                 "synthetic-low, synthetic-medium, synthetic-high, zipf:ALPHA")
PRESET_HELP = "stage shape: paper, tiny or auto (default auto: paper on a GPU, tiny in the simulator)"
OUT_HELP = ("results directory; rows go under OUT/<gpu family>/ (default: $DLRMLAB_RESULTS_DIR, else "
            "./dlrmlab-results; --out results adds to the committed results of a checkout)")
SEED_HELP = "seed of the synthetic ids, bag sizes and tables (default %(default)s)"
JSON_HELP = "print JSON instead of a table"
TABLE_DTYPE_HELP = ("table storage: float32 (default), float16, bfloat16, or quantized rows int8, int4 (FBGEMM's "
                    "row-wise formats) or fp8 (e4m3 with a row scale), which the fast kernels read")
QUIET_HELP = "no progress bars"


def _add_shape(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="auto", help=PRESET_HELP)
    p.add_argument("--rows", type=arg_int, help="rows per table")
    p.add_argument("--tables", type=arg_int, help="number of tables")
    p.add_argument("--batch", type=arg_int, help="batch size")
    p.add_argument("--dim", type=arg_int, help="embedding dim (sparse feature size)")
    p.add_argument("--pooling", help="ids per bag: N, uniform:LO-HI or poisson:MEAN")
    p.add_argument("--table-dtype", help=TABLE_DTYPE_HELP)
    p.add_argument("--seed", type=arg_int, default=0, help=SEED_HELP)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="dlrmlab", description="DLRM embedding-bag inference on GPUs, from Numba",
                                 epilog=EXIT_CODES_HELP)
    ap.add_argument("--version", action="version", version=f"dlrmlab {__version__}")
    sub = ap.add_subparsers(dest="command", required=True)
    for add in (_add_info_workload_data, _add_reproduce_tune_profile, _add_bench_dlrm, _add_quantize):
        add(sub)
    return ap


def _add_info_workload_data(sub) -> None:
    p = sub.add_parser("info", help="GPU, L2, dlrmlab, Python and package versions (or why simulator mode)")
    p.add_argument("--json", action="store_true", help=JSON_HELP)

    p = sub.add_parser("workload", help="workload tools")
    wsub = p.add_subparsers(dest="workload_command", required=True)
    d = wsub.add_parser("describe", help="hotness statistics of one batch's index stream")
    d.add_argument("--dataset", required=True, help=DATASETS_HELP)
    _add_shape(d)
    d.add_argument("--ids", type=arg_int,
                   help="describe the first N ids of the stream instead of one batch")
    d.add_argument("--json", action="store_true", help=JSON_HELP)

    p = sub.add_parser("data", help="the paper's datasets: list them, verify a copy, fetch them")
    dsub = p.add_subparsers(dest="data_command", required=True)
    d = dsub.add_parser("list", help="the paper's trace and hot-row files (found or missing) and the synthetic sets")
    d.add_argument("--json", action="store_true", help=JSON_HELP)
    d = dsub.add_parser("verify", help="check a copy: ids, distinct ids, coverage (exit 1 on a mismatch)")
    d.add_argument("target", nargs="?", help="a file, or a name (trace:low, hot60K:high); default: every one found")
    d.add_argument("--as", dest="as_", metavar="NAME", help="which paper file TARGET is, if its name does not say")
    d.add_argument("--json", action="store_true", help=JSON_HELP)
    d = dsub.add_parser("fetch", help="download the files from the paper's artifact, then verify them")
    d.add_argument("--dest", help="directory to write to (default: $DLRMLAB_DATA_DIR or ~/.cache/dlrmlab/data)")
    d.add_argument("--timeout", type=arg_seconds, default=60.0, help="seconds per request (default %(default)s)")


def _add_reproduce_tune_profile(sub) -> None:
    p = sub.add_parser(
        "reproduce", help="the main job: every claim of the paper measured here, written up as report.md",
        description="Run the experiment suite and write, under OUT/<gpu family>/, a CSV and a figure (PNG, SVG) per "
        "claim and report.md: the environment, a summary table (the paper's A100 figure beside ours), a section per "
        "claim, and what did not reproduce. Without a GPU: the tiny preset in the simulator, no timings. Exit status "
        "1 if an experiment failed or a variant's output was wrong, 2 for a bad request.",
    )  # fmt: skip
    p.add_argument("--preset", default="auto", choices=("tiny", "paper", "auto"),
                   help="workload: paper (a GPU), tiny, or auto (default: paper on a GPU, tiny in the simulator)")
    p.add_argument("--out", help="the report goes to OUT/<gpu family>/ (default: $DLRMLAB_RESULTS_DIR, else "
                   "./dlrmlab-results, as for every command; --out results replaces a checkout's committed report)")
    p.add_argument("--only", help="comma-separated claims (default all): hotness, embedding_share, occupancy, stalls, "
                   "optmt, rpf, l2p, configurations, end_to_end, beyond; the other sections of an earlier report of "
                   "the same preset in OUT are kept")
    p.add_argument("--datasets", help="comma-separated (default: trace:low,trace:medium,high,random; a missing "
                   "artifact trace is skipped with the reason)")
    p.add_argument("--repeats", type=arg_int,
                   help="timed rounds per comparison (default 30 on a GPU, 1 in the simulator)")
    p.add_argument("--force", action="store_true",
                   help="write even if OUT/<gpu family>/ holds other content (same-named files are replaced)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")

    p = sub.add_parser("tune", help="autotune the fast kernel or sweep register caps (optmt)")
    p.add_argument("target", choices=["fast", "optmt"],
                   help="fast: the fast kernel's knobs, the winner stored in your tuning cache; optmt: register caps")
    p.add_argument("--dataset", default="random",
                   help=f"fast: one or more (comma-separated, ranked by geometric mean), optmt: one, of: "
                        f"{DATASETS_HELP} (default %(default)s)")
    p.add_argument("--preset", default="auto", help=PRESET_HELP)
    p.add_argument("--quick", action="store_true", help="fast: a smaller search space")
    p.add_argument("--space", help='fast: the search space as JSON, knob -> list of values, e.g. '
                                   '\'{"unroll": [8, 12], "split": [1, 2]}\'; knobs left out keep the values the '
                                   'shape is served with now, and that configuration is always timed')
    p.add_argument("--variant", help="fast: the fast-path variant timed (default fast_graph; a +window variant "
                                     "tunes the split-hot layout); optmt: the variant swept (optmt or optmt_rpf)")
    p.add_argument("--caps", help="optmt: comma-separated register caps, 'none' for no cap")
    p.add_argument("--table-dtype", help="fast: " + TABLE_DTYPE_HELP + "; the winner is stored for that format")
    p.add_argument("--repeats", type=arg_int,
                   help="timed rounds per candidate (default 50; 1 in the simulator)")
    p.add_argument("--out", help="append the table to OUT/<gpu family>/tune_<target>.csv (default: no CSV)")
    p.add_argument("--quiet", action="store_true", help=QUIET_HELP)

    p = sub.add_parser("profile", help="warp stalls and occupancy of a variant's kernels, from Nsight Compute")
    p.add_argument("--variant", required=True, help="a registered variant (e.g. torch)")
    p.add_argument("--dataset", required=True, help=DATASETS_HELP)
    p.add_argument("--preset", default="auto", help=PRESET_HELP)
    p.add_argument("--seed", type=arg_int, default=0, help=SEED_HELP)
    p.add_argument("--out", help=OUT_HELP)
    p.add_argument("--kernel-regex", help="kernel-name regex for ncu (default: the variant's kernels)")
    p.add_argument("--launch-skip", type=arg_int, default=2,
                   help="matching launches to skip (default %(default)s)")
    p.add_argument("--launch-count", type=arg_int, default=1,
                   help="matching launches to profile (default %(default)s)")
    p.add_argument("--knobs", help='the variant\'s knobs as JSON, e.g. \'{"unroll": 8, "load_hint": "L2::256B"}\'')
    p.add_argument("--table-dtype", help=TABLE_DTYPE_HELP)


def _add_quantize(sub) -> None:
    p = sub.add_parser("quantize", help="quantized tables (int8, int4, fp8): accuracy against fp32, and speed")
    qsub = p.add_subparsers(dest="quantize_command", required=True)
    a = qsub.add_parser("accuracy", help="per format: pooled embeddings' and DLRM click probabilities' error vs fp32 "
                        "(CPU is enough); rows to OUT/<gpu family>/quantized_accuracy.csv")
    a.add_argument("--format", help="comma-separated: float16, bfloat16, fp8, int8, int4 (default: all)")
    a.add_argument("--batches", type=int, default=1, help="batches per dataset (default %(default)s)")
    s = qsub.add_parser("speed", help="per format: fast_graph's rows/s and bytes/s against fp32 fast_graph, with "
                        "torch's and cuEmbed's fp16 as peers, in one run; rows to OUT/<gpu family>/quantized.csv")
    s.add_argument("--format", help="comma-separated: int8, int4, fp8 (default: all)")
    s.add_argument("--repeats", type=int, help="timed rounds per case (default 50; 2 in the simulator)")
    s.add_argument("--warmup", type=float, help="warm-up seconds, >= 0 (default 0.3; 0 in the simulator)")
    s.add_argument("--cuembed-dir", help="cuEmbed checkout for the cuEmbed peer (default $DLRMLAB_CUEMBED_DIR)")
    s.add_argument("--no-accuracy", action="store_true", help="leave out the accuracy columns")
    for q in (a, s):
        q.add_argument("--dataset", default="random", help=f"comma-separated (speed: one); {DATASETS_HELP}")
        _add_shape(q)
        q.add_argument("--out", help=OUT_HELP)
        q.add_argument("--quiet", action="store_true", help=QUIET_HELP)


def _add_bench_dlrm(sub) -> None:
    p = sub.add_parser(
        "bench",
        help="time variants against torch, interleaved, after a correctness check",
        description="Check each variant against the NumPy reference, then time it interleaved with torch "
        "(CUDA events around the whole stage). Rows are appended per dataset as they are measured.",
        epilog=EXIT_CODES_HELP,
    )
    p.add_argument("--variant", help="variant name(s), comma-separated (see --list)")
    p.add_argument("--dataset", help=f"comma-separated; {DATASETS_HELP}")
    _add_shape(p)
    p.add_argument("--mode", default="sum", choices=KERNEL_MODES, help="pooling mode (default %(default)s)")
    p.add_argument("--weighted", action="store_true", help="per-sample weights (mode sum)")
    p.add_argument("--out", help=OUT_HELP)
    p.add_argument("--cold-l2", action="store_true", help="evict L2 before every timed run (outside the timing)")
    p.add_argument("--timing", default="serving", choices=("serving", "interleaved", "cold_l2"),
                   help="serving: blocks of consecutive batches per variant, first untimed (default); interleaved: "
                   "variants alternate run by run; cold_l2: L2 evicted before every run")
    p.add_argument("--serving-block", type=arg_int, default=8,
                   help="batches per serving block (default %(default)s)")
    p.add_argument("--cuembed-dir", help="cuEmbed checkout for the cuembed peers (default $DLRMLAB_CUEMBED_DIR)")
    p.add_argument("--repeats", type=arg_int,
                   help="timed rounds per comparison (default 50; 2 in the simulator)")
    p.add_argument("--warmup", type=arg_seconds, help="warm-up seconds, >= 0 (default 0.3; 0 in the simulator)")
    p.add_argument("--batches", type=arg_int, default=4,
                   help="distinct batches rotated through runs (default %(default)s)")
    p.add_argument("--repeat-runs", type=arg_int, default=1,
                   help="repeat the whole comparison K times (default 1)")
    p.add_argument("--no-torch", action="store_true", help="do not add the torch baseline")
    p.add_argument("--json", action="store_true", help="print the result rows as JSON records")
    p.add_argument("--quiet", action="store_true", help=QUIET_HELP)
    p.add_argument("--list", action="store_true", help="list the registered variants and exit")

    p = sub.add_parser("dlrm", help="DLRM end to end: stage breakdown and speedups with a pluggable embedding stage")
    add_dlrm_arguments(p)

    p = sub.add_parser("host-tables", help="tables in host memory behind an HBM cache: the host link's rates, then "
                       "every placement and cache budget against its bound")
    add_host_arguments(p)

    p = sub.add_parser("shard", help="the embedding stage sharded over ranks (torch.distributed): plan, run, predict")
    add_shard_arguments(p)


def _one_line_warnings(show: Callable) -> Callable:
    """``warnings.showwarning`` that prints dlrmlab's own warnings (a trace's dropped ids or wraps, ...) as
    one ``dlrmlab: warning:`` line of its own (a progress bar is moved below it); other libraries' warnings go
    to ``show`` as usual."""

    def showwarning(message, category, filename, lineno, file=None, line=None) -> None:
        if not getattr(category, "__module__", "").startswith("dlrmlab"):
            return show(message, category, filename, lineno, file, line)
        text = " ".join(str(message).split())
        from tqdm import tqdm  # a dependency; imported here like the progress bars it steps around

        tqdm.write(f"dlrmlab: warning: {text}", file=file or sys.stderr)  # its own line, above any progress bar

    return showwarning


def _saved_since(mark: int) -> list[tuple]:
    totals: dict = {}
    for path, n in results.APPENDED[mark:]:
        totals[path] = totals.get(path, 0) + n
    return list(totals.items())


def _interrupted(mark: int) -> int:
    saved = _saved_since(mark)
    lines = [f"dlrmlab: interrupted: {n} row(s) saved to {path}" for path, n in saved]
    print("\n" + "\n".join(lines or ["dlrmlab: interrupted: no result rows were appended"]), file=sys.stderr)
    return EXIT_INTERRUPTED


def _stdout_closed() -> int:
    """The reader of stdout went away (``| head``): stop quietly. Python's docs: point stdout at devnull so
    the flush at exit does not raise again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no real file descriptor (e.g. captured in tests)
        pass
    return EXIT_BROKEN_PIPE


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit status (see :data:`EXIT_CODES_HELP`)."""
    ap = build_parser()
    try:
        args = ap.parse_args(argv)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    mark = len(results.APPENDED)
    hint = SHRINK_HINT.set("make it smaller (--batch, --rows, --dim, --tables, --pooling)")
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warnings(warnings.showwarning)
            check_flags(args)
            return _COMMANDS[args.command](args) or EXIT_OK
    except KeyboardInterrupt:
        return _interrupted(mark)
    except BrokenPipeError:
        return _stdout_closed()
    except (DlrmlabError, FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError) as e:
        print(f"dlrmlab: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except MemoryError as e:
        print(f"dlrmlab: error: out of host memory: {e or 'the request does not fit'}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        SHRINK_HINT.reset(hint)


if __name__ == "__main__":
    sys.exit(main())
