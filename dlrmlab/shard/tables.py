"""Procedural tables: every entry a hash of (seed, table, row, column), so a rank makes only its shards and
the reference needs only the rows a batch reads. That is how stages larger than any one GPU (12 x 40M rows
x 128 fp32 = 246 GB) are run and checked: nothing holds a whole table.

Integer hashing (splitmix64-style rounds, int64 arithmetic wrapping as torch defines it) gives the same
values on every device; entries are uniform in [-0.5, 0.5) x ``scale``.
"""

from __future__ import annotations

import torch

from dlrmlab.dlrm.kjt import KeyedJaggedTensor
from dlrmlab.shard.plan import Shard

_M1, _M2, _M3 = 0x9E3779B97F4A7C15 - 2**64, 0xBF58476D1CE4E5B9 - 2**64, 0x94D049BB133111EB - 2**64
#: Rows generated at a time (bounds the int64 temporaries: 1M rows x 128 columns x 8 B = 1 GB).
CHUNK_ROWS = 1 << 20


def _mix(h: torch.Tensor) -> torch.Tensor:
    h = (h ^ ((h >> 30) & 0x3FFFFFFFF)) * _M2
    h = (h ^ ((h >> 27) & 0x1FFFFFFFFF)) * _M3
    return h ^ ((h >> 31) & 0x1FFFFFFFF)


def entries(table: int, rows: torch.Tensor, cols: torch.Tensor, seed: int = 0, scale: float = 0.01) -> torch.Tensor:
    """Entries (len(rows), len(cols)), float32, of table ``table`` at int64 ``rows`` and ``cols``."""
    key = (int(seed) * 1_000_003 + int(table) + 1) * _M1 % 2**63
    h = _mix(rows.to(torch.int64)[:, None] * _M1 + key) + cols.to(torch.int64)[None, :] * _M2
    u = (_mix(h) >> 40) & 0xFFFFFF  # 24 random bits
    return ((u.to(torch.float32) / float(1 << 24)) - 0.5) * scale


def shard_weight(s: Shard, seed: int, device: torch.device) -> torch.Tensor:
    """The (rows, cols) block of a shard, made in chunks of rows on ``device``."""
    out = torch.empty((s.rows, s.dim), dtype=torch.float32, device=device)
    cols = torch.arange(s.col_start, s.col_end, device=device)
    for a in range(0, s.rows, CHUNK_ROWS):
        b = min(a + CHUNK_ROWS, s.rows)
        out[a:b] = entries(s.table, torch.arange(s.row_start + a, s.row_start + b, device=device), cols, seed)
    return out


def pooled(kjt: KeyedJaggedTensor, dim: int, seed: int, mode: str = "sum") -> list[torch.Tensor]:
    """The reference: each key's bags pooled from the entries of the rows they read (float64 sums)."""
    cols = torch.arange(dim, device=kjt.values.device)
    out = []
    for t, (ids, off, _) in enumerate(kjt.split()):
        b = off.numel() - 1
        lengths = off.diff()
        bag = torch.repeat_interleave(torch.arange(b, device=ids.device), lengths)
        acc = torch.zeros((b, dim), dtype=torch.float64, device=ids.device)
        for a in range(0, ids.numel(), CHUNK_ROWS):
            e = entries(t, ids[a : a + CHUNK_ROWS], cols, seed).to(torch.float64)
            acc.index_add_(0, bag[a : a + CHUNK_ROWS], e)
        if mode == "mean":
            acc /= lengths.clamp(min=1).to(torch.float64)[:, None]
        out.append(acc.to(torch.float32))
    return out
