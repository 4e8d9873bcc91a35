"""The ``dlrmlab`` command. Handlers are thin: parse, call the library, print."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence

from dlrmlab.errors import DlrmlabError

_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def _command(name: str):
    def deco(fn):
        _COMMANDS[name] = fn
        return fn

    return deco


# --- info ------------------------------------------------------------------------------------------------


def info_dict() -> dict:
    from dlrmlab import backend, cudart

    out: dict = {"mode": backend.mode(), "versions": cudart.package_versions()}
    if backend.SIMULATOR:
        out["message"] = backend.describe_mode()
        return out
    p = cudart.device_properties()
    out["gpu"] = {
        k: p[k]
        for k in (
            "name",
            "compute_capability",
            "sms",
            "l2_bytes",
            "persisting_l2_max_bytes",
            "access_policy_max_window_bytes",
            "regs_per_sm",
            "threads_per_sm",
            "global_mem_bytes",
        )
    }
    out["driver"] = cudart.driver_version()
    return out


@_command("info")
def _info(args: argparse.Namespace) -> int:
    d = info_dict()
    if args.json:
        print(json.dumps(d, indent=2))
        return 0
    if "gpu" in d:
        for k, v in d["gpu"].items():
            print(f"{k:32s} {v:,}" if isinstance(v, int) else f"{k:32s} {v}")
        print(f"{'driver (CUDA)':32s} {d['driver']}")
    else:
        print(d["message"])
    for k, v in d["versions"].items():
        print(f"{k:32s} {v or 'not installed'}")
    return 0


# --- workload --------------------------------------------------------------------------------------------


def _stage_from_args(args: argparse.Namespace):
    from dlrmlab.workload import preset

    over = {}
    for key, name in (("rows", "rows"), ("tables", "tables"), ("batch", "batch_size"), ("dim", "sparse_feature_size")):
        v = getattr(args, key, None)
        if v is not None:
            if v <= 0:
                raise DlrmlabError(f"--{key} must be positive, got {v}")
            over[name] = v
    if getattr(args, "pooling", None) is not None:
        over["pooling"] = args.pooling
    return preset(args.preset, **over)


def workload_describe(args: argparse.Namespace) -> dict:
    from dlrmlab import hotness
    from dlrmlab.workload import Workload

    stage = _stage_from_args(args)
    if args.ids is not None and args.ids <= 0:
        raise DlrmlabError(f"--ids must be positive, got {args.ids}")
    wl = Workload(stage, args.dataset, seed=args.seed)
    ids = wl.ids(args.ids)
    d = {"dataset": args.dataset, "seed": args.seed, **stage.describe(), **hotness.describe(ids)}
    return d


@_command("workload")
def _workload(args: argparse.Namespace) -> int:
    d = workload_describe(args)
    if args.json:
        print(json.dumps(d))
        return 0
    for k, v in d.items():
        if k == "top_coverage":
            for kk, vv in v.items():
                print(f"{'top ' + kk + ' rows take':24s} {vv:.1%}")
        else:
            print(f"{k:24s} {v:,}" if isinstance(v, int) else f"{k:24s} {v}")
    return 0


# --- reproduce -------------------------------------------------------------------------------------------


@_command("reproduce")
def _reproduce(args: argparse.Namespace) -> int:
    from dlrmlab.reproduce import reproduce

    return reproduce(out=args.out, quiet=args.quiet)


# --- parser ----------------------------------------------------------------------------------------------


def _add_shape(p: argparse.ArgumentParser, default_preset: str) -> None:
    p.add_argument("--preset", default=default_preset, help="stage shape: paper or tiny (default %(default)s)")
    p.add_argument("--rows", type=int, help="rows per table")
    p.add_argument("--tables", type=int, help="number of tables")
    p.add_argument("--batch", type=int, help="batch size")
    p.add_argument("--dim", type=int, help="embedding dim (sparse feature size)")
    p.add_argument("--pooling", help="ids per bag: N, uniform:LO-HI or poisson:MEAN")
    p.add_argument("--seed", type=int, default=0)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="dlrmlab", description="DLRM embedding-bag inference on GPUs, from Numba")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("info", help="GPU, L2 and package versions (or simulator mode)")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("workload", help="workload tools")
    wsub = p.add_subparsers(dest="workload_command", required=True)
    d = wsub.add_parser("describe", help="hotness statistics of one batch's index stream")
    d.add_argument("--dataset", required=True, help="random, low, medium, high, zipf:ALPHA or trace:PATH")
    _add_shape(d, "paper")
    d.add_argument("--ids", type=int, help="describe the first N ids of the stream instead of one batch")
    d.add_argument("--json", action="store_true")

    p = sub.add_parser("reproduce", help="the main job: reproduce the paper's measurements")
    p.add_argument("--out", default="results", help="results directory (default %(default)s)")
    p.add_argument("--quiet", action="store_true")

    return ap


def main(argv: Sequence[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    try:
        return _COMMANDS[args.command](args) or 0
    except DlrmlabError as e:
        print(f"dlrmlab: error: {e}", file=sys.stderr)
        return 2
    except (FileNotFoundError, PermissionError, IsADirectoryError) as e:
        print(f"dlrmlab: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
