"""The program ncu profiles: one variant on one workload, a few batches, then exit.

``python -m dlrmlab.bench.ncu_target --variant NAME --dataset NAME --preset P [--seed S] [--knobs JSON]``

It runs the same :class:`~dlrmlab.bench.case.BenchCase` and ``Prepared.run`` the timing harness runs, so
what ncu sees is what the benchmark measured. Several batches run so that ``--launch-skip`` can pass over
the first launches; the batches rotate, as in the harness.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from dlrmlab.backend import cuda
from dlrmlab.bench.case import BenchCase
from dlrmlab.errors import DlrmlabError
from dlrmlab.variants import get as get_variant
from dlrmlab.variants import prepare as prepare_variant
from dlrmlab.workload import preset as make_preset


def run_target(
    variant: str, dataset: str, preset: str = "paper", seed: int = 0, iters: int = 8, n_batches: int = 4,
    knobs: dict | None = None, table_dtype: str | None = None,
) -> str | None:
    """Prepare ``variant`` (with ``knobs``), run ``iters`` batches, synchronize; return its kernel-name regex."""
    if iters < 1 or n_batches < 1:
        raise DlrmlabError(f"need iters >= 1 and n_batches >= 1, got {iters} and {n_batches}")
    stage = make_preset(preset, **({"dtype": table_dtype} if table_dtype else {}))
    case = BenchCase.create(stage, dataset, seed=seed, n_batches=n_batches)
    prepared = prepare_variant(variant, case, **(knobs or {}))
    try:
        for i in range(iters):
            prepared.run(i % n_batches)
        cuda.synchronize()
    finally:
        prepared.close()
    return get_variant(variant).kernels


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dlrmlab.bench.ncu_target", description=__doc__.splitlines()[0])
    ap.add_argument("--variant", required=True)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--preset", default="paper")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--iters", type=int, default=8, help="batches to run (default %(default)s)")
    ap.add_argument("--n-batches", type=int, default=4, help="distinct batches, rotated (default %(default)s)")
    ap.add_argument("--knobs", default="{}", help="the variant's knobs, a JSON object")
    ap.add_argument("--table-dtype", help="table storage (a float dtype or a quantized row format)")
    args = ap.parse_args(argv)
    try:
        regex = run_target(args.variant, args.dataset, args.preset, args.seed, args.iters, args.n_batches,
                           json.loads(args.knobs), args.table_dtype)
    except DlrmlabError as e:
        print(f"ncu_target: error: {e}", file=sys.stderr)
        return 2
    print(f"ncu_target: ran {args.iters} batches of {args.variant}; kernel_regex={regex}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
