"""The measurement campaign of the sharded stage on one host of G GPUs, as a list of ``dlrmlab shard``
commands (each its own process; the multi-rank ones through torchrun):

1. strong scaling (global batch B) and weak scaling (B per GPU) for 1, 2, 4, ... G GPUs, every plan type
   and the planner's, the torch plug-in and the fast kernel, at the preset's stage (seeded tables) and at
   a stage of ``large_rows`` rows per table (procedural tables: each rank makes only its shards) where the
   plan fits the memory budget;
2. the group's own all-to-all bandwidth at the message sizes those plans send;
3. the scaling model's predictions for the same GPU counts, its gather bandwidth calibrated from the
   one-GPU run.

:func:`steps` only builds the commands (pure); :func:`run_campaign` runs them in order, keeps going past a
failing step, and returns how many failed.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from dlrmlab.errors import DlrmlabError
from dlrmlab.shard import planner
from dlrmlab.shard.plan import SHARDING_TYPES
from dlrmlab.workload import EmbeddingStage

PLANS = ("auto", *SHARDING_TYPES)


def counts_up_to(gpus: int) -> list[int]:
    """1, 2, 4, ... up to ``gpus`` (and ``gpus`` itself)."""
    if gpus < 1:
        raise DlrmlabError(f"need at least one GPU, got {gpus}")
    out, n = [], 1
    while n < gpus:
        out.append(n)
        n *= 2
    return [*out, gpus]


def fitting_plans(stage: EmbeddingStage, n: int, budget_bytes: float, plans: Sequence[str] = PLANS) -> list[str]:
    """The plans whose shards fit ``budget_bytes`` per rank on ``n`` ranks (the planner's only if it finds one)."""
    w = planner.Workload.from_stage(stage)
    keep = []
    for p in plans:
        try:
            plan = planner.named_plan(p, w, n, budget_bytes=budget_bytes)
            plan.validate(w.embedding_sizes, w.dim, w.element_bytes, budget_bytes)
        except DlrmlabError:
            continue
        keep.append(p)
    return keep


def message_mb(stage: EmbeddingStage, n: int, budget_bytes: float) -> list[float]:
    """Per-rank bytes (MB) of the input and output distributions of the fitting plans on ``n`` ranks."""
    w = planner.Workload.from_stage(stage)
    sizes = set()
    for p in fitting_plans(stage, n, budget_bytes):
        c = planner.evaluate(planner.named_plan(p, w, n, budget_bytes=budget_bytes), w)
        for v in (c.input_bytes.max(), c.output_bytes.max(), c.reduce_scatter_bytes.max()):
            if v > 0:
                sizes.add(round(float(v) / 1e6, 3))
    return sorted(sizes)


def steps(stage: EmbeddingStage, gpus: int, out: str, *, backend: str = "nccl", device: str = "cuda",
          large_rows: int = 40_000_000, budget_gb: float = 70.0, repeats: int = 20,
          counts: Sequence[int] | None = None, embeddings: str = "torch,fast") -> list[list[str]]:  # fmt: skip
    """The campaign's ``dlrmlab`` argument lists, in order."""
    counts = list(counts or counts_up_to(gpus))
    budget = budget_gb * 1e9
    large = stage.with_(embedding_sizes=(int(large_rows),) * stage.num_tables, name=f"{stage.name}_large")
    shape = ["--preset", stage.name if stage.name in ("paper", "tiny") else "paper", "--tables",
             str(stage.num_tables), "--dim", str(stage.embedding_dim),
             "--pooling", str(int(stage.pooling.mean))]  # fmt: skip
    common = ["--backend", backend, "--device", device, "--repeats", str(repeats), "--budget-gb", str(budget_gb),
              "--embedding", embeddings, "--out", out]  # fmt: skip
    argv = []
    for st, values in ((stage, "random"), (large, "procedural")):
        rows = ["--rows", str(st.embedding_sizes[0]), "--table-values", values]
        for n in counts:
            for weak in (False, True):
                b = stage.batch_size * (n if weak else 1)
                plans = fitting_plans(st.with_(batch_size=b), n, budget, PLANS if not weak else ("auto", "table_wise"))
                if not plans or (weak and n == 1):  # weak at one GPU is the strong run
                    continue
                plan_args = [x for p in plans for x in ("--plan", p)]
                argv.append(["shard", "run", "--nproc", str(n), *shape, *rows, "--batch", str(b), *common,
                             *plan_args, *(["--no-model"] if weak else [])])  # fmt: skip
    sizes = sorted(set(message_mb(stage, gpus, budget)) | set(message_mb(large, gpus, budget)))
    if gpus > 1 and sizes:
        argv.append(["shard", "alltoall", "--nproc", str(gpus), "--backend", backend, "--device", device,
                     "--sizes-mb", ",".join(map(str, sizes)), "--out", out])  # fmt: skip
    return argv


def run_campaign(argvs: Sequence[list[str]], say: Callable[[str], None] = print) -> int:
    """Run each step as ``python -m dlrmlab ...``; the number of steps that failed."""
    failed = 0
    for i, argv in enumerate(argvs):
        say(f"[{i + 1}/{len(argvs)}] dlrmlab {' '.join(argv)}")
        rc = subprocess.call([sys.executable, "-m", "dlrmlab", *argv], cwd=Path.cwd())
        if rc != 0:
            failed += 1
            say(f"  step failed with exit status {rc}")
    return failed
