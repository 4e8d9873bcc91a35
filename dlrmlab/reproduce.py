"""``dlrmlab reproduce``: the paper's claims measured on this machine, written up as a report.

Runs the experiment suite of :data:`dlrmlab.report.claims.CLAIMS` (or the ``only`` ones) and writes, under
``<out>/<gpu family>/`` (``simulator`` without a GPU; ``out`` defaults to ``$DLRMLAB_RESULTS_DIR``, else
``./dlrmlab-results``, where every command writes), each claim's CSVs and figure (PNG and SVG) and a
``report.md`` that puts every claim of Jain et al. (MICRO 2024) beside what this GPU gave (see
:mod:`dlrmlab.report.writer` for the directory's contents and when it may be written over).

On a CUDA GPU the default preset is ``paper``; without one it is ``tiny`` in Numba's CUDA simulator, where the
kernels' outputs are checked and nothing is timed (the report says so at the top), and the CPU analyses
(dataset hotness, the occupancy calculator, the L2 model) run as anywhere.

Everything wrong with the request (an unknown claim or dataset, ``--preset paper`` without a GPU, a bad
``--repeats``, an output directory with other content) is refused with a :class:`DlrmlabError` before
anything runs (the CLI's exit status 2). An exception inside one experiment is recorded in its section and
the others go on; the return value is 1 if an experiment failed or a variant's output was wrong, else 0.
"""

from __future__ import annotations

import sys
import time
import traceback
from pathlib import Path

import pandas as pd

from dlrmlab import backend
from dlrmlab.bench.results import check_results_dir, default_dir
from dlrmlab.device import family
from dlrmlab.errors import EXIT_INCORRECT, EXIT_OK, DlrmlabError
from dlrmlab.report import writer
from dlrmlab.report.claims import CLAIMS, NOT_MEASURED, ClaimResult
from dlrmlab.report.context import ClaimSkipped, Context, resolve_datasets, resolve_preset, run_environment


def select_claims(only: list[str] | None) -> dict:
    """The claims to run, in report order; unknown names are refused with the list of valid ones."""
    if not only:
        return dict(CLAIMS)
    unknown = [n for n in only if n not in CLAIMS]
    if unknown:
        raise DlrmlabError(f"unknown claim(s) {', '.join(map(repr, unknown))} in --only; valid: {', '.join(CLAIMS)}")
    return {n: c for n, c in CLAIMS.items() if n in only}


def run_claim(claim, ctx):
    """Run one experiment; an exception becomes a ``failed`` result (with its message and where it was raised),
    :class:`ClaimSkipped` a ``skipped`` one. Returns (result, seconds)."""
    t0 = time.perf_counter()
    try:
        res = claim.run(ctx)
    except ClaimSkipped as e:
        res = ClaimResult(pd.DataFrame(), None, "", "skipped", NOT_MEASURED, str(e), status="skipped", error=str(e))
    except Exception as e:  # recorded in the report; the other experiments go on
        frame = traceback.extract_tb(e.__traceback__)[-1]
        where = f"{Path(frame.filename).name}:{frame.lineno} in {frame.name}"
        msg = f"{type(e).__name__}: {e} (raised at {where})"
        res = ClaimResult(pd.DataFrame(), None, "", "failed", "no", msg, status="failed", error=msg)
    finally:
        ctx.release()
    return res, time.perf_counter() - t0


def _announce(ctx, target: Path, quiet: bool) -> None:
    say = print if not quiet else (lambda *a, **k: None)
    if backend.SIMULATOR:
        say("no CUDA GPU: simulator mode. The tiny preset checks every kernel's output; no timings are taken.")
    say(f"reproduce: preset {ctx.preset}, datasets {', '.join(ctx.datasets)}"
        + (f" (skipped: {', '.join(f'{k}: {v}' for k, v in ctx.skipped_datasets.items())})"
           if ctx.skipped_datasets else "") + f"; writing to {target}/")  # fmt: skip


def reproduce(
    preset: str | None = "auto",
    out: str | Path | None = None,
    only: list[str] | None = None,
    datasets: list[str] | None = None,
    repeats: int | None = None,
    force: bool = False,
    quiet: bool = False,
    command: str | None = None,
) -> int:
    """Run the suite and write the report (see the module docstring); 0 if all went well, 1 otherwise."""
    claims = select_claims(only)
    chosen = resolve_preset(preset)
    if repeats is not None and (isinstance(repeats, bool) or int(repeats) != repeats or int(repeats) < 1):
        raise DlrmlabError(f"--repeats must be a positive integer, got {repeats!r}")
    usable, skipped = resolve_datasets(datasets)
    target = Path(out if out is not None else default_dir()) / family()
    previous = writer.check_target(target, force)
    check_results_dir(target)
    env = run_environment(command or "dlrmlab " + " ".join(sys.argv[1:]))
    ctx = Context(chosen, usable, skipped, repeats, progress=not quiet, env=env)
    _announce(ctx, target, quiet)
    w = writer.ReportWriter(target, ctx, previous, list(claims), CLAIMS)
    status = EXIT_OK
    steps = claims.values()
    if not quiet:
        from tqdm.auto import tqdm  # tqdm.auto looks for IPython and ipywidgets when imported

        steps = tqdm(list(steps), desc="reproduce", unit="claim")
    for claim in steps:
        if not quiet:
            steps.set_postfix_str(claim.name)
        res, secs = run_claim(claim, ctx)
        w.add(claim, res, secs)
        if res.status == "failed" or res.incorrect:
            status = EXIT_INCORRECT
        if not quiet:
            steps.write(f"{claim.name}: {res.error if res.status != 'ok' else res.reproduced} ({secs:.0f} s)")
    _print_summary(w.manifest, claims, target)
    return status


def _print_summary(manifest: dict, claims: dict, target: Path) -> None:
    width = max(len(n) for n in claims)
    for name in claims:
        e = manifest["claims"].get(name, {})
        state = e.get("reproduced") if e.get("status") == "ok" else f"{e.get('status')}: {e.get('error')}"
        print(f"{name:{width}s}  {state}")
    print(f"report: {target / 'report.md'}")
