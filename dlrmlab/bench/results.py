"""Tidy result tables on disk: ``<dir>/<name>.csv`` (the record) and ``<name>.parquet`` beside it.

Appending never loses earlier results: the new file is written to a temporary file in the same directory
and renamed over the old one atomically, and rows whose columns differ from the file's are refused before
anything is written. ``param_*`` columns are not stored: they are derived from the ``params`` JSON column
(whose keys differ between variants) and re-expanded by :func:`load_results`, so one file holds every
variant under one fixed set of columns.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from dlrmlab.bench.schema import UPGRADES
from dlrmlab.errors import DlrmlabError

DEFAULT_DIR = "results"
PARAM_PREFIX = "param_"
#: Where the CLI writes when no ``--out`` is given: this variable, else ``./dlrmlab-results`` (never the
#: package checkout's committed ``results/``; pass ``--out results`` to add to those).
RESULTS_DIR_ENV = "DLRMLAB_RESULTS_DIR"
#: Every append this process made, in order: (path, rows appended). The CLI reports them when interrupted.
APPENDED: list[tuple[Path, int]] = []


def upgrade(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with every upgrade of :data:`dlrmlab.bench.schema.UPGRADES` applied (unchanged when up to date).

    A file whose columns differ from new rows' is upgraded in place (atomically) when that makes them
    agree, then appended to; otherwise the rows are refused.
    """
    for f in UPGRADES:
        df = f(df)
    return df


def _upgraded_columns(columns: list[str]) -> list[str]:
    return list(upgrade(pd.DataFrame(columns=columns)).columns)


def upgrade_file(csv: str | os.PathLike) -> bool:
    """Rewrite a results CSV with the upgrades applied (atomically); whether it changed."""
    csv = Path(csv)
    old = pd.read_csv(csv, dtype=str, keep_default_na=False)  # as text: every other cell is kept byte for byte
    new = upgrade(old)
    if list(new.columns) == list(old.columns):
        return False
    atomic_write(csv, lambda tmp: new.to_csv(tmp, index=False))
    return True


def default_dir() -> Path:
    """The CLI's default results directory: ``$DLRMLAB_RESULTS_DIR``, else ``./dlrmlab-results``."""
    env = os.environ.get(RESULTS_DIR_ENV, "").strip()
    return Path(env).expanduser() if env else Path("dlrmlab-results")


def check_results_dir(path: str | os.PathLike) -> Path:
    """Create ``path`` if needed and prove it is writable; DlrmlabError otherwise.

    Called before any benchmark runs, so a bad ``--out`` fails in a second, not after an hour.
    """
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise DlrmlabError(f"results directory {p} cannot be created: a file is in the way") from None
    except OSError as e:
        raise DlrmlabError(f"results directory {p} cannot be created: {e.strerror or e}") from None
    if not p.is_dir():
        raise DlrmlabError(f"results directory {p} is not a directory")
    try:
        with tempfile.TemporaryFile(dir=p):
            pass
    except OSError as e:
        raise DlrmlabError(f"results directory {p} is not writable: {e.strerror or e}") from None
    return p


def _check_name(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name or ""):
        raise DlrmlabError(f"bad results name {name!r}: letters, digits, '_', '.', '-' only")
    return name


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """``write(tmp)`` then rename ``tmp`` over ``path``: readers see the old or the new file, never half."""
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        if path.exists():
            os.chmod(tmp, path.stat().st_mode & 0o7777)
        else:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _stored(df: pd.DataFrame) -> pd.DataFrame:
    return df.drop(columns=[c for c in df.columns if str(c).startswith(PARAM_PREFIX)])


def _mismatch(csv: Path, old_cols: list[str], new_cols: list[str]) -> DlrmlabError:
    only_old = sorted(set(old_cols) - set(new_cols))
    only_new = sorted(set(new_cols) - set(old_cols))
    return DlrmlabError(
        f"columns differ from {csv}: only in the file: {only_old or 'none'}; "
        f"only in the new rows: {only_new or 'none'}. Nothing was written; "
        f"use another results name or directory."
    )


def _file_columns(csv: Path) -> list[str] | None:
    """The header of an existing results CSV, or None when there is none yet."""
    if not csv.exists() or csv.stat().st_size == 0:
        return None
    try:
        return list(pd.read_csv(csv, nrows=0).columns)
    except Exception as e:
        raise DlrmlabError(f"{csv} exists but is not a readable CSV ({e}); not appending") from None


def check_columns(columns: list[str], name: str, results_dir: str | os.PathLike = DEFAULT_DIR) -> None:
    """Raise now if rows with ``columns`` could not be appended to ``<results_dir>/<name>.csv`` later."""
    csv = Path(results_dir) / f"{_check_name(name)}.csv"
    cols = [c for c in columns if not str(c).startswith(PARAM_PREFIX)]
    old = _file_columns(csv)
    if old is not None and set(old) != set(cols) and set(_upgraded_columns(old)) != set(cols):
        raise _mismatch(csv, old, cols)


def append_results(df: pd.DataFrame, name: str, results_dir: str | os.PathLike = DEFAULT_DIR) -> Path:
    """Append ``df``'s rows to ``<results_dir>/<name>.csv`` (created with a header if new); return its path.

    Also rewrites ``<name>.parquet`` from the whole CSV when pyarrow imports (best effort: the CSV is the
    record). Rows whose columns differ from the file's raise DlrmlabError and leave the file untouched.
    """
    if not isinstance(df, pd.DataFrame):
        raise DlrmlabError(f"append_results needs a DataFrame, got {type(df).__name__}")
    d = check_results_dir(results_dir)
    csv = d / f"{_check_name(name)}.csv"
    new = _stored(df)
    if new.columns.duplicated().any():
        raise DlrmlabError(f"duplicate columns: {sorted(set(new.columns[new.columns.duplicated()]))}")

    old_cols = _file_columns(csv)
    if old_cols is not None and set(old_cols) != set(new.columns):
        if set(_upgraded_columns(old_cols)) != set(new.columns):
            raise _mismatch(csv, old_cols, list(new.columns))
        upgrade_file(csv)  # an older file of the same table: add the columns it predates, then append
        old_cols = _file_columns(csv)
    if old_cols is not None:
        new = new[old_cols]

        def write(tmp: Path) -> None:
            with open(csv, "rb") as src, open(tmp, "wb") as dst:
                data = src.read()
                dst.write(data)
                if data and not data.endswith(b"\n"):
                    dst.write(b"\n")
            new.to_csv(tmp, mode="a", header=False, index=False)

    else:

        def write(tmp: Path) -> None:
            new.to_csv(tmp, index=False)

    atomic_write(csv, write)
    APPENDED.append((csv, len(new)))
    _write_parquet(csv)
    return csv


def _write_parquet(csv: Path) -> None:
    try:
        # pyarrow: optional, for the parquet copy only
        import pyarrow  # noqa: F401
    except Exception:
        return
    try:
        full = pd.read_csv(csv)
        atomic_write(csv.with_suffix(".parquet"), lambda tmp: full.to_parquet(tmp, index=False))
    except Exception as e:  # the CSV is the record; a parquet hiccup must not fail the run
        warnings.warn(f"could not write {csv.with_suffix('.parquet')}: {e}", stacklevel=3)


def expand_params(df: pd.DataFrame) -> pd.DataFrame:
    """Add a ``param_<key>`` column for each scalar key of the ``params`` JSON column."""
    if "params" not in df.columns or df.empty:
        return df
    parsed = []
    for v in df["params"]:
        try:
            d = json.loads(v) if isinstance(v, str) else {}
        except ValueError:
            d = {}
        parsed.append({k: x for k, x in d.items() if isinstance(x, str | int | float | bool) or x is None})
    flat = pd.DataFrame(parsed, index=df.index)
    flat.columns = [f"{PARAM_PREFIX}{c}" for c in flat.columns]
    flat = flat[[c for c in flat.columns if c not in df.columns]]
    return pd.concat([df, flat], axis=1) if len(flat.columns) else df


def load_results(
    path_or_dir: str | os.PathLike = DEFAULT_DIR, name: str | None = None, params: bool = True
) -> pd.DataFrame:
    """Read results in one call.

    A ``.csv`` or ``.parquet`` file is read as is; a directory gives ``<name>.csv`` when ``name`` is set,
    else every ``*.csv`` in it concatenated with a ``source`` column (the file's stem). ``params=True``
    expands the ``params`` JSON into ``param_*`` columns.
    """
    p = Path(path_or_dir)
    if p.is_dir():
        if name is not None:
            files = [p / f"{_check_name(name)}.csv"]
            if not files[0].is_file():
                raise DlrmlabError(f"no results named {name!r} in {p}")
            df = pd.read_csv(files[0])
        else:
            files = sorted(p.glob("*.csv"))
            if not files:
                raise DlrmlabError(f"no result CSVs in {p}")
            df = pd.concat(
                [pd.read_csv(f).assign(source=f.stem) for f in files], ignore_index=True, sort=False
            )
    elif p.is_file():
        if p.suffix == ".parquet":
            df = pd.read_parquet(p)
        elif p.suffix == ".csv":
            df = pd.read_csv(p)
        else:
            raise DlrmlabError(f"{p}: expected a .csv or .parquet file, or a results directory")
    else:
        raise DlrmlabError(f"no results at {p}")
    return expand_params(df) if params else df
