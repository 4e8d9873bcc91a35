"""``dlrmlab reproduce``: the main job — every variant against torch on the paper's workloads.

On a CUDA GPU: the `paper` preset (12 x 500K x 128 fp32, batch 2048, pooling 150) for the random, low,
medium, high and Zipf (1.05, 1.15) datasets (plus any trace files given), every registered variant
interleaved with torch's embedding_bag, rows appended under ``<out>/<gpu>/``. Without a GPU: simulator
mode, announced, on the `tiny` preset: a correctness run of every variant, no speed claims.
"""

from __future__ import annotations

import sys
from pathlib import Path

from dlrmlab import backend
from dlrmlab.device import family
from dlrmlab.errors import DlrmlabError

DATASETS = ["random", "low", "medium", "high", "zipf:1.05", "zipf:1.15"]


def usable_variants(stage: str = "tiny") -> tuple[list[str], dict[str, str]]:
    """Variants that prepare and match the reference on a small case here; failures with their reasons."""
    from dlrmlab.bench.case import BenchCase
    from dlrmlab.bench.harness import check_result
    from dlrmlab.variants import names, prepare

    case = BenchCase.create(stage, "medium", seed=1, n_batches=2)
    ok, failed = [], {}
    for name in names(available_only=True):
        try:
            p = prepare(name, case, **({"hot_rows": 100} if name in ("l2p", "combined") else {}))
            try:
                err, correct, why = check_result(case, p.result(0), 0)
            finally:
                p.close()
            if correct:
                ok.append(name)
            else:
                failed[name] = why or f"rel. error {err:.2e}"
        except Exception as e:  # report, keep going: one broken variant must not hide the others
            failed[name] = f"{type(e).__name__}: {e}"
    return ok, failed


def reproduce(
    out: str = "results",
    quiet: bool = False,
    datasets: list[str] | None = None,
    variants: list[str] | None = None,
    repeats: int | None = None,
    repeat_runs: int = 1,
) -> int:
    from dlrmlab.bench.harness import format_table, run_bench

    print(f"mode: {backend.describe_mode()}")
    ok, failed = usable_variants("tiny")
    for name, why in failed.items():
        print(f"variant {name} skipped: {why}", file=sys.stderr)
    chosen = [v for v in (variants or ok) if v != "torch"]
    missing = set(chosen) - set(ok)
    if missing:
        raise DlrmlabError(f"variants not usable here: {', '.join(sorted(missing))}")
    if backend.SIMULATOR:
        print("simulator mode: correctness of every variant on the `tiny` preset; no timings are claimed")
        res = run_bench(chosen, ["random", "medium"], "tiny", out=None, progress=not quiet)
        print(format_table(res.rows))  # ends with the simulator notice: no speed claims
        return 0 if bool(res.rows["correct"].all()) else 1
    target = Path(out) / family()
    res = run_bench(
        chosen, datasets or DATASETS, "paper", out=target, name="reproduce", repeats=repeats,
        repeat_runs=repeat_runs, progress=not quiet,
    )  # fmt: skip
    print(format_table(res.rows))
    print(f"rows appended to {target}/reproduce.csv")
    return 0 if bool(res.rows["correct"].all()) else 1
