"""The paper's datasets: the artifact's public files, where they are, whether a copy is right, and fetching them.

The artifact (github.com/rishucoding/reproduce_MICRO24_GPU_DLRM_inference, ``datasets/``) publishes the
low- and medium-reuse traces and the 60K "hot" row lists of the low, medium and high reuse levels (the
high trace itself is not public). :data:`PAPER_FILES` lists them with what a good copy holds; the
published figures are those of ``shared/data/README.md``. Nothing here is committed to the project: the
files are looked up in :func:`dlrmlab.datasets.data_dirs` (``$DLRMLAB_DATA_DIR``, then
``~/.cache/dlrmlab/data``), and ``dlrmlab data fetch`` downloads them there (a command that wants one of them
downloads it there on first use: :meth:`dlrmlab.datasets.ArtifactFile.obtain`).

``dlrmlab data list | verify [PATH|NAME] | fetch [--dest DIR]`` is :func:`command`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dlrmlab import download, hotness
from dlrmlab.datasets import (
    ARTIFACT_COMMIT,
    ARTIFACT_REPO,
    DATA_DIR_ENV,
    PAPER_TRACES,
    SYNTHETIC_PREFIX,
    SYNTHETIC_REUSE,
    ArtifactFile,
    data_dirs,
    read_trace,
)
from dlrmlab.errors import DlrmlabError
from dlrmlab.published import PUBLISHED_COVERAGE

COVERAGE_TOLERANCE = 0.0005  # published shares are rounded to 0.1%


@dataclass(frozen=True)
class PaperFile:
    """One of the artifact's files and what a good copy of it holds (its sha256 and size: ``source``)."""

    name: str  # how commands name it: trace:low, hot60K:low
    kind: str  # "trace" or "hot rows"
    source: ArtifactFile
    ids: int  # lines holding an id
    distinct: int
    max_id: int
    coverage: dict[int, float] = field(default_factory=dict)  # published share of the hottest K rows
    trace: str | None = None  # hot rows: the trace whose hottest 60K rows they are

    @property
    def file(self) -> str:
        return self.source.file

    @property
    def sha256(self) -> str:
        return self.source.sha256

    def find(self) -> Path | None:
        return self.source.find()


PAPER_FILES: tuple[PaperFile, ...] = (
    PaperFile("trace:low", "trace", PAPER_TRACES["low"], 379_910, 231_073, 499_999, PUBLISHED_COVERAGE["low"]),
    PaperFile("trace:medium", "trace", PAPER_TRACES["medium"], 429_951, 102_524, 499_997, PUBLISHED_COVERAGE["medium"]),
    PaperFile(
        "hot60K:low", "hot rows",
        ArtifactFile("hot60K_low.txt", "pinned_indices/rj_60K_low_hot_indices.txt",
                     "822ea259699adf49caccf93d6a247e004a0d7a754897ec121c91d7344a455be3", 406_638),
        60_000, 60_000, 499_994, trace="trace:low",
    ),
    PaperFile(
        "hot60K:medium", "hot rows",
        ArtifactFile("hot60K_medium.txt", "pinned_indices/rj_60K_medium_hot_indices.txt",
                     "663a97b2bc7ed39e62919feeaea31c09fe59caa2600b24c29a3e7b008b17d956", 406_695),
        60_000, 60_000, 499_996, trace="trace:medium",
    ),
    PaperFile(
        "hot60K:high", "hot rows",
        ArtifactFile("hot60K_high.txt", "pinned_indices/rj_60K_high_hot_indices.txt",
                     "38ea7fbbe3a8f58c03fbf4bc5d91960b9454c3a6cc7a82dd783579d8bed6fd17", 390_173),
        60_000, 60_000, 499_981,
    ),
)  # fmt: skip


def paper_file(name: str) -> PaperFile:
    """A registry entry by name (``trace:low``, ``hot60K:high``) or by file name (``reuse_low_500K.txt``)."""
    for pf in PAPER_FILES:
        if name in (pf.name, pf.file, pf.source.repo_path):
            return pf
    valid = ", ".join(pf.name for pf in PAPER_FILES)
    raise DlrmlabError(f"unknown paper file {name!r}; valid: {valid} (or their file names)")


def locate(name: str) -> Path:
    """The local copy of a paper file (see :func:`paper_file`); a clear error says how to get it if missing."""
    pf = paper_file(name)
    path = pf.find()
    if path is None:
        raise DlrmlabError(f"{pf.name}: {pf.source.how_to_get()}")
    return path


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def identify(path: str | Path) -> PaperFile:
    """Which paper file a local copy is: by file name (either layout), else by content (sha256)."""
    path = Path(path).expanduser()
    for pf in PAPER_FILES:
        if path.name == pf.file or path.as_posix().endswith("/" + pf.source.repo_path):
            return pf
    digest = _sha256(path)
    for pf in PAPER_FILES:
        if digest == pf.sha256:
            return pf
    raise DlrmlabError(
        f"cannot tell which paper file {path} is (its name is none of "
        f"{', '.join(pf.file for pf in PAPER_FILES)}); say it with --as NAME"
    )


# --- verify ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    what: str
    expected: str
    got: str
    ok: bool | None  # None: for information only


def _pct(x: float) -> str:
    return f"{x:.1%}"


def verify(path: str | Path, pf: PaperFile | str) -> list[Check]:
    """Check a copy of a paper file: ids (lines), distinct ids, max id, published coverage; for a hot-row
    list, that it is its trace's hottest 60K rows (when the trace is found). sha256 is for information:
    a copy with other line ends can still be right."""
    pf = paper_file(pf) if isinstance(pf, str) else pf
    path = Path(path).expanduser()
    ids = read_trace(path)
    n_distinct = hotness.distinct(ids)
    checks = [
        Check("ids (lines)", f"{pf.ids:,}", f"{ids.size:,}", ids.size == pf.ids),
        Check("distinct ids", f"{pf.distinct:,}", f"{n_distinct:,}", n_distinct == pf.distinct),
        Check("max id", f"{pf.max_id:,}", f"{int(ids.max()):,}", int(ids.max()) == pf.max_id),
    ]
    if pf.coverage:
        got = hotness.top_coverage(ids, pf.coverage)
        for k, want in pf.coverage.items():
            ok = abs(got[k] - want) <= COVERAGE_TOLERANCE + 1e-12
            checks.append(Check(f"hottest {k:,} rows' share", _pct(want), _pct(got[k]), ok))
    if pf.trace is not None:
        trace_pf = paper_file(pf.trace)
        trace_at = trace_pf.find()
        if trace_at is None:
            checks.append(Check(f"hottest rows of {pf.trace}", "yes", f"not checked ({pf.trace} not found)", None))
        else:
            trace = read_trace(trace_at)
            share = float(np.isin(trace, ids).mean())
            top = hotness.top_coverage(trace, [ids.size])[ids.size]
            checks.append(Check(f"share of {pf.trace} on these rows", _pct(top), _pct(share), abs(share - top) < 1e-9))
    digest = _sha256(path)
    same = digest == pf.sha256
    checks.append(Check("sha256", pf.sha256[:12], digest[:12], True if same else None))
    return checks


def _print_checks(title: str, checks: list[Check]) -> None:
    print(title)
    for c in checks:
        mark = {True: "ok", False: "FAIL", None: "-"}[c.ok]
        print(f"  {c.what:36s} expected {c.expected:>14s}  got {c.got:>14s}  {mark}")


# --- fetch -------------------------------------------------------------------------------------------------

def default_dest() -> Path:
    """Where ``fetch`` writes by default: the first directory the files are looked up in."""
    return data_dirs()[0]


def how_to_get_by_hand(dest: Path) -> str:
    lines = [f"To get the files by hand, download them on a machine that is online and copy them into {dest}:"]
    lines += [f"  {pf.source.url()}\n      -> {dest / pf.file}" for pf in PAPER_FILES]
    if dest not in data_dirs():
        lines.append(f"and set {DATA_DIR_ENV}={dest},")
    lines.append(
        f"or clone {ARTIFACT_REPO}, check out {ARTIFACT_COMMIT[:7]} and set {DATA_DIR_ENV} to its datasets/ "
        "directory. Then run `dlrmlab data verify`."
    )
    return "\n".join(lines)


def fetch(
    dest: str | Path | None = None,
    opener: download.Opener | None = None,
    timeout: float = 60.0,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Path]:
    """Download the artifact's files into ``dest`` (default :func:`default_dest`); files already there with
    the right content are kept. Each file is written atomically and only if its sha256 is the artifact's.
    Offline, raises :class:`DlrmlabError` saying how to get them by hand. Returns name -> path."""
    dest = Path(dest).expanduser() if dest is not None else default_dest()
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DlrmlabError(f"cannot create {dest}: {e.strerror or e}") from None
    out = {}
    for pf in PAPER_FILES:
        target = dest / pf.file
        if target.is_file() and _sha256(target) == pf.sha256:
            if progress:
                progress(f"{pf.name:14s} already in {target}")
        else:
            if progress:
                progress(f"{pf.name:14s} downloading {pf.source.url()}")
            try:
                download.download(pf.source.url(), target, pf.sha256, opener=opener, timeout=timeout,
                                  deadline=max(download.DEADLINE_S, 4 * timeout))
            except download.NETWORK_ERRORS as e:
                why = getattr(e, "reason", None) or e
                raise DlrmlabError(
                    f"cannot download {pf.source.url()} ({why}).\n{how_to_get_by_hand(dest)}"
                ) from None
        out[pf.name] = target
    return out


# --- list, and the command ---------------------------------------------------------------------------------


def _synthetic_rows() -> list[dict]:
    rows = []
    for level, shape in SYNTHETIC_REUSE.items():
        parts = [f"alpha {shape.alpha:g}"]
        if shape.support is not None:
            parts.append(f"support {shape.support:,} ranks")
        if shape.cutoff != float("inf"):
            parts.append(f"cutoff {shape.cutoff:,.0f} ranks")
        fitted = f"fitted to trace:{level}" if level in PAPER_TRACES else "our choice (trace not public)"
        rows.append({"name": SYNTHETIC_PREFIX + level, "kind": "synthetic", "file": None, "ids": None,
                     "distinct": None, "found": f"generated: Zipf, {', '.join(parts)}; {fitted}"})
    rows.append({"name": "random", "kind": "synthetic", "file": None, "ids": None, "distinct": None,
                 "found": "generated: uniform over the rows"})
    return rows


def listing() -> list[dict]:
    """The paper's datasets: its files (found locally or missing) and the synthetic generators."""
    rows = []
    for pf in PAPER_FILES:
        at = pf.find()
        rows.append({"name": pf.name, "kind": pf.kind, "file": pf.file, "ids": pf.ids, "distinct": pf.distinct,
                     "found": str(at) if at else "missing"})
    return rows + _synthetic_rows()


def _cmd_list(args) -> int:
    rows = listing()
    if args.json:
        print(json.dumps(rows))
        return 0
    print(f"{'name':18s} {'kind':9s} {'file':22s} {'ids':>9s} {'distinct':>9s}  where")
    for r in rows:
        ids = f"{r['ids']:,}" if r["ids"] else "-"
        distinct = f"{r['distinct']:,}" if r["distinct"] else "-"
        print(f"{r['name']:18s} {r['kind']:9s} {r['file'] or '-':22s} {ids:>9s} {distinct:>9s}  {r['found']}")
    hint = "; `dlrmlab data fetch` downloads the missing ones" if any(r["found"] == "missing" for r in rows) else ""
    print(f"(files looked up in {', '.join(str(d) for d in data_dirs())}{hint})")
    return 0


def _targets(args) -> list[tuple[PaperFile, Path]]:
    if args.target is None:
        found = [(pf, pf.find()) for pf in PAPER_FILES]
        for pf, at in found:
            if at is None:
                print(f"{pf.name}: missing ({pf.file})")
        if all(at is None for _, at in found):
            raise DlrmlabError(f"none of the paper's files was found. {PAPER_FILES[0].source.how_to_get()}")
        return [(pf, at) for pf, at in found if at is not None]
    path = Path(args.target).expanduser()
    if path.is_file():
        return [(paper_file(args.as_) if args.as_ else identify(path), path)]
    if args.as_ or "/" in args.target:
        raise DlrmlabError(f"file not found: {path}")
    return [(paper_file(args.target), locate(args.target))]


def _cmd_verify(args) -> int:
    results = [(pf, at, verify(at, pf)) for pf, at in _targets(args)]
    failed = sum(c.ok is False for _, _, checks in results for c in checks)
    if args.json:
        print(json.dumps([{"name": pf.name, "path": str(at), "checks": [c.__dict__ for c in checks]}
                          for pf, at, checks in results]))
    else:
        for pf, at, checks in results:
            _print_checks(f"{pf.name}  {at}", checks)
        print("all checks passed" if not failed else f"{failed} check(s) FAILED")
    return 1 if failed else 0


def _cmd_fetch(args) -> int:
    got = fetch(args.dest, timeout=args.timeout, progress=print)
    failed = 0
    for name, at in got.items():
        checks = verify(at, name)
        failed += sum(c.ok is False for c in checks)
        _print_checks(f"{name}  {at}", checks)
    dest = Path(args.dest).expanduser() if args.dest else default_dest()
    if dest not in data_dirs():
        print(f"note: set {DATA_DIR_ENV}={dest} so that trace:low and trace:medium find these files")
    print("all checks passed" if not failed else f"{failed} check(s) FAILED")
    return 1 if failed else 0


def command(args) -> int:
    """``dlrmlab data``: list, verify or fetch (``args.data_command``)."""
    return {"list": _cmd_list, "verify": _cmd_verify, "fetch": _cmd_fetch}[args.data_command](args)
