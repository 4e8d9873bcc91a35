"""Index streams: where the row ids of a workload come from.

A dataset is one stream of row ids, consumed sequentially across tables and batches, as the paper's
artifact consumes its trace files (all tables draw from the same stream, so hot rows are hot in every
table). Every stream is seeded and deterministic.

Datasets, by name:

* ``random`` (alias ``uniform``): uniform over the table's rows.
* ``zipf:ALPHA``: power law, P(rank r) ~ r**-ALPHA over ranks 1..rows, ranks mapped to rows by a seeded
  random permutation (so hot rows are scattered through the table, as in real traces).
* ``low``, ``medium``, ``high``: the paper's reuse levels, as power laws calibrated so that over one
  ``paper`` batch (12 x 2048 x 150 ids on 500K rows) the hottest 60,000 rows take 48.7% (low) and 87.7%
  (medium) of accesses, the figures of the artifact's public traces. The paper's ``high`` trace is not
  public; we set it to 97% (a third of medium's misses), clearly above medium.
* ``trace:PATH``: a trace file in the artifact's format (one row id per line), read sequentially and
  circularly; ids >= the table's rows are dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from dlrmlab.errors import DlrmlabError

#: Zipf exponents for the reuse levels, found by bisection on the top-60K coverage of one `paper` batch
#: (seed 0); tests/test_datasets.py checks the calibration on fresh seeds.
REUSE_ALPHA: dict[str, float] = {"low": 0.653, "medium": 1.028, "high": 1.199}
#: What each reuse level is calibrated to: the hottest 60K rows' share of one `paper` batch.
REUSE_TARGET_TOP60K: dict[str, float] = {"low": 0.487, "medium": 0.877, "high": 0.970}

SYNTHETIC = ("random", "uniform", "low", "medium", "high")


def dataset_names() -> list[str]:
    """Valid dataset names (patterns in angle brackets)."""
    return [*SYNTHETIC, "zipf:<ALPHA>", "trace:<PATH>"]


@lru_cache(maxsize=16)
def _zipf_cdf(rows: int, alpha: float) -> np.ndarray:
    p = np.arange(1, rows + 1, dtype=np.float64) ** -alpha
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
    """Base: a seeded stream of row ids. ``take(n, rows)`` returns the next ``n`` ids in [0, rows)."""

    name: str
    seed: int = 0

    def take(self, n: int, rows: int) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def reset(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


@dataclass
class UniformStream(IndexStream):
    _rng: np.random.Generator = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._rng = np.random.default_rng(self.seed)

    def take(self, n: int, rows: int) -> np.ndarray:
        _check_rows(rows)
        return self._rng.integers(0, rows, size=int(n), dtype=np.int64)


@dataclass
class ZipfStream(IndexStream):
    alpha: float = 1.0
    _rng: np.random.Generator = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not np.isfinite(self.alpha) or self.alpha < 0:
            raise DlrmlabError(f"zipf alpha must be a finite number >= 0, got {self.alpha}")
        self.reset()

    def reset(self) -> None:
        self._rng = np.random.default_rng(self.seed)

    def take(self, n: int, rows: int) -> np.ndarray:
        _check_rows(rows)
        cdf = _zipf_cdf(int(rows), float(self.alpha))
        ranks = np.searchsorted(cdf, self._rng.random(int(n)), side="right")
        np.minimum(ranks, rows - 1, out=ranks)  # guard the u == 1.0 - eps rounding edge
        return _rank_to_row(int(rows), self.seed)[ranks].astype(np.int64, copy=False)


@dataclass
class TraceStream(IndexStream):
    """A trace file read sequentially and circularly; ids >= rows are skipped (the artifact's rule)."""

    ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), repr=False)
    _pos: int = field(default=0, init=False)
    _valid: dict = field(default_factory=dict, init=False, repr=False)

    def reset(self) -> None:
        self._pos = 0

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
        start = int(np.searchsorted(valid, self._pos % self.ids.size))
        pick = valid[(start + np.arange(n)) % valid.size]
        # Raw position after the last id taken; full wraps are implied by the modulo above.
        self._pos = int(pick[-1]) + 1
        return self.ids[pick]


_CHUNK = 1 << 25  # bytes parsed at a time: traces of any length stream through bounded memory


def _parse_chunk(buf: np.ndarray, first_line: int, path: Path) -> np.ndarray:
    """Vectorised parse of whole lines of decimal ids (no Python list per line)."""

    def fail(pos: int, why: str) -> DlrmlabError:
        no = first_line + int(np.count_nonzero(buf[:pos] == 10))
        lo = int(pos - np.flatnonzero(buf[:pos][::-1] == 10)[0]) if (buf[:pos] == 10).any() else 0
        hi = np.flatnonzero(buf[pos:] == 10)
        text = bytes(buf[lo : pos + (int(hi[0]) if hi.size else buf.size - pos)]).decode(errors="replace")
        return DlrmlabError(f"{path}:{no}: {why}: {text.strip()[:40]!r}")

    digit = (buf >= 48) & (buf <= 57)
    minus = buf == 45
    blank = (buf == 10) | (buf == 13) | (buf == 32) | (buf == 9)
    bad = ~(digit | minus | blank)
    if bad.any():
        raise fail(int(np.argmax(bad)), "not an integer row id")
    if minus.any():
        raise fail(int(np.argmax(minus)), "negative row id")
    start = digit & ~np.concatenate(([False], digit[:-1]))
    starts = np.flatnonzero(start)
    if starts.size == 0:
        return np.zeros(0, np.int64)
    # One id per line: two digit runs with no newline between them are malformed.
    newlines_before = np.cumsum(buf == 10)[starts]
    same = np.flatnonzero(np.diff(newlines_before) == 0)
    if same.size:
        raise fail(int(starts[same[0] + 1]), "more than one id on a line")
    group = np.cumsum(start)[digit] - 1
    first = np.searchsorted(group, np.arange(starts.size))
    ndig = np.diff(np.append(first, group.size))
    if ndig.max() > 18:
        raise fail(int(starts[int(np.argmax(ndig > 18))]), "row id too large")
    exp = ndig[group] - 1 - (np.arange(group.size) - first[group])
    vals = (buf[digit].astype(np.int64) - 48) * np.power(10, exp, dtype=np.int64)
    return np.add.reduceat(vals, first)


def read_trace(path: str | Path) -> np.ndarray:
    """Read a trace file (one non-negative integer row id per line) into an int64 array.

    Parsed in chunks with NumPy. Blank lines are ignored. A malformed or negative entry raises
    :class:`DlrmlabError` naming its line.
    """
    path = Path(path)
    if not path.exists():
        raise DlrmlabError(f"trace file not found: {path}")
    if not path.is_file():
        raise DlrmlabError(f"trace path is not a file: {path}")
    parts, carry, line = [], b"", 1
    with path.open("rb") as f:
        while True:
            block = f.read(_CHUNK)
            data = carry + block
            if not block:
                cut = len(data)
            else:
                cut = data.rfind(b"\n") + 1
            buf = np.frombuffer(data[:cut], np.uint8)
            parts.append(_parse_chunk(buf, line, path))
            line += int(np.count_nonzero(buf == 10))
            carry = data[cut:]
            if not block:
                break
    ids = np.concatenate(parts)
    if ids.size == 0:
        raise DlrmlabError(f"trace file {path} holds no ids")
    return ids


def make_stream(dataset: str, seed: int = 0) -> IndexStream:
    """Build the index stream for a dataset name (see module docstring)."""
    name = str(dataset).strip()
    if int(seed) < 0:
        raise DlrmlabError(f"seed must be a non-negative integer, got {seed}")
    if name in ("random", "uniform"):
        return UniformStream(name="random", seed=seed)
    if name in REUSE_ALPHA:
        return ZipfStream(name=name, seed=seed, alpha=REUSE_ALPHA[name])
    if name.startswith("zipf:"):
        try:
            alpha = float(name[5:])
        except ValueError:
            raise DlrmlabError(f"bad zipf alpha in {name!r}: expected e.g. zipf:1.05") from None
        return ZipfStream(name=name, seed=seed, alpha=alpha)
    if name.startswith("trace:"):
        path = name[6:]
        return TraceStream(name=name, seed=seed, ids=read_trace(path))
    raise DlrmlabError(f"unknown dataset {dataset!r}; valid: {', '.join(dataset_names())}")
