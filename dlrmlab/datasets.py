"""Index streams: where the row ids of a workload come from.

A dataset is one stream of row ids, consumed sequentially across tables and batches, as the paper's
artifact consumes its trace files (all tables draw from the same stream, so hot rows are hot in every
table). Every stream is deterministic (the synthetic ones are seeded).

Datasets, by name. Results record the *label* (``make_stream(x).name``, :func:`canonical_name`); the
inputs on the left of an arrow are accepted and give the label on its right:

* ``trace:low``, ``trace:medium``: the artifact's public low- and medium-reuse traces
  (``reuse_low_500K.txt``, ``reuse_medium_500K.txt``), looked up in :func:`data_dirs`.
* ``trace:PATH``: any trace file in the artifact's format (one row id per line; ``~`` is expanded; the
  label keeps PATH as given).
* ``low``, ``synthetic-low`` -> ``synthetic-low``; ``medium``, ``synthetic-medium`` -> ``synthetic-medium``:
  generators fitted to the low and medium traces' whole coverage curve (see :data:`SYNTHETIC_REUSE`).
* ``high``, ``synthetic-high`` -> ``synthetic-high``: Zipf 1.199, the hottest 60K rows take 97% (the high
  trace is not public; our choice, clearly above medium).
* ``random``, ``uniform`` -> ``random``: uniform over the table's rows.
* ``zipf:ALPHA``: P(rank r) ~ r**-ALPHA over ranks 1..rows.

Reuse-level claims use the real traces (``trace:low``, ``trace:medium``); the synthetic generators are for
shapes and skews the traces do not cover, and say so in their label.

``trace:low`` and ``trace:medium`` are looked up in :func:`data_dirs` (``$DLRMLAB_DATA_DIR``, then
``$DLRMLAB_CACHE_DIR/data``, default ``~/.cache/dlrmlab/data``); ``dlrmlab data fetch`` puts them there, and the
first command that wants one downloads it there (``$DLRMLAB_OFFLINE=1`` turns that off). A
file in the working directory that happens to be called ``low`` is ``trace:./low``.

Trace streams follow the artifact's rule: read sequentially and circularly, ids >= the table's rows
skipped. Both are counted (``TraceStream.dropped``, ``TraceStream.wraps``) and announced once per stream
with a :class:`TraceWarning`.

Synthetic streams draw ranks from a Zipf law with a cutoff, ``P(rank r) ~ r**-alpha * exp(-r / cutoff)``
for ``r <= support`` (ranks 1..rows), and map ranks to rows by a seeded permutation (so hot rows are
scattered through the table, as in real traces). See :data:`SYNTHETIC_REUSE` for how the reuse levels
were fitted.
"""

from __future__ import annotations

import math
import os
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from dlrmlab import download
from dlrmlab.errors import DlrmlabError

# --- the paper's files: where they are looked for ----------------------------------------------------------

DATA_DIR_ENV = "DLRMLAB_DATA_DIR"
#: The paper's public artifact, and the commit its files are taken from.
ARTIFACT_REPO = "github.com/rishucoding/reproduce_MICRO24_GPU_DLRM_inference"
ARTIFACT_COMMIT = "3c1e918740b41e3c9b5f2e63897fe359b6ed1b38"


def data_dirs() -> list[Path]:
    """Where the paper's files are looked for, in order: ``$DLRMLAB_DATA_DIR`` (if set), then
    ``$DLRMLAB_CACHE_DIR/data`` (default ``~/.cache/dlrmlab/data``, where ``dlrmlab data fetch`` writes)."""
    dirs = []
    if os.environ.get(DATA_DIR_ENV):
        dirs.append(Path(os.environ[DATA_DIR_ENV]).expanduser())
    cache = os.environ.get("DLRMLAB_CACHE_DIR") or Path.home() / ".cache" / "dlrmlab"
    dirs.append(Path(cache).expanduser() / "data")
    return dirs


@dataclass(frozen=True)
class ArtifactFile:
    """One of the artifact's data files: its local name, its path under the artifact's ``datasets/``, and what
    a good copy is (sha256, bytes)."""

    file: str
    repo_path: str
    sha256: str
    size: int

    def find(self) -> Path | None:
        """The first copy in :func:`data_dirs`, under its local name or the artifact's own layout."""
        for d in data_dirs():
            for rel in (self.file, self.repo_path):
                if (d / rel).is_file():
                    return d / rel
        return None

    def url(self) -> str:
        repo = ARTIFACT_REPO.removeprefix("github.com/")
        return f"https://raw.githubusercontent.com/{repo}/{ARTIFACT_COMMIT}/datasets/{self.repo_path}"

    def how_to_get(self) -> str:
        dirs = data_dirs()
        return (
            f"{self.file} was not found in {' or '.join(str(d) for d in dirs)}. Get it with `dlrmlab data fetch`, "
            f"or download datasets/{self.repo_path} from {ARTIFACT_REPO} (commit {ARTIFACT_COMMIT[:7]}) as "
            f"{dirs[0] / self.file} (or set ${DATA_DIR_ENV} to the directory that holds it)"
        )

    def _not_here(self, why: str) -> str:
        dirs = data_dirs()
        return (f"{self.file} is not in {' or '.join(str(d) for d in dirs)} ({why}); run `dlrmlab data fetch` where "
                f"the network allows, or download {self.url()} as {dirs[0] / self.file}")  # fmt: skip

    def obtain(self, opener: download.Opener | None = None, progress: Callable[[str], None] | None = None) -> Path:
        """The local copy (:meth:`find`), downloaded on first use into the first of :func:`data_dirs` (where
        ``dlrmlab data fetch`` writes) when it is nowhere: checked by sha256, bounded in time. Where the
        download cannot be made (no network, ``$DLRMLAB_OFFLINE``), a one-line DlrmlabError says how to get
        it. ``progress`` gets one line before and one after (default: stderr, beside any progress bar)."""
        found = self.find()
        if found is not None:
            return found
        dest = data_dirs()[0]
        if download.offline():
            raise DlrmlabError(self._not_here(f"not downloaded: ${download.OFFLINE_ENV} is set"))
        say = progress or _say
        host = self.url().split("/")[2]
        say(f"dlrmlab: {self.file} ({self.size / 1e6:.1f} MB) is not here yet: downloading it from {host} into "
            f"{dest} (once; ${download.OFFLINE_ENV}=1 turns this off)")  # fmt: skip
        started = time.monotonic()
        try:
            dest.mkdir(parents=True, exist_ok=True)
            download.download(self.url(), dest / self.file, self.sha256, opener=opener)
        except download.NETWORK_ERRORS as e:
            raise DlrmlabError(self._not_here(f"could not download it: {getattr(e, 'reason', None) or e}")) from None
        say(f"dlrmlab: {self.file} downloaded and checked (sha256) in {time.monotonic() - started:.1f} s")
        return dest / self.file


def _say(line: str) -> None:
    """A line of its own on stderr, also where a progress bar is being drawn."""
    tqdm.write(line, file=sys.stderr)


#: The artifact's public traces by reuse level. The high-reuse trace is not public (only its hot list is).
PAPER_TRACES: dict[str, ArtifactFile] = {
    "low": ArtifactFile("reuse_low_500K.txt", "reuse_low/table_500K.txt",
                        "108ed75d9472b4a6dc72a62cdc7c2baf51915ee41c5abfdcef8a7a253afb4c7b", 2_574_283),
    "medium": ArtifactFile("reuse_medium_500K.txt", "reuse_medium/table_500K.txt",
                           "628524ab361ec19617039adffab8618701a9a220fda90a1de66289a83e3a6e9e", 2_914_546),
}  # fmt: skip


def trace_path(spec: str) -> Path:
    """The file behind ``trace:SPEC``: a paper trace by level (``low``, ``medium``; downloaded on first use,
    see :meth:`ArtifactFile.obtain`) or a path."""
    spec = spec.strip()
    if spec in PAPER_TRACES:
        try:
            return PAPER_TRACES[spec].obtain()
        except DlrmlabError as e:
            raise DlrmlabError(f"trace:{spec}: {e}") from None
    if spec == "high":
        raise DlrmlabError(
            "trace:high: the artifact's high-reuse trace is not public (only its hot-row list is); "
            "use synthetic-high, or trace:PATH for a file of your own"
        )
    return Path(spec).expanduser()


# --- synthetic reuse levels --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ZipfShape:
    """``P(rank r) ~ r**-alpha * exp(-r / cutoff)`` for ranks ``1 <= r <= min(support, rows)``, else 0."""

    alpha: float
    cutoff: float = math.inf
    support: int | None = None

    def __post_init__(self) -> None:
        if not math.isfinite(self.alpha) or self.alpha < 0:
            raise DlrmlabError(f"zipf alpha must be a finite number >= 0, got {self.alpha}")
        if not self.cutoff > 0 or (self.support is not None and self.support < 1):
            raise DlrmlabError(f"zipf cutoff and support must be positive, got {self.cutoff}, {self.support}")


#: The synthetic reuse levels (labels ``synthetic-low`` etc.). ``low`` and ``medium`` were fitted to the
#: artifact's traces: least squares on the coverage of the hottest 1K, 5K, 20K, 60K and 150K rows over one
#: `paper` batch (12 x 2048 x 150 ids on 500K rows; the trace read circularly as the artifact does, the
#: synthetic stream drawn with seed 0), Nelder-Mead on the stream's own sampler. Of the 2-parameter
#: families tried (offset Zipf (r + q)**-alpha, Zipf + uniform mixture, Zipf with a hard support, Zipf with
#: an exponential cutoff), the hard support fits the low trace best (rms error 0.7 points against 1.3 for the
#: exponential cutoff) and the exponential cutoff the medium trace (0.9 against 1.8). Coverage, synthetic
#: (seed 0) vs trace, at 1K/5K/20K/60K/150K:
#:   low     4.9/12.0/25.9/47.8/79.5% vs 5.0/11.3/25.3/49.1/79.1%
#:   medium  8.5/24.8/56.0/86.8/99.2% vs 9.6/25.0/54.9/87.9/100%
#: (the previous pure-Zipf levels gave 10.8/19.6/32.6/48.7/68.7% and 59.4/70.6/80.1/87.7/94.5%).
#: ``high`` is unchanged: Zipf 1.199, the hottest 60K rows take 97% (our choice; the trace is not public).
SYNTHETIC_REUSE: dict[str, ZipfShape] = {
    "low": ZipfShape(alpha=0.455, support=248_700),
    "medium": ZipfShape(alpha=0.313, cutoff=41_200),
    "high": ZipfShape(alpha=1.199),
}

SYNTHETIC_PREFIX = "synthetic-"


def dataset_names() -> list[str]:
    """Dataset labels (patterns in angle brackets); inputs ``low``, ``medium``, ``high``, ``uniform`` are
    accepted too (see the module docstring)."""
    traces = [f"trace:{k}" for k in PAPER_TRACES]
    return [*traces, "trace:<PATH>", *(SYNTHETIC_PREFIX + k for k in SYNTHETIC_REUSE), "random", "zipf:<ALPHA>"]


def _zipf_alpha(name: str) -> float:
    try:
        alpha = float(name[5:])
    except ValueError:
        raise DlrmlabError(f"bad zipf alpha in {name!r}: expected e.g. zipf:1.05") from None
    ZipfShape(alpha)  # validates
    return alpha


def canonical_name(dataset: str) -> str:
    """The label results record for a dataset input (``low`` -> ``synthetic-low``); reads no file."""
    name = str(dataset).strip()
    if name in ("random", "uniform"):
        return "random"
    level = name.removeprefix(SYNTHETIC_PREFIX)
    if level in SYNTHETIC_REUSE:
        return SYNTHETIC_PREFIX + level
    if name.startswith("zipf:"):
        _zipf_alpha(name)
        return name
    if name.startswith("trace:"):
        if not name[6:].strip():
            raise DlrmlabError("trace: needs a level (trace:low, trace:medium) or a path (trace:PATH)")
        return "trace:" + name[6:].strip()
    raise DlrmlabError(
        f"unknown dataset {dataset!r}; valid: {', '.join(dataset_names())} "
        "(low, medium, high and uniform are accepted for synthetic-low/-medium/-high and random)"
    )


# --- streams -----------------------------------------------------------------------------------------------


@lru_cache(maxsize=16)
def _zipf_cdf(rows: int, shape: ZipfShape) -> np.ndarray:
    r = np.arange(1, rows + 1, dtype=np.float64)
    p = r**-shape.alpha
    if math.isfinite(shape.cutoff):
        p *= np.exp(-r / shape.cutoff)
    if shape.support is not None:
        p[shape.support :] = 0.0
    c = np.cumsum(p)
    c /= c[-1]
    return c


@lru_cache(maxsize=16)
def _rank_to_row(rows: int, seed: int) -> np.ndarray:
    # Depends only on (rows, seed): tables of equal size share their hot rows, like the artifact's trace.
    return np.random.default_rng([seed, rows, 0x5EED]).permutation(rows)


def _check_rows(rows: int) -> None:
    if int(rows) <= 0:
        raise DlrmlabError(f"rows must be positive, got {rows}")


@dataclass
class IndexStream:
    """Base: a stream of row ids. ``take(n, rows)`` returns the next ``n`` ids in [0, rows)."""

    name: str
    seed: int = 0
    #: Ids skipped because they were >= the table's rows, and passes over the end of a finite source,
    #: since the last reset (always 0 for generated streams; see :class:`TraceStream`).
    dropped = 0
    wraps = 0

    def take(self, n: int, rows: int) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def reset(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


@dataclass
class _GeneratedStream(IndexStream):
    """A stream drawn from a NumPy generator seeded with ``seed`` (reset: the same ids again)."""

    _rng: np.random.Generator = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._rng = np.random.default_rng(self.seed)


@dataclass
class UniformStream(_GeneratedStream):
    def take(self, n: int, rows: int) -> np.ndarray:
        _check_rows(rows)
        return self._rng.integers(0, rows, size=int(n), dtype=np.int64)


@dataclass
class ZipfStream(_GeneratedStream):
    shape: ZipfShape = ZipfShape(1.0)

    def take(self, n: int, rows: int) -> np.ndarray:
        _check_rows(rows)
        cdf = _zipf_cdf(int(rows), self.shape)
        ranks = np.searchsorted(cdf, self._rng.random(int(n)), side="right")
        np.minimum(ranks, rows - 1, out=ranks)  # guard the u == 1.0 - eps rounding edge
        return _rank_to_row(int(rows), self.seed)[ranks].astype(np.int64, copy=False)


class TraceWarning(UserWarning):
    """A trace stream dropped ids (>= the table's rows) or read past its end (repeated the trace)."""


@dataclass
class TraceStream(IndexStream):
    """A trace read sequentially and circularly; ids >= rows are skipped (the artifact's rules).

    ``dropped`` counts the ids skipped and ``wraps`` the passes over the end of the trace since the last
    reset; the first time each happens a :class:`TraceWarning` says so, with the counts.
    """

    ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), repr=False)
    path: str | None = None
    dropped: int = field(default=0, init=False)
    wraps: int = field(default=0, init=False)
    _pos: int = field(default=0, init=False)  # raw ids read (taken or dropped) since reset
    _valid: dict = field(default_factory=dict, init=False, repr=False)
    _warned: set = field(default_factory=set, init=False, repr=False)

    def reset(self) -> None:
        self._pos = self.dropped = self.wraps = 0

    def take(self, n: int, rows: int) -> np.ndarray:
        _check_rows(rows)
        n = int(n)
        if n == 0:
            return np.zeros(0, np.int64)
        valid = self._valid.get(rows)
        if valid is None:
            valid = self._valid[rows] = np.flatnonzero(self.ids < rows)
        if valid.size == 0:
            raise DlrmlabError(f"trace {self.name!r} has no id below rows={rows}")
        size = self.ids.size
        lap, offset = divmod(self._pos, size)
        start = int(np.searchsorted(valid, offset))
        pick = valid[(start + np.arange(n)) % valid.size]
        end = (lap + (start + n - 1) // valid.size) * size + int(pick[-1]) + 1  # raw position after the last
        self.dropped += end - self._pos - n
        self.wraps = (end - 1) // size
        self._pos = end
        self._announce(rows, size - valid.size)
        return self.ids[pick]

    def _announce(self, rows: int, above: int) -> None:
        size = self.ids.size
        if self.dropped and "dropped" not in self._warned:
            self._warned.add("dropped")
            warnings.warn(
                f"{self.name}: {above:,} of the trace's {size:,} ids are >= rows={rows:,} and are skipped "
                f"({self.dropped:,} so far). Its largest id is {int(self.ids.max()):,}: tables of "
                f"{int(self.ids.max()) + 1:,} rows keep every id (--rows, or rows= in preset()); the results' "
                "dropped_ids column counts the skipped ones",
                TraceWarning,
                stacklevel=3,
            )
        if self.wraps and "wraps" not in self._warned:
            self._warned.add("wraps")
            warnings.warn(
                f"{self.name}: more ids were drawn than the trace's {size:,}, so it is read again from the "
                f"start ({self.wraps:,} wrap(s) so far; see .wraps)",
                TraceWarning,
                stacklevel=3,
            )


# --- trace files -------------------------------------------------------------------------------------------

_TRACE_BYTES = b"0123456789 \t\r\n"
_INT64_MAX = np.iinfo(np.int64).max


def _bad_line(path: Path, data: bytes) -> DlrmlabError:
    """The error for the first malformed line (the slow second pass, run only once parsing has failed)."""
    binary = next((i for i, b in enumerate(data[:1 << 16]) if b < 9 or 13 < b < 32 or b > 126), None)
    if binary is not None:
        return DlrmlabError(f"{path} is not a text trace (byte {binary:,} is 0x{data[binary]:02x}, not text): "
                            "a trace holds one non-negative integer row id per line")
    for no, raw in enumerate(data.split(b"\n"), 1):
        s = raw.strip(b" \t\r")
        if not s:
            continue
        if s.isdigit():
            if int(s) <= _INT64_MAX:
                continue
            why = "row id too large"
        elif s[:1] == b"-" and s[1:].isdigit():
            why = "negative row id"
        elif len(s.split()) > 1:
            why = "more than one id on a line"
        else:
            why = "not an integer row id"
        text = s.decode(errors="replace")
        return DlrmlabError(f"{path}:{no}: {why}: {text[:40]!r}")
    return DlrmlabError(f"{path}: could not be parsed as one row id per line")  # pragma: no cover


def read_trace(path: str | Path) -> np.ndarray:
    """Read a trace file (one non-negative integer row id per line) into an int64 array.

    Parsed by NumPy's C reader (``numpy.loadtxt``), after a byte check that refuses anything but digits
    and whitespace (loadtxt would accept a sign). Blank and whitespace-only lines are ignored; spaces
    around an id and CRLF line ends are allowed. A malformed, negative or too large entry raises
    :class:`DlrmlabError` naming its line (found by a second pass, taken only when parsing fails).
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise DlrmlabError(f"trace file not found: {path}")
    if not path.is_file():
        raise DlrmlabError(f"trace path is not a file: {path}")
    data = path.read_bytes()
    if data.translate(None, _TRACE_BYTES) or data.count(b"\r") != data.count(b"\r\n"):
        raise _bad_line(path, data)
    if not data.strip():
        raise DlrmlabError(f"trace file {path} holds no ids")
    try:
        ids = np.loadtxt(path, dtype=np.int64, comments=None, ndmin=1)
    except (ValueError, OverflowError):
        raise _bad_line(path, data) from None
    if ids.ndim != 1:  # every line held the same number (> 1) of ids
        raise _bad_line(path, data)
    return ids


def make_stream(dataset: str, seed: int = 0) -> IndexStream:
    """Build the index stream for a dataset input; its ``name`` is the label (see module docstring)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise DlrmlabError(f"seed must be a non-negative integer, got {seed!r}")
    if not isinstance(dataset, str):
        raise DlrmlabError(f"dataset must be a name (e.g. 'random', 'trace:low'), got {dataset!r}")
    name = canonical_name(dataset)
    if name == "random":
        return UniformStream(name=name, seed=seed)
    if name.startswith(SYNTHETIC_PREFIX):
        return ZipfStream(name=name, seed=seed, shape=SYNTHETIC_REUSE[name.removeprefix(SYNTHETIC_PREFIX)])
    if name.startswith("zipf:"):
        return ZipfStream(name=name, seed=seed, shape=ZipfShape(_zipf_alpha(name)))
    path = trace_path(name[6:])
    return TraceStream(name=name, seed=seed, ids=read_trace(path), path=str(path))
