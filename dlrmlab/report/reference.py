"""The reference GPU report: what ``dlrmlab reproduce --preset paper`` measured on a real GPU, committed with
the project (``results/<gpu family>/reproduce.json``), shown beside a report made without a GPU.

A simulator report cannot time anything; the reference says what a GPU gave for each claim, labelled with
the card, the date and the commit it was measured at, and always as *measured elsewhere*, never as a result
of this run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import dlrmlab

#: Where a checkout keeps the committed results (the package's parent directory).
RESULTS_ROOT = Path(dlrmlab.__file__).resolve().parents[1] / "results"
#: The GPU families whose committed report is used, in order of preference.
REFERENCE_FAMILIES = ("h100",)


@dataclass(frozen=True)
class Reference:
    """A committed GPU report: its card, date, commit, path, and each claim's summary (``ours``, ``reproduced``)."""

    gpu: str
    date: str
    commit: str
    path: Path
    claims: dict[str, dict]

    @property
    def label(self) -> str:
        """``"NVIDIA H100 80GB HBM3, 2026-11-26, commit 67aec50"``."""
        return f"{self.gpu}, {self.date[:10]}, commit {self.commit}"

    def cell(self, name: str) -> str:
        """Claim ``name``'s reference result in a few words: what the GPU gave and whether it reproduced."""
        e = self.claims.get(name)
        if not e or e.get("status") != "ok":
            return "–"
        return f"{e.get('ours', '')} ({e.get('reproduced', '')})"


def load_reference(root: Path | None = None) -> Reference | None:
    """The first committed GPU report found under ``root`` (default :data:`RESULTS_ROOT`), or None (an
    installed package without its checkout has none)."""
    root = RESULTS_ROOT if root is None else Path(root)
    for fam in REFERENCE_FAMILIES:
        path = root / fam / "reproduce.json"
        try:
            m = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(m, dict) or m.get("mode") != "gpu":
            continue
        env = m.get("environment", {})
        gpu = str(env.get("gpu", fam)).split(" (")[0]
        return Reference(gpu, str(env.get("date", "")), str(env.get("commit") or "unknown"), path.parent,
                         dict(m.get("claims", {})))
    return None


def section_lines(ref: Reference | None, name: str, rel: str) -> list[str]:
    """The lines a simulator report's section of claim ``name`` shows about the reference (``rel``: the
    reference report's path as the reader finds it)."""
    if ref is None:
        return ["**Measured elsewhere:** no committed GPU report was found beside this installation "
                "(a checkout holds one under `results/h100/`).", ""]
    e = ref.claims.get(name)
    if not e or e.get("status") != "ok":
        return [f"**Measured elsewhere ({ref.label}):** the committed report has no result for this claim.", ""]
    return [f"**Measured elsewhere, not here ({ref.label}; [committed report]({rel})):** {e.get('ours')}. "
            f"Reproduced there: {e.get('reproduced')}.", ""]
