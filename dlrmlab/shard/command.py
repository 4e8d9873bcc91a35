"""``dlrmlab shard``: plan, show, run, predict, alltoall. Importing this module is cheap (no torch): the
parser is built for every ``dlrmlab`` command.

* ``plan``: place a stage's tables over N ranks (the planner, a sharding type, a spec or a file); print
  the shards, the per-rank cost and memory, the imbalance; ``--save`` writes the plan as JSON.
* ``show``: a saved plan, and its cost on a stage.
* ``run``: the sharded stage on ``torch.distributed``: checked against one process, then timed per rank
  and per step; rows go to ``OUT/<gpu family>/shard.csv``. ``--nproc N`` starts N ranks through torchrun;
  under an outer ``torchrun`` it joins that world.
* ``predict``: the scaling model's latency and samples/s over GPU counts, rows to ``shard_scaling.csv``.
* ``campaign``: strong and weak scaling on one host's GPUs, every plan, then ``alltoall`` and ``predict``.
* ``report``: the report section (Markdown) from the rows above (``shard_report.md``).
* ``alltoall``: the all-to-all bandwidth of the group at the message sizes the plans send
  (``shard_alltoall.csv``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from dlrmlab.bench.results import append_results, check_results_dir
from dlrmlab.errors import DlrmlabError
from dlrmlab.shard import campaign, planner, report
from dlrmlab.shard import predict as spredict
from dlrmlab.shard.plan import ShardingPlan
from dlrmlab.workload import preset

RESULTS_NAME, SCALING_NAME, ALLTOALL_NAME = "shard", "shard_scaling", "shard_alltoall"
PLAN_HELP = ("auto (the planner), table_wise (round-robin), row_wise, column_wise, data_parallel, a spec "
             "'0:tw@1,1:rw,2:cw@0+1,3:dp' (table:type@ranks; no ranks = all), or a plan .json file")  # fmt: skip
#: Stages the predictions are shown for: the paper's, and one that fits no single GPU (246 GB of fp32).
PREDICT_STAGES = {"paper": {}, "paper_40M": {"rows": 40_000_000}}


def _shape(p: argparse.ArgumentParser, default_preset: str = "auto") -> None:
    p.add_argument("--preset", default=default_preset, help="paper or tiny (auto: paper on a GPU, tiny otherwise)")
    for name, what in (("tables", "number of tables"), ("rows", "rows per table"), ("dim", "embedding width"),
                       ("batch", "global batch size"), ("pooling", "ids per bag")):  # fmt: skip
        p.add_argument(f"--{name}", type=int, help=f"{what} (default: the preset's)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="shard_command", required=True)
    q = sub.add_parser("plan", help="place the tables over N ranks and show the per-rank cost and imbalance")
    _shape(q)
    q.add_argument("--world", type=int, default=8, help="number of ranks (GPUs) (default %(default)s)")
    q.add_argument("--plan", default="auto", help=PLAN_HELP + " (default %(default)s)")
    q.add_argument("--budget-gb", type=float, default=70.0, help="shard memory per rank, GB (default %(default)s)")
    q.add_argument("--hit-rate", type=float, default=0.0, help="L2 hit rate of the lookups (default %(default)s)")
    q.add_argument("--save", help="write the plan as JSON to this file")
    q.add_argument("--json", action="store_true", help="print the plan as JSON only")
    q = sub.add_parser("show", help="a saved plan and its cost on a stage")
    q.add_argument("file", help="plan .json file")
    _shape(q)
    q = sub.add_parser("run", help="run the sharded stage on torch.distributed: check, time per rank and step")
    _shape(q)
    q.add_argument("--plan", action="append", help=PLAN_HELP + "; repeat for several (default table_wise)")
    q.add_argument("--embedding", default="torch", help="lookups: torch, fast, or both comma-separated")
    q.add_argument("--dataset", default="random", help="ids: random, zipf:A, low, medium, high, trace:PATH")
    q.add_argument("--nproc", type=int, default=1, help="ranks to start here through torchrun (default 1)")
    q.add_argument("--backend", default="gloo", choices=("gloo", "nccl"), help="default %(default)s")
    q.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where tensors live (default %(default)s)")
    q.add_argument("--mode", default="sum", choices=("sum", "mean"), help="pooling (default %(default)s)")
    q.add_argument("--repeats", type=int, default=10, help="timed repeats per step (default %(default)s)")
    q.add_argument("--warmup", type=int, default=2, help="untimed runs first (default %(default)s)")
    q.add_argument("--timeout", type=float, default=60.0, help="seconds before a collective gives up")
    q.add_argument("--budget-gb", type=float, help="refuse plans over this shard memory per rank")
    q.add_argument("--no-model", action="store_true", help="leave out DLRM end to end")
    q.add_argument("--table-values", default="random", choices=("random", "procedural"),
                   help="random: seeded tables, each rank makes them all (and checks against them); procedural: "
                   "entries hashed from (table, row, column), each rank makes only its shards (for stages larger "
                   "than one GPU) (default %(default)s)")  # fmt: skip
    q.add_argument("--seed", type=int, default=0, help="seed of the ids and tables (default %(default)s)")
    q.add_argument("--out", help="results directory; rows go to OUT/<gpu family>/shard.csv")
    q.add_argument("--json", action="store_true", help="print the rows as JSON records")
    q.add_argument("--run-id", help=argparse.SUPPRESS)
    q = sub.add_parser("predict", help="predicted latency and samples/s over GPU counts (the scaling model)")
    q.add_argument("--stage", default=",".join(PREDICT_STAGES), help="paper, paper_40M (12 x 40M rows) or both")
    q.add_argument("--world", default="1,2,4,8,16", help="GPU counts (default %(default)s)")
    q.add_argument("--plan", action="append", help=PLAN_HELP + "; repeat (default: auto and every type)")
    q.add_argument("--budget-gb", type=float, default=70.0, help="shard memory per GPU (default %(default)s)")
    q.add_argument("--gpus-per-host", type=int, default=8, help="GPUs per host (default %(default)s)")
    q.add_argument("--intra-gbps", type=float, help="NVLink all-to-all bus bandwidth, GB/s (default 370)")
    q.add_argument("--inter-gbps", type=float, help="per-GPU network bus bandwidth, GB/s (default 48)")
    q.add_argument("--calibrate", help="a shard.csv whose world-size-1 lookup time sets the gather bandwidth")
    q.add_argument("--out", help="results directory; rows go to OUT/<gpu family>/shard_scaling.csv")
    q.add_argument("--json", action="store_true", help="print the predictions as JSON records")
    q = sub.add_parser("campaign", help="strong and weak scaling on this host's GPUs, all plans, then the "
                       "all-to-all bandwidth and the calibrated predictions (one command per step)")
    _shape(q)
    q.add_argument("--gpus", type=int, required=True, help="GPUs (ranks) of this host to scale up to")
    q.add_argument("--counts", help="GPU counts to run (default 1, 2, 4, ... up to --gpus)")
    q.add_argument("--backend", default="nccl", choices=("gloo", "nccl"), help="default %(default)s")
    q.add_argument("--device", default="cuda", choices=("cpu", "cuda"), help="where tensors live (default %(default)s)")
    q.add_argument("--embedding", default="torch,fast", help="lookups (default %(default)s)")
    q.add_argument("--large-rows", type=int, default=40_000_000, help="rows per table of the stage that does not "
                   "fit one GPU (procedural tables) (default %(default)s)")  # fmt: skip
    q.add_argument("--budget-gb", type=float, default=70.0, help="shard memory per GPU (default %(default)s)")
    q.add_argument("--repeats", type=int, default=20, help="timed repeats per step (default %(default)s)")
    q.add_argument("--dry-run", action="store_true", help="print the steps only")
    q.add_argument("--out", help="results directory (default: $DLRMLAB_RESULTS_DIR, else ./dlrmlab-results)")
    q = sub.add_parser("report", help="the report section (Markdown) from the prediction and measured rows")
    q.add_argument("--out", help="results directory holding <gpu family>/shard_scaling.csv (and shard.csv)")
    q.add_argument("--family", help="GPU family folder to read (default: this machine's)")
    q = sub.add_parser("alltoall", help="all-to-all bandwidth of the group at given message sizes")
    q.add_argument("--sizes-mb", default="1,4,16,64", help="bytes each rank sends, MB (default %(default)s)")
    q.add_argument("--nproc", type=int, default=1, help="ranks to start here through torchrun (default %(default)s)")
    q.add_argument("--backend", default="nccl", choices=("gloo", "nccl"), help="default %(default)s")
    q.add_argument("--device", default="cuda", choices=("cpu", "cuda"), help="where tensors live (default %(default)s)")
    q.add_argument("--repeats", type=int, default=20, help="timed repeats per message size (default %(default)s)")
    q.add_argument("--out", help="results directory; rows go to OUT/<gpu family>/shard_alltoall.csv")


def _stage(args: argparse.Namespace):
    from dlrmlab import backend  # numba: the CLI's parser imports this module

    name = backend.default_preset() if args.preset in (None, "auto") else args.preset
    over = {k: v for k, v in (("tables", args.tables), ("rows", args.rows), ("sparse_feature_size", args.dim),
                              ("batch_size", args.batch), ("pooling", args.pooling)) if v is not None}  # fmt: skip
    if any(v <= 0 for v in over.values()):
        raise DlrmlabError("--tables, --rows, --dim, --batch and --pooling must be positive")
    return preset(name, **over)


def _plan_report(plan, w, cost) -> str:
    lines = [f"plan {plan.name}: {plan.spec()}", "", planner.describe(plan, w).to_string(index=False), "",
             cost.per_rank().to_string(index=False, float_format=lambda v: f"{v:.4g}"), ""]  # fmt: skip
    s = cost.summary()
    lines.append(f"imbalance (max/mean cost) {s['imbalance']:.3f}; memory max {s['max_memory_gb']:.3g} GB "
                 f"(max/mean {s['memory_imbalance']:.3f}); fits the budget: {s['fits']}")  # fmt: skip
    return "\n".join(lines)


def cmd_plan(args: argparse.Namespace) -> int:
    if args.world < 1:
        raise DlrmlabError(f"--world must be at least 1, got {args.world}")
    if not 0 <= args.hit_rate <= 1:
        raise DlrmlabError(f"--hit-rate must be within [0, 1], got {args.hit_rate}")
    stage = _stage(args)
    w = planner.Workload.from_stage(stage, hit_rates=args.hit_rate)
    budget = args.budget_gb * 1e9
    plan = planner.named_plan(args.plan, w, args.world, budget_bytes=budget)
    cost = planner.evaluate(plan, w, budget_bytes=budget)
    if args.save:
        print(f"wrote {plan.save(args.save)}", file=sys.stderr if args.json else sys.stdout)
    print(plan.to_json() if args.json else _plan_report(plan, w, cost))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    plan = ShardingPlan.load(args.file)
    w = planner.Workload.from_stage(_stage(args))
    print(_plan_report(plan, w, planner.evaluate(plan, w)))
    return 0


def _torchrun_argv(args: argparse.Namespace, run_id: str) -> list[str]:
    """This ``shard run`` again, for each rank under torchrun (without --nproc)."""
    argv = ["shard", "run", "--run-id", run_id]
    for opt in ("preset", "tables", "rows", "dim", "batch", "pooling", "embedding", "dataset", "backend", "device",
                "mode", "repeats", "warmup", "timeout", "budget_gb", "seed", "out", "table_values"):  # fmt: skip
        v = getattr(args, opt)
        if v is not None:
            argv += [f"--{opt.replace('_', '-')}", str(v)]
    for p in args.plan or []:
        argv += ["--plan", p]
    return argv + (["--no-model"] if args.no_model else [])


def _configs(args: argparse.Namespace) -> list:
    from dlrmlab import backend  # numba: the CLI's parser imports this module
    from dlrmlab.shard.run import RunConfig  # torch: optional; the CLI's parser imports this module

    name = backend.default_preset() if args.preset in (None, "auto") else args.preset
    embeddings = [e.strip() for e in args.embedding.split(",") if e.strip()]
    if args.repeats < 1 or args.warmup < 0 or args.timeout <= 0:
        raise DlrmlabError("--repeats must be >= 1, --warmup >= 0 and --timeout > 0")
    return [RunConfig(name, args.tables, args.rows, args.dim, args.batch, args.pooling, args.dataset, p, e,
                      args.backend, args.device, args.mode, args.repeats, args.warmup, args.seed, args.timeout,
                      not args.no_model, args.budget_gb, args.table_values)
            for p in (args.plan or ["table_wise"]) for e in embeddings]  # fmt: skip


def cmd_run(args: argparse.Namespace, out_dir: Path) -> int:
    from dlrmlab.shard import dist as sdist  # torch: optional; the CLI's parser imports this module
    from dlrmlab.shard import run as srun  # torch: optional; the CLI's parser imports this module

    cfgs = _configs(args)
    check_results_dir(out_dir)
    run_id = args.run_id or datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    env = sdist.env_world()
    if args.nproc > 1:
        if env is not None:
            raise DlrmlabError("--nproc starts ranks itself; under torchrun leave it out")
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={args.nproc}",
               "-m", "dlrmlab", *_torchrun_argv(args, run_id)]  # fmt: skip
        print("starting: " + " ".join(cmd), flush=True)
        return subprocess.call(cmd, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if args.nproc < 1:
        raise DlrmlabError(f"--nproc must be at least 1, got {args.nproc}")
    rows = srun.rank_main(None, None, None, cfgs, run_id) if env is not None else srun.run(cfgs, 1)
    if env is not None and env[0] != 0:
        return 0
    df = pd.DataFrame(rows)
    df["command"] = "dlrmlab shard run " + " ".join(_torchrun_argv(args, run_id)[4:]) + (
        f" (torchrun, {env[1]} ranks)" if env else "")  # fmt: skip
    path = append_results(df, RESULTS_NAME, out_dir)
    if args.json:
        print(df.to_json(orient="records"))
    else:
        cols = ["plan", "embedding", "world_size", "rank", "stage", "ms", "bytes", "imbalance", "latency_ms",
                "samples_per_s", "correct"]  # fmt: skip
        print(df[cols].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
        print(f"appended {len(df)} row(s) to {path}")
    return 0 if df["correct"].astype(bool).all() else 1


def cmd_predict(args: argparse.Namespace, out_dir: Path) -> int:
    worlds = [int(x) for x in args.world.split(",") if x.strip()]
    if not worlds or min(worlds) < 1:
        raise DlrmlabError(f"--world needs positive GPU counts, got {args.world!r}")
    check_results_dir(out_dir)
    comm = spredict.comm_model(args.intra_gbps, args.inter_gbps, args.gpus_per_host)
    model = spredict.cost_model(comm, pd.read_csv(args.calibrate) if args.calibrate else None)
    stages = [s.strip() for s in args.stage.split(",") if s.strip()]
    df = spredict.predictions(stages, worlds, args.plan, args.budget_gb * 1e9, model)
    df["command"] = "dlrmlab shard predict " + " ".join(sys.argv[3:]) if len(sys.argv) > 3 else "dlrmlab shard predict"
    path = append_results(df, SCALING_NAME, out_dir)
    if args.json:
        print(df.to_json(orient="records"))
    else:
        cols = ["stage", "plan", "scaling", "world_size", "batch_size", "fits", "input_dist_ms", "lookup_ms",
                "output_dist_ms", "latency_ms", "samples_per_s", "dlrm_samples_per_s", "imbalance"]  # fmt: skip
        print(df[cols].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
        print(f"appended {len(df)} row(s) to {path}")
    return 0


def cmd_alltoall(args: argparse.Namespace, out_dir: Path) -> int:
    from dlrmlab.shard import run as srun  # torch: optional; the CLI's parser imports this module

    try:
        sizes = [float(x) for x in args.sizes_mb.split(",") if x.strip()]
    except ValueError:
        raise DlrmlabError(f"--sizes-mb: comma-separated numbers, got {args.sizes_mb!r}") from None
    check_results_dir(out_dir)
    rows = srun.alltoall_bandwidth([int(s * 1e6) for s in sizes], args.nproc, args.backend, args.device,
                                   args.repeats)  # fmt: skip
    df = pd.DataFrame(rows)
    path = append_results(df, ALLTOALL_NAME, out_dir)
    print(df.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"appended {len(df)} row(s) to {path}")
    return 0


def cmd_campaign(args: argparse.Namespace, out_dir: Path) -> int:
    stage = _stage(args)
    counts = [int(x) for x in args.counts.split(",")] if args.counts else None
    root = str(out_dir.parent)
    argvs = campaign.steps(stage, args.gpus, root, backend=args.backend, device=args.device,
                           large_rows=args.large_rows, budget_gb=args.budget_gb, repeats=args.repeats,
                           counts=counts, embeddings=args.embedding)  # fmt: skip
    worlds = ",".join(map(str, counts or campaign.counts_up_to(args.gpus)))
    calibrate = ["--calibrate", str(out_dir / f"{RESULTS_NAME}.csv")] if args.device == "cuda" else []
    argvs.append(["shard", "predict", "--world", worlds, "--budget-gb", str(args.budget_gb), *calibrate,
                  "--out", root])  # fmt: skip
    if args.dry_run:
        print("\n".join("dlrmlab " + " ".join(a) for a in argvs))
        return 0
    failed = campaign.run_campaign(argvs)
    print(f"{len(argvs) - failed} of {len(argvs)} step(s) succeeded; rows under {out_dir}")
    return 1 if failed else 0


def cmd_report(args: argparse.Namespace, out_dir: Path) -> int:
    d = out_dir.parent / args.family if args.family else out_dir
    pred_path, meas_path = d / f"{SCALING_NAME}.csv", d / f"{RESULTS_NAME}.csv"
    if not pred_path.is_file():
        raise DlrmlabError(f"no predictions at {pred_path}: run dlrmlab shard predict --out {out_dir.parent} first")
    text = report.section(pd.read_csv(pred_path), pd.read_csv(meas_path) if meas_path.is_file() else None)
    path = d / "shard_report.md"
    path.write_text(text + "\n")
    print(text)
    print(f"wrote {path}")
    return 0


def run_command(args: argparse.Namespace, out_dir: Path) -> int:
    try:
        # torch: optional; asked here whether it is installed
        import torch  # noqa: F401
    except Exception as e:
        raise DlrmlabError(f"dlrmlab shard needs PyTorch (pip install -e '.[torch]'): {e}") from None
    c = args.shard_command
    if c == "plan":
        return cmd_plan(args)
    if c == "show":
        return cmd_show(args)
    steps = {"run": cmd_run, "predict": cmd_predict, "alltoall": cmd_alltoall, "campaign": cmd_campaign,
             "report": cmd_report}
    return steps[c](args, out_dir)
