"""Sharding plans as data: which rank holds which piece of which table.

Names follow TorchRec's ``ShardingType``: ``table_wise`` (a whole table on one rank), ``row_wise`` (each
rank holds a contiguous block of rows, ``ceil(rows / n)`` per rank as TorchRec's row-wise sharding
does), ``column_wise`` (each rank a block of columns, ``numpy.array_split`` widths) and ``data_parallel``
(every rank a full replica). A plan mixes them per table. It is plain data: printable
(:meth:`ShardingPlan.describe`), saved with results as JSON (:meth:`ShardingPlan.to_json`), and a user
can write one by hand::

    {"world_size": 2, "tables": [{"table": 0, "sharding": "table_wise", "ranks": [1]},
                                 {"table": 1, "sharding": "row_wise", "ranks": [0, 1]}]}

or as a spec string: ``"0:tw@1,1:rw,2:cw@0+1,3:dp"`` (missing ranks: all ranks).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dlrmlab.errors import DlrmlabError

SHARDING_TYPES = ("table_wise", "row_wise", "column_wise", "data_parallel")
#: Short names (TorchRec's abbreviations in its planner output).
SHORT = {"tw": "table_wise", "rw": "row_wise", "cw": "column_wise", "dp": "data_parallel"}


@dataclass(frozen=True)
class Shard:
    """One piece of one table on one rank: rows ``[row_start, row_end)`` and columns ``[col_start, col_end)``."""

    table: int
    sharding: str
    rank: int
    row_start: int
    row_end: int
    col_start: int
    col_end: int

    @property
    def rows(self) -> int:
        return self.row_end - self.row_start

    @property
    def dim(self) -> int:
        return self.col_end - self.col_start


@dataclass(frozen=True)
class TablePlacement:
    """How one table is sharded: its type and the ranks holding its pieces (in piece order)."""

    table: int
    sharding: str
    ranks: tuple[int, ...]

    def __post_init__(self) -> None:
        sharding = SHORT.get(str(self.sharding), str(self.sharding))
        object.__setattr__(self, "sharding", sharding)
        object.__setattr__(self, "ranks", tuple(int(r) for r in self.ranks))
        if sharding not in SHARDING_TYPES:
            raise DlrmlabError(f"table {self.table}: unknown sharding {self.sharding!r}; valid: "
                               f"{', '.join(SHARDING_TYPES)} (or {', '.join(SHORT)})")  # fmt: skip
        if not self.ranks:
            raise DlrmlabError(f"table {self.table} ({sharding}) is placed on no rank")
        if len(set(self.ranks)) != len(self.ranks):
            raise DlrmlabError(f"table {self.table} ({sharding}) names a rank twice: {list(self.ranks)}")
        if sharding == "table_wise" and len(self.ranks) != 1:
            raise DlrmlabError(f"table {self.table} is table_wise but placed on {len(self.ranks)} ranks; give one")

    def to_dict(self) -> dict:
        return {"table": self.table, "sharding": self.sharding, "ranks": list(self.ranks)}


@dataclass(frozen=True)
class ShardingPlan:
    """A placement for every table of a stage over ``world_size`` ranks. Check it against a stage's shape
    with :meth:`validate` before use (the shards need the tables' rows and width)."""

    world_size: int
    tables: tuple[TablePlacement, ...]
    name: str = "custom"

    def __post_init__(self) -> None:
        object.__setattr__(self, "tables", tuple(self.tables))
        if int(self.world_size) < 1:
            raise DlrmlabError(f"world size must be at least 1, got {self.world_size}")
        seen = [p.table for p in self.tables]
        if sorted(seen) != list(range(len(seen))):
            raise DlrmlabError(f"a plan needs each table 0..{len(seen) - 1} exactly once, got tables {seen}")
        object.__setattr__(self, "tables", tuple(sorted(self.tables, key=lambda p: p.table)))

    @property
    def num_tables(self) -> int:
        return len(self.tables)

    def placement(self, t: int) -> TablePlacement:
        return self.tables[t]

    # --- checks against a stage ------------------------------------------------------------------------------

    def validate(self, embedding_sizes: Sequence[int], dim: int, element_bytes: int = 4,
                 memory_budget: float | None = None) -> ShardingPlan:
        """Raise DlrmlabError for a plan that cannot run on these tables: a wrong table count, a rank
        outside the world, row-wise sharding over fewer than all ranks, more column pieces than columns,
        or a rank whose shards exceed ``memory_budget`` bytes. Returns the plan."""
        if len(embedding_sizes) != self.num_tables:
            raise DlrmlabError(f"the plan places {self.num_tables} tables, the stage has {len(embedding_sizes)}")
        w = int(self.world_size)
        for p in self.tables:
            bad = [r for r in p.ranks if not 0 <= r < w]
            if bad:
                raise DlrmlabError(f"table {p.table} ({p.sharding}) is placed on rank {bad[0]}, but the world has "
                                   f"{w} rank(s) (0-{w - 1})")  # fmt: skip
            if p.sharding in ("row_wise", "data_parallel") and sorted(p.ranks) != list(range(w)):
                raise DlrmlabError(f"table {p.table} is {p.sharding} over ranks {list(p.ranks)}; it must span all "
                                   f"{w} ranks (its outputs are reduced over, or read on, every rank)")  # fmt: skip
            if p.sharding == "column_wise" and len(p.ranks) > dim:
                raise DlrmlabError(f"table {p.table}: {len(p.ranks)} column pieces for {dim} columns")
            if p.sharding == "row_wise" and len(p.ranks) > int(embedding_sizes[p.table]):
                raise DlrmlabError(f"table {p.table}: {len(p.ranks)} row blocks for {embedding_sizes[p.table]} rows")
        if memory_budget is not None:
            mem = self.memory_per_rank(embedding_sizes, dim, element_bytes)
            r = int(np.argmax(mem))
            if mem[r] > memory_budget:
                held = ", ".join(f"t{s.table} ({s.sharding}, {s.rows * s.dim * element_bytes / 1e9:.3g} GB)"
                                 for s in self.shards(embedding_sizes, dim) if s.rank == r)  # fmt: skip
                raise DlrmlabError(f"rank {r} would hold {mem[r] / 1e9:.3g} GB of shards, over its memory budget of "
                                   f"{memory_budget / 1e9:.3g} GB: {held}")  # fmt: skip
        return self

    # --- the shards ----------------------------------------------------------------------------------------

    def shards(self, embedding_sizes: Sequence[int], dim: int) -> list[Shard]:
        """Every piece of every table, table by table, pieces in rank-list order."""
        out = []
        for p in self.tables:
            rows = int(embedding_sizes[p.table])
            if p.sharding == "row_wise":
                block = -(-rows // len(p.ranks))
                for i, r in enumerate(p.ranks):
                    out.append(Shard(p.table, p.sharding, r, min(i * block, rows), min((i + 1) * block, rows), 0, dim))
            elif p.sharding == "column_wise":
                edges = np.cumsum([0, *[len(a) for a in np.array_split(np.arange(dim), len(p.ranks))]])
                out += [Shard(p.table, p.sharding, r, 0, rows, int(edges[i]), int(edges[i + 1]))
                        for i, r in enumerate(p.ranks)]  # fmt: skip
            else:
                out += [Shard(p.table, p.sharding, r, 0, rows, 0, dim) for r in p.ranks]
        return out

    def rank_shards(self, rank: int, embedding_sizes: Sequence[int], dim: int) -> list[Shard]:
        return [s for s in self.shards(embedding_sizes, dim) if s.rank == rank]

    def memory_per_rank(self, embedding_sizes: Sequence[int], dim: int, element_bytes: int = 4) -> np.ndarray:
        """Bytes of table shards each rank holds."""
        mem = np.zeros(self.world_size)
        for s in self.shards(embedding_sizes, dim):
            if 0 <= s.rank < self.world_size:
                mem[s.rank] += s.rows * s.dim * element_bytes
        return mem

    # --- as data -------------------------------------------------------------------------------------------

    def to_dict(self) -> dict:
        return {"name": self.name, "world_size": self.world_size, "tables": [p.to_dict() for p in self.tables]}

    def to_json(self) -> str:
        """One line of JSON (what result rows store in their ``plan`` column)."""
        return json.dumps(self.to_dict(), separators=(",", ":"))

    def spec(self) -> str:
        """The compact spec string, e.g. ``0:tw@1,1:rw@0+1``."""
        inv = {v: k for k, v in SHORT.items()}
        return ",".join(f"{p.table}:{inv[p.sharding]}@{'+'.join(map(str, p.ranks))}" for p in self.tables)

    @classmethod
    def from_dict(cls, d: dict) -> ShardingPlan:
        try:
            tables = tuple(TablePlacement(int(t["table"]), t["sharding"], tuple(t["ranks"])) for t in d["tables"])
            return cls(int(d["world_size"]), tables, str(d.get("name", "custom")))
        except (KeyError, TypeError, ValueError) as e:
            if isinstance(e, DlrmlabError):
                raise
            raise DlrmlabError(f"a plan needs world_size and tables [{{table, sharding, ranks}}, ...]: {e}") from None

    @classmethod
    def from_json(cls, text: str) -> ShardingPlan:
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as e:
            raise DlrmlabError(f"a plan must be JSON: {e}") from None

    @classmethod
    def load(cls, path: str | Path) -> ShardingPlan:
        p = Path(path).expanduser()
        if not p.is_file():
            raise DlrmlabError(f"no plan file at {p}")
        return cls.from_json(p.read_text())

    def save(self, path: str | Path) -> Path:
        p = Path(path).expanduser()
        p.write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        return p

    @classmethod
    def from_spec(cls, spec: str, world_size: int, name: str = "custom") -> ShardingPlan:
        """``"0:tw@1,1:rw,2:cw@0+1,3:dp"``: table:type[@rank+rank...]; no ranks means all ranks."""
        tables = []
        for part in [x.strip() for x in str(spec).split(",") if x.strip()]:
            try:
                t, rest = part.split(":", 1)
                kind, _, ranks = rest.partition("@")
                rs = tuple(int(r) for r in ranks.split("+")) if ranks else tuple(range(int(world_size)))
                tables.append(TablePlacement(int(t), kind.strip(), rs))
            except ValueError as e:
                if isinstance(e, DlrmlabError):
                    raise
                raise DlrmlabError(f"bad plan entry {part!r}: expected TABLE:TYPE[@RANK+RANK...], "
                                   "e.g. 0:tw@1") from None
        return cls(int(world_size), tuple(tables), name)


def uniform(kind: str, num_tables: int, world_size: int) -> ShardingPlan:
    """Every table the same way: ``table_wise`` deals tables round-robin over the ranks (table t on rank
    t mod n: the plan one writes by hand), the others spread every table over all ranks."""
    kind = SHORT.get(kind, kind)
    if kind not in SHARDING_TYPES:
        raise DlrmlabError(f"unknown sharding {kind!r}; valid: {', '.join(SHARDING_TYPES)}")
    every = tuple(range(int(world_size)))
    tables = [TablePlacement(t, kind, (t % int(world_size),) if kind == "table_wise" else every)
              for t in range(int(num_tables))]  # fmt: skip
    return ShardingPlan(int(world_size), tuple(tables), kind)
