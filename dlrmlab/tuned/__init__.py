"""Tuned kernel configurations are data: a table shipped per GPU family, and a user cache that overrides it.

Host code reads them (:func:`fast_entry`); no kernel module does. ``dlrmlab tune fast`` writes the user
cache (``$DLRMLAB_CACHE_DIR/tune.json``, default ``~/.cache/dlrmlab/tune.json``); a cache tuned on a new GPU
becomes shipped entries with :func:`shipped_entries` and :func:`add_shipped` (``python -m dlrmlab.tuned``).
An entry applies to a GPU family, row width, table dtype, pooling bucket (nearby pooling factors share a
tuning) and row layout: plain tables, or the split-hot layout behind an L2 window (``split_hot``), whose rows
mostly hit L2 and so want fewer rows in flight and more bags.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

SHIPPED = Path(__file__).with_name("defaults.json")


@dataclass(frozen=True)
class Tuned:
    """Knobs for one shape and where they come from: ``shipped``, ``user-cache`` or ``default`` (none)."""

    params: dict
    source: str


def pooling_bucket(pooling_mean: float) -> int:
    return 2 ** round(math.log2(max(float(pooling_mean), 1.0)))


def cache_path() -> Path:
    root = os.environ.get("DLRMLAB_CACHE_DIR") or Path.home() / ".cache" / "dlrmlab"
    return Path(root) / "tune.json"


def _key(family: str, dim: int, dtype: str, pooling_mean: float, split_hot: bool = False) -> str:
    key = f"fast|{family}|dim={int(dim)}|{dtype}|pool~{pooling_bucket(pooling_mean)}"
    return key + "|split-hot" if split_hot else key


@lru_cache(maxsize=1)
def shipped() -> dict[str, dict]:
    entries = json.loads(SHIPPED.read_text())["fast"]
    return {_key(e["family"], e["dim"], e["dtype"], e["pooling"], e.get("split_hot", False)): e for e in entries}


def load_user_cache() -> dict:
    p = cache_path()
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError):
        return {}  # no cache, or a broken one: it only costs a re-tune
    return data if isinstance(data, dict) else {}


def fast_entry(
    family: str, dim: int, dtype: str, pooling_mean: float, user_cache: dict | None = None, split_hot: bool = False,
) -> Tuned:
    """The fast kernel's tuned knobs for this shape and layout: the user's cache first, then the shipped table."""
    key = _key(family, dim, dtype, pooling_mean, split_hot)
    cache = load_user_cache() if user_cache is None else user_cache
    if key in cache:
        return Tuned(dict(cache[key]["params"]), "user-cache")
    if key in shipped():
        return Tuned(dict(shipped()[key]["params"]), "shipped")
    return Tuned({}, "default")


def store_fast(family: str, dim: int, dtype: str, pooling_mean: float, entry: dict, split_hot: bool = False) -> Path:
    """Write a tuning result to the user cache (atomically)."""
    return _store(_key(family, dim, dtype, pooling_mean, split_hot), entry)


def compile_peer_entry(family: str, user_cache: dict | None = None) -> Tuned | None:
    """The torch.compile setting measured fastest on this GPU family (``{"setting": NAME, "measured": ...}``):
    the user's cache first (``python -m dlrmlab.dlrm.compile_peer`` writes it), then the shipped table."""
    cache = load_user_cache() if user_cache is None else user_cache
    if f"compile_peer|{family}" in cache:
        return Tuned(dict(cache[f"compile_peer|{family}"]), "user-cache")
    entry = json.loads(SHIPPED.read_text()).get("compile_peer", {}).get(family)
    return Tuned(dict(entry), "shipped") if entry else None


def store_compile_peer(family: str, entry: dict) -> Path:
    """Record the fastest torch.compile setting measured here in the user cache (atomically)."""
    return _store(f"compile_peer|{family}", entry)


def _store(key: str, entry: dict) -> Path:
    p = cache_path()
    p.parent.mkdir(parents=True, exist_ok=True)
    data = load_user_cache()
    data[key] = entry
    tmp = p.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    tmp.replace(p)
    return p


def describe(family: str, user_cache: dict | None = None) -> str:
    """Which knobs the fused kernel gets on this GPU family (for ``dlrmlab info``)."""
    cache = load_user_cache() if user_cache is None else user_cache
    mine = [k for k in cache if k.startswith(f"fast|{family}|")]
    ship = [k for k in shipped() if k.startswith(f"fast|{family}|")]
    parts = []
    if mine:
        parts.append(f"{len(mine)} entr{'y' if len(mine) == 1 else 'ies'} of your tuning cache ({cache_path()})")
    if ship:
        parts.append(f"{len(ship)} shipped entr{'y' if len(ship) == 1 else 'ies'} ({family})")
    rule = "the rule derived from the shape and this GPU's properties (dlrmlab.rules)"
    return (", then ".join(parts) + ", else " + rule) if parts else f"no tuned entry for {family}: {rule}"


def _parse_key(key: str) -> dict | None:
    """A cache key's fields (``fast|h200|dim=128|float32|pool~128|split-hot``), or None for another kind."""
    parts = key.split("|")
    if len(parts) < 5 or parts[0] != "fast" or not parts[2].startswith("dim=") or not parts[4].startswith("pool~"):
        return None
    try:
        dim, pooling = int(parts[2][4:]), int(parts[4][5:])
    except ValueError:
        return None
    return {"family": parts[1], "dim": dim, "dtype": parts[3], "pooling": pooling,
            "split_hot": parts[5:] == ["split-hot"]}


def shipped_entries(cache: dict, family: str, gpu: str) -> list[dict]:
    """The fast-kernel entries of ``family`` in a tuning cache, as ``defaults.json`` holds them: the shape and
    layout, the winning knobs, and a ``measured`` line naming the card (``gpu``), the date, the search and its
    result. Pure: the cache is passed in."""
    out = []
    for key, e in sorted(cache.items()):
        f = _parse_key(key)
        if f is None or f["family"] != family or not isinstance(e, dict) or "params" not in e:
            continue
        variant = e.get("variant", "fast_graph")
        when = f", {str(e['measured'])[:10]}" if e.get("measured") else ""
        measured = (f"{gpu}{when}: dlrmlab tune fast --variant {variant} --dataset "
                    f"{e.get('dataset', '?')}: geometric mean {float(e.get('median_ms', float('nan'))):.3f} ms per "
                    f"batch, best of {e.get('candidates', '?')}")
        out.append({**f, "params": dict(sorted(e["params"].items())), "measured": measured})
    return out


def add_shipped(entries: list[dict], path: Path = SHIPPED) -> Path:
    """Add ``entries`` to the shipped table at ``path`` (an entry of the same family, shape and layout is
    replaced), keeping its other sections; written atomically."""
    data = json.loads(Path(path).read_text())
    key = lambda e: _key(e["family"], e["dim"], e["dtype"], e["pooling"], e.get("split_hot", False))  # noqa: E731
    new = {key(e) for e in entries}
    data["fast"] = [e for e in data["fast"] if key(e) not in new] + list(entries)
    tmp = Path(path).with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)
    shipped.cache_clear()
    return Path(path)
