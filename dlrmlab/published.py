"""The paper's published numbers (Jain et al., MICRO 2024, and its artifact; ``shared/PAPER.md``), in one
table that the report, ``dlrmlab dlrm``, the dataset registry and the notebooks read."""

from __future__ import annotations

#: The paper's headline speedups on an A100, by the claim that quotes them: OptMT alone, OptMT + RPF + L2P
#: on the embedding stage, and end to end.
PUBLISHED: dict[str, float] = {"optmt": 1.53, "configurations": 2.03, "end_to_end": 1.77}
#: The published share of lookups of the hottest 60K and 5K rows of each public trace, by reuse level
#: (rounded to 0.1%).
PUBLISHED_COVERAGE: dict[str, dict[int, float]] = {
    "low": {60_000: 0.487, 5_000: 0.114},
    "medium": {60_000: 0.877, 5_000: 0.249},
}


def up_to(claim: str) -> str:
    """How the paper's number for ``claim`` is quoted: ``"up to 1.77x"``."""
    return f"up to {PUBLISHED[claim]:g}x"
