"""compute-sanitizer over every variant: memcheck and racecheck, one tiny case each, with the summary lines.

``python -m dlrmlab.bench.sanitize [--variants a,b] [--tools memcheck,racecheck] [--jobs 4] [--out DIR]``

For each variant (default: every registered one that can run here; the cuEmbed peers when
``DLRMLAB_CUEMBED_DIR`` and nvcc are there) and each tool, runs
``compute-sanitizer --tool TOOL python -m dlrmlab.bench.sanitize --target VARIANT``: the runner prepares
the variant on small stages (sum in fp32, a weighted sum in fp16 with int32 ids, a mean in bf16 at an odd
width; bags from empty to longer than the fast kernel's 64-id chunk), runs two batches of each, checks them
against the NumPy reference and closes the variant. Each run's ``ERROR SUMMARY: N errors`` line is printed
per variant and tool; the exit status is 1 if any run reported errors, failed or printed no summary.

compute-sanitizer is looked for with ``--sanitizer``, on PATH, in ``$CUDA_HOME/bin``, ``$CUDA_PATH/bin``,
``/usr/local/cuda/bin``, then in the ``nvidia-cuda-sanitizer-api-cu12`` wheel (whose injection libraries
are passed with ``--injection-path``). Without it, or without a GPU, the command says why and exits 0.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import dlrmlab
from dlrmlab import backend, variants
from dlrmlab.bench.case import BenchCase
from dlrmlab.bench.comparison import check_result
from dlrmlab.bench.fuzz import select_variants
from dlrmlab.errors import DlrmlabError
from dlrmlab.peers import PeerUnavailable
from dlrmlab.workload import EmbeddingStage

TOOLS = ("memcheck", "racecheck", "synccheck", "initcheck")
DEFAULT_TOOLS = ("memcheck", "racecheck")
#: The runner's stages, ``dtype:dim:index_dtype:combine``: every combine, dtype and id type once, an odd width.
DEFAULT_COMBOS = ("float32:32:int64:sum", "float16:12:int32:weighted", "bfloat16:7:int64:mean")
#: Rows per table, batch and pooling of the runner's stages: empty bags and bags over one 64-id chunk.
ROWS, BATCH, POOLING = (1000, 700, 1500), 16, "uniform:0-80"
TOOLKIT_DIRS = ("/usr/local/cuda/bin", "/usr/local/cuda/compute-sanitizer")
#: memcheck ends with "ERROR SUMMARY: N errors"; racecheck with "RACECHECK SUMMARY: H hazards displayed (N errors, W
#: warnings)"
SUMMARY = re.compile(r"ERROR SUMMARY:\s*(\d+) errors?|RACECHECK SUMMARY:.*?\((\d+) errors?")
SKIP = "sanitize: skipped: "


# --- the runner (what compute-sanitizer runs) ------------------------------------------------------------


def parse_combo(text: str) -> tuple[str, int, str, str, bool]:
    """``dtype:dim:index_dtype:combine`` -> (dtype, dim, index dtype, mode, weighted)."""
    try:
        dtype, dim, idx, combine = text.split(":")
        dim_i = int(dim)
    except ValueError:
        raise DlrmlabError(f"bad combo {text!r}: expected dtype:dim:index_dtype:combine, e.g. float32:32:int64:sum") \
            from None
    if combine not in ("sum", "mean", "weighted"):
        raise DlrmlabError(f"bad combo {text!r}: combine must be sum, mean or weighted")
    return dtype, dim_i, idx, "sum" if combine == "weighted" else combine, combine == "weighted"


def run_target(variant: str, combos: Sequence[str] = DEFAULT_COMBOS, batches: int = 2, say=print) -> int:
    """Prepare ``variant`` on each combo's stage, run and check ``batches`` batches, close; 0 if all matched
    the reference (a combination the variant refuses up front is reported and passed over), else 1."""
    status = 0
    for combo in combos:
        dtype, dim, idx, mode, weighted = parse_combo(combo)
        stage = EmbeddingStage(ROWS, dim, BATCH, POOLING, dtype=dtype, index_dtype=idx, name="sanitize")
        case = BenchCase.create(stage, "zipf:1.1", seed=0, n_batches=batches, weighted=weighted, mode=mode)
        try:
            prepared = variants.prepare(variant, case)
        except PeerUnavailable as e:
            say(f"sanitize-target: {variant} {combo}: skipped: {e}")
            continue
        except DlrmlabError as e:
            say(f"sanitize-target: {variant} {combo}: refused up front: {e}")
            continue
        try:
            for b in range(batches):
                err, ok, why = check_result(case, prepared.result(b), b)
                if not ok:
                    say(f"sanitize-target: {variant} {combo} batch {b}: WRONG RESULT: {why}")
                    status = 1
        finally:
            prepared.close()
        say(f"sanitize-target: {variant} {combo}: ran {batches} batches")
    return status


# --- the driver ------------------------------------------------------------------------------------------


def _wheel_dir() -> Path | None:
    """The ``nvidia-cuda-sanitizer-api`` wheel's folder (``bin/compute-sanitizer``, ``lib/``), if installed."""
    try:
        # an optional wheel (nvidia-cuda-sanitizer-api)
        import nvidia.cuda_sanitizer_api as pkg  # type: ignore[import-not-found]
    except ImportError:
        return None
    for root in getattr(pkg, "__path__", []):
        if (Path(root) / "bin" / "compute-sanitizer").is_file():
            return Path(root)
    return None


def find_sanitizer(explicit: str | None = None) -> list[str]:
    """The command prefix that starts compute-sanitizer (the binary, and ``--injection-path`` for the
    wheel's layout), or a DlrmlabError saying where it was looked for."""
    if explicit:
        found = shutil.which(explicit) or (explicit if os.access(explicit, os.X_OK) else None)
        if not found:
            raise DlrmlabError(f"--sanitizer {explicit}: not an executable")
        return _with_injection(Path(found))
    on_path = shutil.which("compute-sanitizer")
    if on_path:
        return _with_injection(Path(on_path))
    dirs = [Path(os.environ[v]) / "bin" for v in ("CUDA_HOME", "CUDA_PATH") if os.environ.get(v)]
    dirs += [Path(d) for d in TOOLKIT_DIRS]
    for d in dirs:
        if os.access(d / "compute-sanitizer", os.X_OK):
            return _with_injection(d / "compute-sanitizer")
    wheel = _wheel_dir()
    if wheel is not None:
        exe = wheel / "bin" / "compute-sanitizer"
        if not os.access(exe, os.X_OK):
            raise DlrmlabError(f"compute-sanitizer from the nvidia-cuda-sanitizer-api wheel is not executable "
                               f"(the wheel installs it without the x bit): chmod +x {exe}")
        return _with_injection(exe)
    raise DlrmlabError(
        "compute-sanitizer not found (not on PATH, nor in $CUDA_HOME/bin, $CUDA_PATH/bin, "
        f"{', '.join(TOOLKIT_DIRS)}, nor the nvidia-cuda-sanitizer-api wheel); install the CUDA toolkit, or "
        "pip install nvidia-cuda-sanitizer-api-cu12 (then chmod +x its bin/compute-sanitizer), or pass --sanitizer"
    )


def _with_injection(exe: Path) -> list[str]:
    """``[exe]``, plus ``--injection-path`` where the injection libraries sit in ``../lib`` (the wheel's
    layout), not beside the binary (the toolkit's): compute-sanitizer only looks beside itself."""
    real = exe.resolve()
    lib = real.parent.parent / "lib"
    if not (real.parent / "libsanitizer-collection.so").exists() and (lib / "libsanitizer-collection.so").exists():
        return [str(exe), "--injection-path", str(lib)]
    return [str(exe)]


def build_command(sanitizer: Sequence[str], tool: str, variant: str, combos: Sequence[str] | None = None,
                  python: str | None = None) -> list[str]:
    """The command line that runs ``variant``'s runner under ``tool``."""
    if tool not in TOOLS:
        raise DlrmlabError(f"unknown tool {tool!r}; valid: {', '.join(TOOLS)}")
    cmd = [*sanitizer, "--tool", tool, "--print-limit", "20", python or sys.executable, "-m", "dlrmlab.bench.sanitize",
           "--target", variant]
    if combos:
        cmd += ["--combos", ",".join(combos)]
    return cmd


def parse_summary(output: str) -> tuple[int | None, str | None]:
    """``(errors, line)`` of the last summary line (memcheck's or racecheck's) in ``output``; ``(None, None)``
    without one."""
    found = None
    for line in output.splitlines():
        m = SUMMARY.search(line)
        if m:
            found = (int(m.group(1) or m.group(2)), line.strip())
    return found or (None, None)


@dataclass
class Outcome:
    variant: str
    tool: str
    returncode: int
    errors: int | None
    line: str | None
    seconds: float
    log: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.errors == 0

    def describe(self) -> str:
        if self.errors is None:
            why = f"no ERROR SUMMARY line (exit {self.returncode}): " + (self.log.strip().splitlines() or ["-"])[-1]
        else:
            why = self.line + ("" if self.returncode == 0 else f" (exit {self.returncode}: see the log)")
        return f"{self.variant:<18} {self.tool:<9} {why} ({self.seconds:.0f} s)"


def child_env() -> dict[str, str]:
    """The runner's environment: the same dlrmlab on PYTHONPATH, torch without its caching allocator (so
    memcheck sees each allocation's real bounds)."""
    root = str(Path(dlrmlab.__file__).resolve().parents[1])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    env["PYTORCH_NO_CUDA_MEMORY_CACHING"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_one(cmd: list[str], variant: str, tool: str, timeout: float, out: Path | None) -> Outcome:
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=child_env())
        log, rc = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as e:
        log = f"{e.stdout or ''}{e.stderr or ''}\ntimed out after {timeout:.0f} s"
        rc = 124
    errors, line = parse_summary(log)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{variant}.{tool}.log").write_text(" ".join(cmd) + "\n" + log)
    return Outcome(variant, tool, rc, errors, line, time.perf_counter() - t0, log)


def sanitize(variant_names: Sequence[str] | None, tools: Sequence[str], sanitizer: list[str], jobs: int = 4,
             combos: Sequence[str] | None = None, timeout: float = 1800.0, out: str | Path | None = None,
             say=print) -> list[Outcome]:
    """Every (variant, tool) run, ``jobs`` at a time; their outcomes, in variant then tool order."""
    names, skipped = select_variants(variant_names)
    for n, why in sorted(skipped.items()):
        say(f"sanitize: {n}: skipped: {why}")
    runs = [(n, t) for n in names for t in tools]
    say(f"sanitize: {len(runs)} run(s): {len(names)} variant(s) x {', '.join(tools)}, {jobs} at a time; "
        f"{' '.join(sanitizer)}")
    logs = Path(out) if out is not None else None
    results: dict[tuple[str, str], Outcome] = {}
    with ThreadPoolExecutor(max_workers=max(1, int(jobs))) as pool:
        futures = {pool.submit(run_one, build_command(sanitizer, t, n, combos), n, t, timeout, logs): (n, t)
                   for n, t in runs}
        for f in as_completed(futures):
            o = f.result()
            results[futures[f]] = o
            say(o.describe())
    return [results[r] for r in runs]


def gpu_missing() -> str | None:
    """Why there is nothing here for compute-sanitizer to check (simulator mode), or None."""
    return f"{backend.describe_mode()}: compute-sanitizer needs a CUDA GPU" if backend.SIMULATOR else None


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dlrmlab.bench.sanitize", description=__doc__.splitlines()[0],
                                 epilog="exit status: 0 clean (or skipped: no compute-sanitizer, no GPU); 1 errors, "
                                        "a failed run or a wrong result; 2 a bad request")
    ap.add_argument("--variants", help="comma-separated (default: every registered variant that can run here)")
    ap.add_argument("--tools", default=",".join(DEFAULT_TOOLS), help=f"comma-separated, of {', '.join(TOOLS)} "
                                                                     "(default %(default)s)")
    ap.add_argument("--jobs", type=int, default=4, help="runs at a time on the GPU (default %(default)s)")
    ap.add_argument("--combos", help="the runner's stages, dtype:dim:index_dtype:combine, comma-separated "
                                     f"(default {','.join(DEFAULT_COMBOS)})")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per run (default %(default)s)")
    ap.add_argument("--out", help="write each run's log (the command, then its output) here")
    ap.add_argument("--sanitizer", help="the compute-sanitizer binary (default: looked for, see the module doc)")
    ap.add_argument("--sanitizer-arg", action="append", default=[], metavar="ARG",
                    help="one more compute-sanitizer option, before the tool (repeatable), e.g. "
                         "--sanitizer-arg=--ignore-getprocaddress-notfound")
    ap.add_argument("--target", help=argparse.SUPPRESS)  # the runner: what compute-sanitizer runs
    args = ap.parse_args(argv)
    try:
        combos = [c.strip() for c in args.combos.split(",") if c.strip()] if args.combos else None
        for c in combos or []:
            parse_combo(c)
        if args.target:
            return run_target(args.target, combos or DEFAULT_COMBOS)
        tools = [t.strip() for t in args.tools.split(",") if t.strip()]
        for t in tools:
            if t not in TOOLS:
                raise DlrmlabError(f"unknown tool {t!r}; valid: {', '.join(TOOLS)}")
        try:
            prefix = find_sanitizer(args.sanitizer) + list(args.sanitizer_arg)
        except DlrmlabError as e:
            if args.sanitizer:
                raise
            print(SKIP + str(e))
            return 0
        why = gpu_missing()
        if why:
            print(SKIP + why)
            return 0
        chosen = [v.strip() for v in args.variants.split(",") if v.strip()] if args.variants else None
        outcomes = sanitize(chosen, tools, prefix, args.jobs, combos, args.timeout, args.out)
    except DlrmlabError as e:
        print(f"sanitize: error: {e}", file=sys.stderr)
        return 2
    bad = [o for o in outcomes if not o.ok]
    print("sanitize: summary lines, per variant and tool:")
    for o in outcomes:
        print("  " + o.describe())
    print(f"sanitize: {len(outcomes)} run(s), {len(outcomes) - len(bad)} clean, {len(bad)} with errors or failed"
          + (f": {', '.join(f'{o.variant}/{o.tool}' for o in bad)}" if bad else ""))
    return 1 if bad or not outcomes else 0


if __name__ == "__main__":
    sys.exit(main())
