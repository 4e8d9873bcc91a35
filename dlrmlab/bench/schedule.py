"""The order of timed stage runs in each timing mode (the ``timing_mode`` column of every row and run).

Variants of one comparison run in one process, their runs interleaved, so clock drift, thermals and other
tenants hit all of them alike:

* ``serving`` (the default, the headline number): each variant serves a BLOCK of consecutive batches
  (``serving_block``, default 8, rotating through the case's batches) and the first batch of each block is
  not timed; blocks of different variants are interleaved (round ``r`` runs one block of every variant,
  all on the same batches, the variants' order rotating by one each round). This is what a server that
  runs one kernel configuration sees: its own buffers (a packed or frequency-ranked copy of the tables,
  pinned rows, an L2 window) and the previous requests' hot rows are in L2 when a batch arrives. The
  untimed first batch brings that state back after the other variants' blocks.
* ``interleaved``: one timed run per variant per round (A B A B ...), consecutive runs on different
  batches. Each run starts from an L2 that holds ANOTHER variant's rows: neither a serving loop nor a cold
  cache, and unfair to variants that read their own copy of the tables. The mode dlrmlab used up to
  2026-11 (rows measured before then have this mode); kept to compare with them.
* ``cold_l2`` (``cold_l2=True``): interleaved, with L2 evicted before every timed run, outside the timed
  region: the worst case, where no batch finds anything of the last one in L2.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from dlrmlab.errors import DlrmlabError

#: How stage times are taken (see the module docstring); ``serving`` is the default and the headline.
TIMING_MODES: tuple[str, ...] = ("serving", "interleaved", "cold_l2")
#: Consecutive batches a variant serves per block in ``serving`` mode (the first one untimed).
DEFAULT_SERVING_BLOCK = 8


class Slot(NamedTuple):
    """One stage run of a timing plan: ``timed`` False for the warm-up batch that opens a serving block."""

    round: int
    variant: int
    batch: int
    timed: bool = True


def interleaved_schedule(n_variants: int, repeats: int, n_batches: int) -> list[Slot]:
    """The ``interleaved`` (and ``cold_l2``) order of timed runs.

    Round ``r`` runs every variant once, in order. Global run ``g`` uses batch ``g % n``, so consecutive
    runs never share a batch (no variant is served from the L2 its predecessor just filled). When V and
    n share a factor, that alone would show each variant only some batches; then the batch also moves
    on by one every ``lcm(V, n)`` runs, which keeps consecutive runs apart for ``n >= 3``.
    """
    v, n = int(n_variants), int(n_batches)
    if v <= 0 or n <= 0:
        return []
    block = math.lcm(v, n) if math.gcd(v, n) > 1 else 0
    out, g = [], 0
    for r in range(int(repeats)):
        for k in range(v):
            out.append(Slot(r, k, (g + (g // block if block else 0)) % n))
            g += 1
    return out


def serving_schedule(
    n_variants: int, repeats: int, n_batches: int, block: int = DEFAULT_SERVING_BLOCK
) -> list[Slot]:
    """The serving-loop order of stage runs: blocks of consecutive batches per variant, interleaved.

    Each variant gets ``repeats`` timed runs, in ``ceil(repeats / (block - 1))`` rounds; the timed runs
    are spread evenly over the rounds (so a round's block may be shorter than ``block``). Round ``r``
    runs one block of every variant, the order rotated by ``r``; every block of round ``r`` covers the
    same batches ``r, r + 1, ...`` (mod ``n_batches``), the first of them untimed. Starting each round
    one batch later shows every batch in every position of a block.
    """
    v, n, block, repeats = int(n_variants), int(n_batches), int(block), int(repeats)
    if block < 2:
        raise DlrmlabError(f"serving_block must be at least 2 (one untimed batch, then timed ones), got {block}")
    if v <= 0 or n <= 0 or repeats <= 0:
        return []
    rounds = -(-repeats // (block - 1))
    timed_per_round = [repeats // rounds + (1 if r < repeats % rounds else 0) for r in range(rounds)]
    out = []
    for r, m in enumerate(timed_per_round):
        for i in range(v):
            k = (r + i) % v
            out.extend(Slot(r, k, (r + j) % n, j > 0) for j in range(m + 1))
    return out


def timing_plan(timing_mode: str, n_variants: int, repeats: int, n_batches: int, serving_block: int) -> list[Slot]:
    """The stage runs of one comparison, in order, for ``timing_mode``."""
    if timing_mode == "serving":
        return serving_schedule(n_variants, repeats, n_batches, serving_block)
    return interleaved_schedule(n_variants, repeats, n_batches)


def resolve_timing_mode(
    timing_mode: str | None, cold_l2: bool = False, serving_block: int = DEFAULT_SERVING_BLOCK
) -> str:
    """The timing mode of a comparison: ``cold_l2=True`` is ``"cold_l2"``; the default is ``"serving"``.

    A bad ``serving_block`` for serving mode fails here too, before anything is prepared.
    """
    if timing_mode is None:
        timing_mode = "cold_l2" if cold_l2 else "serving"
    if timing_mode not in TIMING_MODES:
        raise DlrmlabError(f"timing_mode must be one of {', '.join(TIMING_MODES)}, got {timing_mode!r}")
    if cold_l2 and timing_mode != "cold_l2":
        raise DlrmlabError(f"cold_l2=True contradicts timing_mode={timing_mode!r}")
    if timing_mode == "serving":
        serving_schedule(1, 1, 1, serving_block)
    return timing_mode
