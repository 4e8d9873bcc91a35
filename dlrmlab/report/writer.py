"""``report.md`` and its files: what a ``dlrmlab reproduce`` run leaves in ``<out>/<gpu family>/``.

The directory holds, per claim, ``<claim>.csv`` (its tidy data), ``<claim>_<table>.csv`` (raw rows, the L2
model's predictions...), ``<claim>.png`` and ``<claim>.svg``; then ``report.md`` and ``reproduce.json``, the
manifest: every file a run wrote and each claim's summary and rendered section.

The manifest is what makes a directory "a previous report": a directory that holds only files a manifest
lists may be written over without ``--force``; anything else in it is other content, and the run is refused
before anything is measured unless ``--force`` is given (then the report is written beside that content,
replacing only files of the same names, never deleting them). A run with ``--only`` replaces the sections
it runs and keeps the others from the previous report when it was made with the same preset and mode (so
a long suite can be run in parts); otherwise the previous report's files are removed first. Every claim's
files, the report and the manifest are written as soon as the claim finishes, so an interrupted run leaves
a coherent report of what it finished.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import pandas as pd

from dlrmlab.bench.results import atomic_write
from dlrmlab.errors import DlrmlabError
from dlrmlab.report import style
from dlrmlab.report.claims import BEYOND, NOT_MEASURED, YES, Claim, ClaimResult
from dlrmlab.report.context import Context
from dlrmlab.report.reference import load_reference, section_lines

MANIFEST = "reproduce.json"
REPORT = "report.md"
FORMAT = 1
MAX_TABLE_ROWS = 40


# --- the output directory --------------------------------------------------------------------------------------


def load_manifest(target: Path) -> dict | None:
    """The manifest of a previous report in ``target``, or None (none, or not one of ours)."""
    try:
        m = json.loads((target / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return m if isinstance(m, dict) and m.get("dlrmlab_reproduce") == FORMAT else None


def owned_files(manifest: dict | None) -> set[str]:
    """Names a previous report wrote (its manifest's), which a new run may replace."""
    if manifest is None:
        return set()
    names = {MANIFEST, REPORT}
    for entry in manifest.get("claims", {}).values():
        names.update(entry.get("files", []))
    return names


def check_target(target: Path, force: bool) -> dict | None:
    """Refuse ``target`` when it holds anything but a previous report, unless ``force``; return the previous
    report's manifest (or None). Nothing is created or changed here."""
    if target.exists() and not target.is_dir():
        raise DlrmlabError(f"output directory {target} is a file")
    if not target.exists():
        return None
    manifest = load_manifest(target)
    foreign = sorted(p.name + ("/" if p.is_dir() else "") for p in target.iterdir()
                     if p.name not in owned_files(manifest))  # fmt: skip
    if foreign and not force:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise DlrmlabError(
            f"output directory {target} holds other content ({shown}); reproduce writes into an empty directory or "
            "over its own previous report. Choose another --out, or pass --force to write beside that content "
            "(files of the same names are replaced)"
        )
    return manifest


# --- markdown --------------------------------------------------------------------------------------------------

_PERCENT = ("share", "occupancy", "top_", "hit_rate", "difference")


def _cell(col: str, v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int | float) and not isinstance(v, bool):
        if col.endswith("_err"):
            return f"{v:.1e}"
        if col.startswith("speedup"):
            return f"{v:.2f}x"
        if any(k in col for k in _PERCENT):
            return f"{v:.1%}"
        if col.endswith("_ms"):
            return f"{v:.4g}"
        if float(v).is_integer():
            return f"{int(v):,}"
        return f"{v:.4g}"
    return str(v).replace("|", "\\|").replace("\n", " ")


def md_table(df: pd.DataFrame, columns: list[str] | None = None, max_rows: int = MAX_TABLE_ROWS) -> str:
    """A GitHub markdown table of ``df`` (units by column name: ``speedup*`` as 1.23x, shares as %)."""
    cols = [c for c in (columns or list(df.columns)) if c in df.columns]
    if not cols or df.empty:
        return ""
    head = "| " + " | ".join(c.replace("_", " ") for c in cols) + " |"
    rule = "|" + "|".join("---" for _ in cols) + "|"
    body = ["| " + " | ".join(_cell(c, r[c]) for c in cols) + " |" for _, r in df.head(max_rows).iterrows()]
    more = [f"\n({len(df) - max_rows} more rows in the CSV)"] if len(df) > max_rows else []
    return "\n".join([head, rule, *body, *more])


def _summary_cells(entry: dict) -> tuple[str, str]:
    if entry["status"] == "failed":
        return "experiment failed", "no (failed)"
    if entry["status"] == "skipped":
        return f"skipped: {entry['error']}", "not measured"
    return entry["ours"], entry["reproduced"]


def section(index: int, claim: Claim, res: ClaimResult, files: dict[str, list[str]], date: str, secs: float) -> str:
    """The report section of one claim: the paper's figure and ours, the figure, the explanation, key numbers."""
    lines = [f"## {index}. {claim.title}", ""]
    if res.status == "failed":
        lines += [f"**This experiment failed**: `{res.error}`. The other experiments ran on.", ""]
    elif res.status == "skipped":
        lines += [f"**Skipped**: {res.error}.", ""]
    else:
        lines += [f"**Paper (A100):** {claim.paper}. **Here:** {res.ours}. **Reproduced:** {res.reproduced}.", ""]
        if files["figure"]:
            lines += [f"![{claim.title}]({files['figure'][0]})", ""]
        lines += [res.text, ""]
        table = md_table(res.data, res.key_columns or None) if res.key_columns else ""
        lines += [table, ""] if table else []
    if res.incorrect:
        lines += ["**Incorrect outputs** (not timed):", *(f"- {x}" for x in res.incorrect), ""]
    if res.notes:
        lines += ["Notes:", *(f"- {x}" for x in res.notes), ""]
    links = [f"[`{f}`]({f})" for f in files["csv"]] + [f"[{Path(f).suffix[1:].upper()}]({f})" for f in files["figure"]]
    lines += [f"<sub>{' · '.join(links + [f'run {date}', f'{secs:.0f} s'])}</sub>", ""]
    return "\n".join(lines)


def _environment_table(ctx: Context, manifest: dict) -> list[str]:
    env = ctx.env
    v = env.get("versions", {})
    stage = ctx.stage.describe()
    rows = f"{stage['rows']:,}" if isinstance(stage["rows"], int) else "/".join(f"{r:,}" for r in stage["rows"])
    rows = [
        ("GPU", env.get("gpu")), ("driver (CUDA)", env.get("driver", "–")),
        ("mode", "CUDA GPU" if env.get("mode") == "gpu" else "Numba's CUDA simulator (no GPU)"),
        ("preset", f"{ctx.preset}: {stage['tables']} tables x {rows} rows x {stage['dim']} {stage['dtype']}, "
                   f"batch {stage['batch']}, {stage['pooling']} ids per bag"),
        ("datasets", ", ".join(style.dataset_label(d) for d in ctx.datasets)),
        ("datasets skipped", "; ".join(f"{style.dataset_label(k)}: {w}" for k, w in ctx.skipped_datasets.items())
         or "none"),
        ("timing", f"{ctx.n_repeats} timed round(s) per comparison, " + ("one interleaved round (simulator)"
         if ctx.simulator else "serving loop (blocks of 8 consecutive batches, the first untimed)")),
        ("Nsight Compute", env.get("ncu") or "not found"),
        ("versions", ", ".join(f"{k} {x or '–'}" for k, x in v.items())),
        ("commit", env.get("commit") or "–"), ("date", env.get("date")), ("command", f"`{env.get('command')}`"),
    ]  # fmt: skip
    out = ["## Environment", "", "| | |", "|---|---|", *(f"| {k} | {val} |" for k, val in rows), ""]
    older = sorted({e["date"] for e in manifest["claims"].values()} - {env.get("date")})
    if older:
        out += [f"Some sections come from earlier runs of the same preset ({', '.join(older)}): each says when.", ""]
    return out


def _link(path: Path, target: Path | None) -> str:
    """``path`` as a link from a report in ``target``: relative when both are in one tree, else absolute."""
    if target is None:
        return str(path)
    rel = os.path.relpath(path.resolve(), Path(target).resolve())
    return rel if rel.count("..") <= 3 else str(path.resolve())


def render(ctx: Context, manifest: dict, claims: dict[str, Claim], target: Path | None = None) -> str:
    """The whole report from the manifest's entries, in the registry's order. Without a GPU, each claim also
    shows the committed reference GPU report's result, labelled as measured elsewhere (``target``: where this
    report is written, for the link to that report)."""
    entries = [(c, manifest["claims"][n]) for n, c in claims.items() if n in manifest["claims"]]
    gpu = "Numba's CUDA simulator" if ctx.simulator else str(ctx.env.get("gpu", "")).split(" (")[0]
    lines = [f"# The paper on {gpu}: Jain et al., MICRO 2024, reproduced by dlrmlab", ""]
    ref = load_reference() if ctx.simulator else None
    if ctx.simulator:
        lines += ["> **No timings were taken.** There is no CUDA GPU here: the kernels ran in Numba's CUDA simulator "
                  "on the `tiny` preset, which checks every result against the NumPy reference but measures no speed. "
                  f"Cells derived from timings say \"{NOT_MEASURED}\". The dataset hotness (at the paper's scale), the "
                  "occupancy calculator and the L2 model are CPU analyses and hold here too. "
                  + (f"Beside each claim is what a real GPU gave, **measured elsewhere** ({ref.label}), from the "
                     "report committed with dlrmlab. " if ref else "")
                  + "Run `dlrmlab reproduce` on a CUDA GPU for measurements of your own.", ""]  # fmt: skip
    lines += _environment_table(ctx, manifest)
    head = "| claim | paper (A100) | ours | reproduced? |"
    if ref:
        head += f" measured elsewhere: {ref.gpu}, {ref.date[:10]} (not here) |"
    lines += ["## Summary", "", head, "|---" * (head.count("|") - 1) + "|"]
    for c, e in entries:
        ours, rep = _summary_cells(e)
        extra = f" {_cell('', ref.cell(c.name))} |" if ref else ""
        lines.append(f"| {c.title} | {c.paper} | {_cell('', ours)} | {rep} |{extra}")
    lines.append("")
    if ctx.simulator:
        rel = _link(ref.path / REPORT, target) if ref else "results/h100/report.md"
        for c, e in entries:
            head_line, _, rest = e["section"].partition("\n\n")
            lines += [head_line, "", *section_lines(ref, c.name, rel), rest]
    else:
        lines += [e["section"] for _, e in entries]
    lines += ["## What did not reproduce, and why", ""]
    misses, unmeasured = [], []
    for c, e in entries:
        if e["status"] == "failed":
            misses.append(f"- **{c.title}**: the experiment failed (`{e['error']}`).")
        elif e["status"] == "skipped":
            misses.append(f"- **{c.title}**: not measured: {e['error']}.")
        elif e["reproduced"] == NOT_MEASURED:
            unmeasured.append(c.title)
        elif e["reproduced"] not in (YES, BEYOND):
            misses.append(f"- **{c.title}** ({e['reproduced']}): {e['why'] or 'see its section'}.")
    if unmeasured:
        misses.append(f"- Not measured, because the simulator takes no timings: {'; '.join(unmeasured)}. "
                      "`dlrmlab reproduce --preset paper` on a CUDA GPU measures them.")  # fmt: skip
    lines += misses or ["Every claim checked here reproduced."]
    return "\n".join(lines) + "\n"


# --- the writer ------------------------------------------------------------------------------------------------


class ReportWriter:
    """Writes each claim's files as it finishes, then the report and the manifest (see the module docstring)."""

    def __init__(self, target: Path, ctx: Context, previous: dict | None, running: list[str],
                 claims: dict[str, Claim]) -> None:  # fmt: skip
        self.target, self.ctx, self.claims = target, ctx, claims
        keep = previous is not None and previous.get("preset") == ctx.preset and previous.get("mode") == ctx.env["mode"]
        old = (previous or {}).get("claims", {})
        for name, entry in old.items():
            if name in running or not keep:
                self._remove(entry.get("files", []))
        self.manifest = {"dlrmlab_reproduce": FORMAT, "preset": ctx.preset, "mode": ctx.env["mode"],
                         "family": ctx.env["family"], "environment": ctx.env,
                         "claims": {n: e for n, e in old.items() if keep and n not in running and n in claims}}

    def _remove(self, names: list[str]) -> None:
        for n in names:
            p = self.target / n
            if p.is_file() and p.parent == self.target:
                p.unlink()

    def _files(self, name: str, res: ClaimResult) -> dict[str, list[str]]:
        csvs, figs = [], []
        if res.data is not None and not res.data.empty:
            atomic_write(self.target / f"{name}.csv", lambda p: res.data.to_csv(p, index=False))
            csvs.append(f"{name}.csv")
        for key, table in res.tables.items():
            if table is not None and not table.empty:
                atomic_write(self.target / f"{name}_{key}.csv", lambda p, t=table: t.to_csv(p, index=False))
                csvs.append(f"{name}_{key}.csv")
        if res.figure is not None:
            figs = [p.name for p in style.save(res.figure, self.target, name)]
        return {"csv": csvs, "figure": figs}

    def add(self, claim: Claim, res: ClaimResult, secs: float) -> ClaimResult:
        """Write one claim's files, its section, the report and the manifest; a claim whose files cannot be
        written is recorded as failed."""
        try:
            files = self._files(claim.name, res)
        except Exception as e:  # e.g. a figure that cannot be drawn: the section says so, the run goes on
            res.status, res.error = "failed", f"writing its files: {type(e).__name__}: {e}"
            files = {"csv": [], "figure": []}
        index = list(self.claims).index(claim.name) + 1
        date = self.ctx.env.get("date", "")
        self.manifest["claims"][claim.name] = {
            "name": claim.name, "title": claim.title, "paper": claim.paper, "ours": res.ours,
            "reproduced": res.reproduced, "why": res.why, "status": res.status, "error": res.error,
            "incorrect": res.incorrect, "notes": res.notes, "files": files["csv"] + files["figure"], "date": date,
            "seconds": round(secs, 1), "section": section(index, claim, res, files, date, secs),
        }  # fmt: skip
        self.write()
        return res

    def write(self) -> Path:
        text = render(self.ctx, self.manifest, self.claims, self.target)
        atomic_write(self.target / REPORT, lambda p: p.write_text(text))
        atomic_write(self.target / MANIFEST, lambda p: p.write_text(json.dumps(self.manifest, indent=1, default=str)))
        return self.target / REPORT
