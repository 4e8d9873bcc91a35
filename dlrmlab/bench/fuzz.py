"""Fuzz every variant against the NumPy reference on random stages (a GPU run; tiny sizes in the simulator).

``python -m dlrmlab.bench.fuzz --cases 300 --seed 0 [--out DIR] [--size auto|gpu|tiny] [--variants a,b]``

Each case is a random stage: 1-16 tables of up to ~100K rows, widths that are and are not multiples of the
16-byte vector, fp32 / fp16 / bf16 tables, int32 / int64 ids, batch up to ~1024, fixed, uniform (empty
bags), Poisson or long-tailed bag sizes (most bags short or empty, a few of thousands of ids), sum,
weighted sum or mean, and a uniform or skewed id stream. The case's tables and batches are made once and
every variant runs on them (the peers too: ``cuembed`` and ``cuembed_graph`` when ``DLRMLAB_CUEMBED_DIR``
and nvcc are there, skipped with the reason otherwise); each variant's two batches are checked with
:func:`dlrmlab.bench.comparison.check_result`.

Kernels compile per (width, dtype, combine, id type), so a case's compile-time part is drawn from a small
pool of ``--profiles`` profiles (which together cover every dtype, combine and id type, and widths of both
kinds); the shapes, bag sizes and id streams are drawn afresh for every case. A combination a variant
refuses up front (a :class:`~dlrmlab.errors.DlrmlabError` from ``prepare``, e.g. cuEmbed and bf16) is
counted as refused, not failed. A failure is a wrong result, or an exception after ``prepare``.

Prints a summary (cases, variant-runs, refusals, failures with the seed and case to rerun them) and
exits 1 on any failure. Case ``i`` of seed ``S`` is the same on every run: ``--seed S --case i`` reruns it.
"""

from __future__ import annotations

import argparse
import csv
import math
import re
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from dlrmlab import backend, variants
from dlrmlab.bench.case import BenchCase, _to_device
from dlrmlab.bench.comparison import check_result
from dlrmlab.errors import DlrmlabError
from dlrmlab.peers import PeerUnavailable, cuembed
from dlrmlab.workload import Batch, EmbeddingStage, Pooling, TableBatch

DTYPES = ("float32", "float16", "bfloat16")
COMBINES = (("sum", False), ("sum", True), ("mean", False))
INDEX_DTYPES = ("int64", "int32")
DATASETS = ("random", "zipf:1.05", "zipf:1.3", "synthetic-high", "synthetic-low")
POOLINGS = ("fixed", "uniform", "poisson", "longtail")
#: stop after this many failures (a broken context fails everything after it)
MAX_FAILURES = 25
#: a peer unavailable (PeerUnavailable at prepare) in this many cases is not tried again
PEER_TRIES = 3


@dataclass(frozen=True)
class Size:
    """Bounds of the random stages."""

    max_tables: int
    max_rows: int
    max_batch: int
    #: widths of profiles: those that fill 16-byte vectors for every dtype, and those that do not
    vector_dims: tuple[int, ...]
    odd_dims: tuple[int, ...]
    max_bag: int
    long_bag: int
    #: table bytes of one case, and looked-up elements (ids x width) of one batch (the reference's work)
    table_bytes: int
    lookup_elements: int
    profiles: int
    #: variants whose pin set is capped (the simulator's pin kernel runs one Python thread per row)
    pin_rows: int | None = None
    pinned: tuple[str, ...] = ("l2p", "combined", "fast+l2p", "fast_graph+l2p")

    def knobs(self, name: str, spec: CaseSpec) -> dict:
        """Knobs of ``name`` on ``spec`` (none but a capped pin set: the variants as shipped)."""
        if self.pin_rows is None or name not in self.pinned:
            return {}
        return {"hot_rows": min(self.pin_rows, min(spec.rows))}


SIZES: dict[str, Size] = {
    "gpu": Size(16, 100_000, 1024, (8, 16, 32, 64, 128, 136, 256), (1, 3, 5, 6, 7, 10, 13, 33, 62, 100, 129),
                300, 4096, 32 << 20, 6_000_000, 6),
    # the simulator: one Python thread per CUDA thread; small pin sets keep its pin kernels short
    "tiny": Size(3, 40, 6, (8,), (1, 3, 4, 12), 6, 12, 1 << 20, 20_000, 2, pin_rows=8),
}


@dataclass(frozen=True)
class Profile:
    """The compile-time part of a case: one kernel per variant serves every case of the profile."""

    dim: int
    dtype: str
    mode: str
    weighted: bool
    index_dtype: str

    def __str__(self) -> str:
        combine = "weighted sum" if self.weighted else self.mode
        return f"dim {self.dim} {self.dtype} {combine} {self.index_dtype} ids"


@dataclass(frozen=True)
class CaseSpec:
    """One random stage, a pure function of (seed, index, size)."""

    index: int
    profile: Profile
    rows: tuple[int, ...]
    batch: int
    pooling: str
    dataset: str
    seed: int

    def __str__(self) -> str:
        rows = f"{self.rows[0]}" if len(set(self.rows)) == 1 else ",".join(map(str, self.rows))
        return (f"{len(self.rows)} table(s) x rows {rows}, {self.profile}, batch {self.batch}, "
                f"pooling {self.pooling}, dataset {self.dataset}, data seed {self.seed}")


def profiles(seed: int, size: Size) -> list[Profile]:
    """``size.profiles`` profiles that together cover every dtype, combine and id type (as far as their
    number allows), half of them with widths that are not multiples of the vector width."""
    rng = np.random.default_rng([int(seed), 0xF0])
    out = []
    for k in range(size.profiles):
        dims = size.vector_dims if k % 2 == 0 else size.odd_dims
        mode, weighted = COMBINES[(k + int(rng.integers(3))) % 3] if k >= 3 else COMBINES[k]
        out.append(Profile(int(rng.choice(dims)), DTYPES[k % 3], mode, weighted, INDEX_DTYPES[(k // 3) % 2]))
    return out


def _pooling(rng: np.random.Generator, size: Size) -> str:
    kind = POOLINGS[int(rng.integers(len(POOLINGS)))]
    if kind == "fixed":  # sometimes a length at the fast kernel's chunk edges (64 ids staged at a time)
        edges = [n for n in (1, 2, 63, 64, 65, 150, size.max_bag) if n <= size.max_bag]
        return str(int(rng.integers(1, size.max_bag + 1)) if rng.random() < 0.7 else int(rng.choice(edges)))
    if kind == "uniform":
        hi = int(rng.integers(1, size.max_bag + 1))
        lo = 0 if rng.random() < 0.5 else int(rng.integers(0, hi + 1))
        return f"uniform:{lo}-{hi}"
    if kind == "poisson":
        return f"poisson:{float(rng.uniform(0.2, size.max_bag / 3)):.2f}"
    return f"longtail:{size.long_bag}"


def case_spec(seed: int, index: int, size: Size, pool: Sequence[Profile]) -> CaseSpec:
    """Case ``index`` of ``seed``: the same on every run."""
    rng = np.random.default_rng([int(seed), int(index), 0xF022])
    prof = pool[int(rng.integers(len(pool)))]
    tables = int(rng.integers(1, size.max_tables + 1))
    rows = np.maximum(1, np.exp(rng.uniform(0, math.log(size.max_rows), tables))).astype(np.int64)
    row_bytes = prof.dim * (4 if prof.dtype == "float32" else 2)
    total = int(rows.sum()) * row_bytes
    if total > size.table_bytes:  # keep a case's tables moderate: scale every table down alike
        rows = np.maximum(1, (rows * (size.table_bytes / total)).astype(np.int64))
    batch = int(np.exp(rng.uniform(0, math.log(size.max_batch + 1))))
    batch = max(1, min(batch, size.max_batch))
    pooling = _pooling(rng, size)
    if pooling.startswith("longtail:"):  # the longest bag, bounded so that the reference's work stays small
        pooling = f"longtail:{max(2, min(size.long_bag, size.lookup_elements // (4 * tables * prof.dim)))}"
    mean = _mean_bag(pooling)
    per_batch = tables * mean * prof.dim
    if batch * per_batch > size.lookup_elements:
        batch = max(1, int(size.lookup_elements // per_batch))
    dataset = DATASETS[int(rng.integers(len(DATASETS)))]
    return CaseSpec(int(index), prof, tuple(int(r) for r in rows), batch, pooling, dataset,
                    int(rng.integers(2**31)))


def _mean_bag(pooling: str) -> float:
    if pooling.startswith("longtail:"):
        return max(8.0, int(pooling.split(":")[1]) / 64)  # about the long tail's mean (see _long_tail)

    return max(1.0, Pooling.parse(pooling).mean)


def _long_tail(rng: np.random.Generator, n: int, longest: int) -> np.ndarray:
    """Bag sizes: a quarter empty, most short, a few in the thousands (lognormal, capped)."""
    lengths = np.ceil(rng.lognormal(1.0, 1.6, n)).astype(np.int64)
    lengths[rng.random(n) < 0.25] = 0
    if n > 1:
        lengths[rng.integers(n)] = longest  # at least one bag of the longest size
    return np.minimum(lengths, longest)


def build_case(spec: CaseSpec) -> Any:
    """The :class:`~dlrmlab.bench.case.BenchCase` of ``spec`` (two batches), tables on the device."""
    p = spec.profile
    long_tail = spec.pooling.startswith("longtail:")
    pooling = f"poisson:{_mean_bag(spec.pooling):g}" if long_tail else spec.pooling
    stage = EmbeddingStage(spec.rows, p.dim, spec.batch, pooling, dtype=p.dtype, index_dtype=p.index_dtype,
                           name="fuzz")
    case = BenchCase.create(stage, spec.dataset, seed=spec.seed, n_batches=2, weighted=p.weighted, mode=p.mode)
    if not long_tail:
        return case
    # Long-tailed bags (no Pooling draws them): new batches over the same tables, skewed ids.
    longest = int(spec.pooling.split(":")[1])
    rng = np.random.default_rng([spec.seed, 0x7A11])
    idt = np.dtype(p.index_dtype)
    batches = []
    for _ in range(case.n_batches):
        tables = []
        for rows in spec.rows:
            lengths = _long_tail(rng, spec.batch, longest)
            offsets = np.zeros(spec.batch + 1, np.int64)
            np.cumsum(lengths, out=offsets[1:])
            n = int(offsets[-1])
            ids = (np.floor(rng.pareto(1.1, n) * max(rows / 100, 1.0)).astype(np.int64) % rows).astype(idt)
            w = rng.random(n, dtype=np.float32) if p.weighted else None
            tables.append(TableBatch(ids, offsets.astype(idt), w))
        batches.append(Batch(tables))
    return replace(case, host_batches=batches, dev_batches=[_to_device(b, case.psw_dummy) for b in batches],
                   _refs={}, _derived={})


# --- running -------------------------------------------------------------------------------------------


@dataclass
class Tally:
    """What a fuzz run found."""

    cases: int = 0
    runs: int = 0
    failures: list[dict] = field(default_factory=list)
    refused: Counter = field(default_factory=Counter)  # (variant, message pattern) -> count
    skipped: dict[str, str] = field(default_factory=dict)  # variant -> why it could not run at all
    unavailable: Counter = field(default_factory=Counter)  # (variant, message pattern) -> cases (a peer)
    seconds: Counter = field(default_factory=Counter)  # variant -> seconds (prepare + runs + checks)
    per_variant: Counter = field(default_factory=Counter)  # variant -> checked runs
    rows: list[dict] = field(default_factory=list)


def _pattern(message: str) -> str:
    """A refusal's message with its numbers and quoted values generalised, to group refusals."""
    return re.sub(r"\d+", "N", message)[:140]


def select_variants(requested: Sequence[str] | None = None) -> tuple[list[str], dict[str, str]]:
    """The variants to fuzz (every registered one, or those ``requested``) and those that cannot run here
    at all, with the reason (GPU-only ones in the simulator, torch without PyTorch, cuEmbed without its
    directory or nvcc)."""
    names = list(requested) if requested else variants.names()
    for n in names:
        variants.get(n)  # an unknown name is refused with the valid ones
    run, skipped = [], {}
    for n in names:
        why = variants.why_not_here(n)
        if why is None and "cuembed" in variants.get(n).families:
            why = cuembed.unavailable()
        if why:
            skipped[n] = why
        else:
            run.append(n)
    return run, skipped


def _fail(tally: Tally, spec: CaseSpec, variant: str, error: str, seed: int) -> None:
    tally.failures.append({"case": spec.index, "seed": seed, "variant": variant, "error": error, "spec": str(spec)})


def run_variant(case: Any, spec: CaseSpec, name: str, knobs: dict, tally: Tally, seed: int) -> None:
    """Prepare ``name`` on ``case``, check its batches, close it; record what happened in ``tally``."""
    t0 = time.perf_counter()
    row = {"case": spec.index, "variant": name, "status": "ok", "max_rel_err": math.nan, "error": ""}
    try:
        try:
            prepared = variants.prepare(name, case, **knobs)
        except PeerUnavailable as e:  # e.g. a cuEmbed build that failed for this dtype: not tried forever
            tally.unavailable[(name, _pattern(str(e)))] += 1
            if sum(c for (n, _), c in tally.unavailable.items() if n == name) >= PEER_TRIES:
                tally.skipped[name] = f"{e} (unavailable in {PEER_TRIES} cases: not tried again)"
            row.update(status="skipped", error=str(e))
            return
        except DlrmlabError as e:
            tally.refused[(name, _pattern(str(e)))] += 1
            row.update(status="refused", error=str(e))
            return
        except Exception as e:
            row.update(status="failed", error=f"prepare: {type(e).__name__}: {e}")
            _fail(tally, spec, name, row["error"], seed)
            return
        try:
            worst = 0.0
            for b in range(case.n_batches):
                err, ok, why = check_result(case, prepared.result(b), b)
                worst = max(worst, err)
                if not ok:
                    row.update(status="failed", error=f"batch {b}: {why}")
                    break
            row["max_rel_err"] = worst
        except Exception as e:
            row.update(status="failed", error=f"{type(e).__name__}: {e}")
        finally:
            try:
                prepared.close()
            except Exception as e:
                row.update(status="failed", error=f"close: {type(e).__name__}: {e}")
        tally.runs += 1
        tally.per_variant[name] += 1
        if row["status"] == "failed":
            _fail(tally, spec, name, row["error"], seed)
    finally:
        tally.seconds[name] += time.perf_counter() - t0
        tally.rows.append({**row, "seconds": round(time.perf_counter() - t0, 4), "spec": str(spec)})


def fuzz(cases: int | Sequence[int], seed: int = 0, size: str = "auto", variant_names: Sequence[str] | None = None,
         n_profiles: int | None = None, progress: bool = True, max_failures: int = MAX_FAILURES) -> Tally:
    """Run ``cases`` random cases (a count, or the case indices to run) of ``seed``; return the tally."""
    sz = resolve_size(size)
    if n_profiles is not None:
        if int(n_profiles) < 1:
            raise DlrmlabError(f"--profiles must be at least 1, got {n_profiles}")
        sz = replace(sz, profiles=int(n_profiles))
    indices = list(range(int(cases))) if isinstance(cases, int) else [int(i) for i in cases]
    if not indices or min(indices) < 0:
        raise DlrmlabError("need at least one case, and case indices >= 0")
    names, skipped = select_variants(variant_names)
    tally = Tally(skipped=dict(skipped))
    pool = profiles(seed, sz)
    say = print if progress else (lambda *a, **k: None)
    say(f"fuzz: {len(indices)} case(s), seed {seed}, size {size_name(size)} ({backend.describe_mode()}), "
        f"{len(names)} variant(s): {', '.join(names)}")
    t_start = time.perf_counter()
    for k, i in enumerate(indices):
        spec = case_spec(seed, i, sz, pool)
        try:
            case = build_case(spec)
        except Exception as e:  # the generator must only make valid cases
            _fail(tally, spec, "(case)", f"{type(e).__name__}: {e}", seed)
            continue
        tally.cases += 1
        for name in names:
            if name in tally.skipped:
                continue
            run_variant(case, spec, name, sz.knobs(name, spec), tally, seed)
        del case
        if len(tally.failures) >= max_failures:
            say(f"fuzz: stopping after {len(tally.failures)} failures")
            break
        if progress and ((k + 1) % 25 == 0 or k + 1 == len(indices)):
            say(f"fuzz: {k + 1}/{len(indices)} cases, {tally.runs} variant-runs, {len(tally.failures)} failure(s), "
                f"{time.perf_counter() - t_start:.0f} s")
    tally.seconds["(total)"] = time.perf_counter() - t_start
    return tally


def size_name(size: str) -> str:
    if size == "auto":
        return "tiny" if backend.SIMULATOR else "gpu"
    return size


def resolve_size(size: str) -> Size:
    name = size_name(size)
    if name not in SIZES:
        raise DlrmlabError(f"unknown size {size!r}; valid: auto, {', '.join(SIZES)}")
    return SIZES[name]


# --- report --------------------------------------------------------------------------------------------


def summary(tally: Tally, seed: int) -> str:
    """The text the command prints: counts, refusals, skips, time per variant, failures with their seeds."""
    total = tally.seconds.get("(total)", 0.0)
    lines = [f"fuzz: {tally.cases} cases, {tally.runs} variant-runs, {len(tally.failures)} failure(s) "
             f"(seed {seed}, {total:.0f} s)"]
    if tally.per_variant:
        lines.append("  runs per variant: " + ", ".join(
            f"{n} {c} ({tally.seconds[n]:.1f} s)" for n, c in sorted(tally.per_variant.items())))
    for (name, pattern), count in sorted(tally.refused.items()):
        lines.append(f"  refused up front (not a failure): {name} x{count}: {pattern}")
    for (name, pattern), count in sorted(tally.unavailable.items()):
        lines.append(f"  unavailable (peer, not a failure): {name} x{count}: {pattern}")
    for name, why in sorted(tally.skipped.items()):
        lines.append(f"  skipped: {name}: {why}")
    for f in tally.failures:
        rerun = f"python -m dlrmlab.bench.fuzz --seed {f['seed']} --case {f['case']}"
        if f["variant"] != "(case)":
            rerun += f" --variants {f['variant']}"
        lines.append(f"FAILED case {f['case']} (seed {f['seed']}) {f['variant']}: {f['error']}\n"
                     f"    stage: {f['spec']}\n    rerun: {rerun}")
    return "\n".join(lines)


def write(tally: Tally, seed: int, out: str | Path) -> Path:
    """``fuzz.csv`` (one row per variant-run) and ``summary.txt`` under ``out``."""
    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    cols = ["case", "variant", "status", "max_rel_err", "seconds", "error", "spec"]
    with open(d / "fuzz.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, cols, extrasaction="ignore")
        w.writeheader()
        w.writerows(tally.rows)
    (d / "summary.txt").write_text(summary(tally, seed) + "\n")
    return d


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dlrmlab.bench.fuzz", description=__doc__.splitlines()[0],
                                 epilog="exit status: 0 every run matched the reference; 1 a failure; 2 a bad request")
    ap.add_argument("--cases", type=int, default=300, help="random cases (default %(default)s)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the cases (default %(default)s)")
    ap.add_argument("--case", type=int, action="append", help="run only case I of the seed (repeatable)")
    ap.add_argument("--out", help="write fuzz.csv and summary.txt here")
    ap.add_argument("--size", default="auto", help="gpu, tiny, or auto (default: gpu on a GPU, tiny in the simulator)")
    ap.add_argument("--variants", help="comma-separated variants (default: every registered one)")
    ap.add_argument("--profiles", type=int, help="compile-time profiles (width, dtype, combine, ids) the cases "
                                                 "draw from (default 6 on a GPU, 2 tiny): more means more compiling")
    ap.add_argument("--quiet", action="store_true", help="print the summary only")
    args = ap.parse_args(argv)
    try:
        chosen = [v.strip() for v in args.variants.split(",") if v.strip()] if args.variants else None
        tally = fuzz(args.case or args.cases, args.seed, args.size, chosen, args.profiles, progress=not args.quiet)
    except DlrmlabError as e:
        print(f"fuzz: error: {e}", file=sys.stderr)
        return 2
    print(summary(tally, args.seed))
    if args.out:
        print(f"fuzz: wrote {write(tally, args.seed, args.out)}/fuzz.csv and summary.txt")
    return 1 if tally.failures else 0


if __name__ == "__main__":
    sys.exit(main())
