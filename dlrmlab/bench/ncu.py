"""Why a kernel is slow: warp stall reasons, occupancy and cache behaviour from Nsight Compute (``ncu``).

Timings say *how fast*; the paper's argument (low occupancy and long-scoreboard stalls on DRAM loads) is
about *why*. This module runs a target script under ``ncu --csv --page raw``, turns its one-row-per-kernel
CSV into tidy columns, and explains ncu's failure modes in words a user can act on.

Stall columns are in **cycles per issued instruction** (CPI): ``stall_<reason>_cpi`` for each reason ncu
reports, ``stall_total_cpi`` their sum (ncu's "Warp Cycles Per Issued Instruction") and
``stall_<reason>_share`` each reason's fraction of that sum. Every reason is kept, ``selected`` included:
it is the cycle a warp spends issuing (1 per instruction), so its share is the fraction of warp time that
was not a stall at all.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from dlrmlab import backend
from dlrmlab.errors import DlrmlabError
from dlrmlab.variants import get, knobs_for
from dlrmlab.workload import preset as make_preset

if TYPE_CHECKING:
    from dlrmlab.workload import EmbeddingStage

SECTIONS = ("WarpStateStats", "Occupancy", "LaunchStats", "SpeedOfLight", "MemoryWorkloadAnalysis", "SchedulerStats")

#: Metrics the sections above may not collect (or name differently between ncu versions) but the tidy
#: table needs. The first entry is a regex: every stall reason, in cycles per issued instruction.
METRICS = (
    r"regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio",
    "sm__warps_active.avg.pct_of_peak_sustained_active",
    "sm__maximum_warps_per_active_cycle_pct",
    "launch__registers_per_thread",
    "lts__t_sector_hit_rate.pct",
    "l1tex__t_sector_hit_rate.pct",
    "dram__throughput.avg.pct_of_peak_sustained_elapsed",
    "dram__bytes_read.sum",
    "gpu__time_duration.sum",
    "l1tex__t_sectors_pipe_lsu_mem_global_op_ld.sum",
    "l1tex__t_requests_pipe_lsu_mem_global_op_ld.sum",
    "smsp__inst_executed.sum",
    "smsp__cycles_active.avg",
)

#: Warps an SM can hold (Hopper, Ampere A100): the denominator of occupancy.
MAX_WARPS_PER_SM = 64

#: ``launch__occupancy_limit_<suffix>`` -> limiter name, in the order ties are reported.
_LIMITS = {"registers": "registers", "shared_mem": "shared_memory", "warps": "warps", "blocks": "blocks",
           "barriers": "barriers"}
_STALL = re.compile(r"^smsp__average_warps_issue_stalled_(\w+?)_per_issue_active\.ratio$")
#: Older metric set (the committed H200 fixture): total stall cycles per *warp*, not per instruction.
_STALL_PER_WARP = re.compile(r"^smsp__average_warp_latency_issue_stalled_(\w+)\.ratio$")


def build_command(
    target_argv: Sequence[str],
    kernel_regex: str,
    launch_skip: int = 2,
    launch_count: int = 1,
    metrics_extra: Iterable[str] = (),
) -> list[str]:
    """The ncu argv that profiles ``launch_count`` launches of kernels matching ``kernel_regex``.

    ``launch_skip`` passes over the first launches (first-touch effects); ``--clock-control none`` keeps
    the GPU's own boost clocks so the numbers match the timing harness rather than ncu's locked base clock.
    """
    if not kernel_regex:
        raise DlrmlabError("kernel_regex must be a non-empty regular expression")
    if int(launch_skip) < 0 or int(launch_count) < 1:
        raise DlrmlabError(f"need launch_skip >= 0 and launch_count >= 1, got {launch_skip} and {launch_count}")
    if not target_argv:
        raise DlrmlabError("target_argv is empty: nothing to profile")
    metrics = list(dict.fromkeys([*METRICS, *metrics_extra]))
    # --cache-control none: keep L2 as the previous launches left it (ncu flushes by default), so hit rates
    # are those of a serving loop and L2 pinning / windows show their effect.
    cmd = ["ncu", "--clock-control", "none", "--cache-control", "none", "--kernel-name", f"regex:{kernel_regex}"]
    cmd += ["--launch-skip", str(int(launch_skip)), "--launch-count", str(int(launch_count))]
    for s in SECTIONS:
        cmd += ["--section", s]
    cmd += ["--metrics", ",".join(metrics), "--csv", "--page", "raw"]
    return cmd + [str(a) for a in target_argv]


# --- parsing ---------------------------------------------------------------------------------------------


def _csv_rows(text: str) -> list[list[str]]:
    """ncu's CSV rows out of stdout that also holds ``==PROF==`` lines and the target's own prints."""
    return list(csv.reader(line for line in text.splitlines() if line.startswith('"')))


def _number(s: object) -> float:
    """``"78,848"`` -> 78848.0; anything not a number (``"no data"``, ``""``, ``"(32, 8, 1)"``) -> NaN."""
    if isinstance(s, (int, float)):
        return float(s)
    try:
        return float(str(s).replace(",", "").strip())
    except ValueError:
        return math.nan


def _dims(s: str) -> float:
    """``"(32, 8, 1)"`` -> 256: ncu writes block and grid shapes as tuples."""
    parts = re.findall(r"\d+", str(s).replace(",", " "))
    return float(math.prod(int(p) for p in parts)) if parts else math.nan


def kernel_base_name(name: str) -> str:
    """Short kernel name: ``embedding_bag_paper[v1,...](Array<...>)`` -> ``embedding_bag_paper``;
    ``void at::native::(anonymous namespace)::EmbeddingBag_updateOutputKernel_sum_mean<float, long>(...)``
    -> ``EmbeddingBag_updateOutputKernel_sum_mean`` (Numba's mangled suffix and C++ scopes dropped)."""
    s = name.replace("(anonymous namespace)::", "").strip()
    s = re.sub(r"^void\s+", "", s)
    s = re.split(r"[(\[<]", s, maxsplit=1)[0].strip()
    return s.rsplit("::", 1)[-1] or name


def parse_raw_csv(text: str) -> pd.DataFrame:
    """One tidy row per profiled kernel from ``ncu --csv --page raw`` output (see the module docstring).

    Row 1 of the CSV is the metric names, row 2 their units, then one row per kernel launch.
    """
    rows = _csv_rows(text)
    if len(rows) < 2:
        raise DlrmlabError("no CSV table in ncu's output (was it run with --csv --page raw?)")
    header, units = rows[0], dict(zip(rows[0], rows[1], strict=False))
    data = [r for r in rows[2:] if r != header]
    out = [_tidy(dict(zip(header, r, strict=False)), units) for r in data]
    return pd.DataFrame(out)


_TIME_NS = {"ns": 1, "nsecond": 1, "us": 1e3, "usecond": 1e3, "ms": 1e6, "msecond": 1e6, "s": 1e9, "second": 1e9}
_PREFIX = {"K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}


def _in_base_units(value: float, unit: str) -> float:
    """Undo ncu's unit scaling (``--print-units auto``): times to ns, ``Ksector``/``Minst``... to counts.

    The 2025.3 captures are already in base units (ns, sector); this keeps other settings correct.
    """
    unit = unit.strip()
    if unit in _TIME_NS:
        return value * _TIME_NS[unit]
    m = re.fullmatch(r"([KMGT])(sector|request|inst|warp|cycle|byte|thread|block)s?", unit)
    return value * _PREFIX[m.group(1)] if m else value


def _tidy(raw: dict[str, str], units: dict[str, str]) -> dict:
    num = {k: _in_base_units(_number(v), units.get(k, "")) for k, v in raw.items()}

    def get(name: str) -> float:
        return num.get(name, math.nan)

    block = get("launch__block_size")
    if math.isnan(block):
        block = _dims(raw.get("Block Size", ""))
    grid = get("launch__grid_size")
    if math.isnan(grid):
        grid = _dims(raw.get("Grid Size", ""))
    warps_per_block = math.ceil(block / 32) if block > 0 else math.nan

    limits = {name: get(f"launch__occupancy_limit_{key}") for key, name in _LIMITS.items()}
    limits = {k: v for k, v in limits.items() if not math.isnan(v)}
    theoretical = get("sm__maximum_warps_per_active_cycle_pct") / 100
    if math.isnan(theoretical) and limits and warps_per_block > 0:
        theoretical = min(min(limits.values()) * warps_per_block, MAX_WARPS_PER_SM) / MAX_WARPS_PER_SM
    limiter = ""
    if limits:
        low = min(limits.values())
        limiter = "+".join(k for k, v in limits.items() if v == low)

    sectors = get("l1tex__t_sectors_pipe_lsu_mem_global_op_ld.sum")
    requests = get("l1tex__t_requests_pipe_lsu_mem_global_op_ld.sum")
    name = raw.get("Kernel Name", "")
    row = {
        "launch_id": get("ID"),
        "kernel": kernel_base_name(name),
        "block": block,
        "grid": grid,
        "registers": get("launch__registers_per_thread"),
        "theoretical_occupancy": theoretical,
        "achieved_occupancy": get("sm__warps_active.avg.pct_of_peak_sustained_active") / 100,
        "occupancy_limiter": limiter,
        "l1_hit_rate": get("l1tex__t_sector_hit_rate.pct") / 100,
        "l2_hit_rate": get("lts__t_sector_hit_rate.pct") / 100,
        "dram_throughput_pct": get("dram__throughput.avg.pct_of_peak_sustained_elapsed"),
        "dram_read_bytes": get("dram__bytes_read.sum"),
        "sectors_per_request": sectors / requests if requests > 0 else math.nan,
        "gpu_time_us": get("gpu__time_duration.sum") / 1000,
    }
    row.update(_stalls(num, grid * warps_per_block))
    row["kernel_full"] = name
    return row


def _stalls(num: dict[str, float], warps_launched: float) -> dict[str, float]:
    """``stall_<R>_cpi`` / ``stall_<R>_share`` columns and ``stall_total_cpi``.

    Preferred: ``smsp__average_warps_issue_stalled_<R>_per_issue_active.ratio`` (already cycles per issued
    instruction). Fallback: ``smsp__average_warp_latency_issue_stalled_<R>.ratio``, which is stall cycles
    per *warp* over its lifetime (the fixture's long_scoreboard reads 40,126); dividing by instructions
    issued per warp makes it per instruction. That count is the ``selected`` reason's value (a warp spends
    exactly one ``selected`` cycle per issue), or ``smsp__inst_executed.sum`` / warps launched without it.
    """
    cpi: dict[str, float] = {}
    for k, v in num.items():
        m = _STALL.match(k)
        if m and not m.group(1).endswith("_not_issued"):
            cpi[m.group(1)] = v
    if not cpi:
        per_warp = {m.group(1): v for k, v in num.items() if (m := _STALL_PER_WARP.match(k))}
        if per_warp:
            inst_per_warp = per_warp.get("selected", math.nan)
            if not inst_per_warp > 0:
                inst_per_warp = num.get("smsp__inst_executed.sum", math.nan) / warps_launched
            cpi = {r: v / inst_per_warp for r, v in per_warp.items()}
    cpi = {r: (0.0 if math.isnan(v) else v) for r, v in sorted(cpi.items())}
    total = sum(cpi.values())
    out: dict[str, float] = {}
    for r, v in sorted(cpi.items(), key=lambda kv: -kv[1]):
        out[f"stall_{r}_cpi"] = v
        out[f"stall_{r}_share"] = v / total if total > 0 else math.nan
    out["stall_total_cpi"] = total if cpi else math.nan
    return out


# --- running ---------------------------------------------------------------------------------------------


def _tail(text: str, n: int = 25) -> str:
    return "\n".join(text.strip().splitlines()[-n:])


def available_kernels(output: str) -> list[str]:
    """The names ncu lists after ``Available Kernels:`` when the name filter matched nothing."""
    lines = output.splitlines()
    start = next((i for i, line in enumerate(lines) if "Available Kernels" in line), None)
    if start is None:
        return []
    names = []
    for line in lines[start + 1 :]:
        s = re.sub(r"^==\w+==\s*", "", line).strip()
        m = re.match(r"^\d+[.)]?\s+(.+)$", s)
        if m:
            names.append(m.group(1).strip())
        elif s:
            break
    return names


def profile(
    target_argv: Sequence[str],
    kernel_regex: str,
    launch_skip: int = 2,
    launch_count: int = 1,
    metrics_extra: Iterable[str] = (),
    timeout: float = 1800,
    env: dict[str, str] | None = None,
) -> pd.DataFrame:
    """Run ``target_argv`` under ncu (:func:`build_command`) and return :func:`parse_raw_csv`'s table.

    Each of ncu's failure modes becomes a :class:`~dlrmlab.errors.DlrmlabError` that says what to do.
    The environment is passed through (``env`` replaces it), so CUDA_VISIBLE_DEVICES etc. apply.
    """
    cmd = build_command(target_argv, kernel_regex, launch_skip, launch_count, metrics_extra)
    env = dict(os.environ if env is None else env)
    exe = shutil.which(cmd[0], path=env.get("PATH"))
    if exe is None:
        raise DlrmlabError(
            "ncu (Nsight Compute) is not on PATH: install Nsight Compute, or the CUDA toolkit that ships it "
            "(https://developer.nvidia.com/nsight-compute), and add its directory (e.g. /usr/local/cuda/bin) "
            "to PATH"
        )
    try:
        proc = subprocess.run([exe, *cmd[1:]], capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        raise DlrmlabError(f"ncu did not finish in {timeout:g} s; output so far:\n{_tail(out)}") from None
    both = f"{proc.stdout}\n{proc.stderr}"
    if "ERR_NVGPUCTRPERM" in both:
        raise DlrmlabError(
            "ncu may not read the GPU's performance counters (ERR_NVGPUCTRPERM): run it as root, or let "
            "every user profile by loading the NVIDIA driver with NVreg_RestrictProfilingToAdminUsers=0 "
            "(e.g. 'options nvidia NVreg_RestrictProfilingToAdminUsers=0' in /etc/modprobe.d, then reboot)"
        )
    app_failed = re.search(r"application returned an error code", both, re.IGNORECASE)
    if "No kernels were profiled" in both and not app_failed:
        names = available_kernels(both)
        listing = "\n".join(f"  {n}" for n in names) if names else "  (ncu listed none)"
        own = re.search(r"kernel_regex=(\S+)", proc.stdout)  # what ncu_target says its variant launches
        hint = f"\nthe target names its kernels regex:{own.group(1)}" if own and own.group(1) != "None" else ""
        raise DlrmlabError(
            f"no kernel matched --kernel-name regex:{kernel_regex} (after skipping {launch_skip} launches); "
            f"kernels the target launched:\n{listing}{hint}"
        )
    if app_failed or proc.returncode != 0:
        raise DlrmlabError(
            f"the profiled program failed (ncu exit code {proc.returncode}): {' '.join(map(str, target_argv))}\n"
            f"{_tail(both)}"
        )
    df = parse_raw_csv(proc.stdout)
    if df.empty:
        raise DlrmlabError(f"ncu profiled no kernel launch; its output ends:\n{_tail(both)}")
    return df


# --- variants: the CLI's entry point ---------------------------------------------------------------------


def default_kernel_regex(variant: str) -> str:
    """Kernel-name filter when the user gives none: the variant's embedding kernel (its table entry says
    which: torch's ``EmbeddingBag_*``, cuEmbed's, or ours), never a pin kernel launched beside it."""
    return get(variant).kernels


def target_argv(variant: str, dataset: str, preset: str = "paper", seed: int = 0, knobs: dict | None = None,
                table_dtype: str | None = None) -> list[str]:
    """The command that runs one variant (with ``knobs``) on one workload for ncu (see
    :mod:`dlrmlab.bench.ncu_target`)."""
    return [sys.executable, "-m", "dlrmlab.bench.ncu_target", "--variant", variant, "--dataset", dataset,
            "--preset", preset, "--seed", str(int(seed)), *(["--knobs", json.dumps(knobs)] if knobs else []),
            *(["--table-dtype", table_dtype] if table_dtype else [])]


def check_profilable(variant: str, preset: str, knobs: dict | None = None, table_dtype: str | None = None
                     ) -> EmbeddingStage:
    """The stage of ``preset``, or the reason ``variant`` (with ``knobs``) cannot be profiled here (before any
    GPU work, and before the CLI creates anything under ``--out``)."""
    stage = make_preset(preset, **({"dtype": table_dtype} if table_dtype else {}))
    if backend.SIMULATOR:
        raise DlrmlabError(f"profiling needs a CUDA GPU and Nsight Compute; this is {backend.describe_mode()}")
    knobs_for(variant, knobs or {})  # unknown names and knobs fail here, not inside ncu's child process
    return stage


def profile_variant(
    variant: str,
    dataset: str,
    preset: str = "paper",
    seed: int = 0,
    kernel_regex: str | None = None,
    launch_skip: int = 2,
    launch_count: int = 1,
    timeout: float = 1800,
    knobs: dict | None = None,
    table_dtype: str | None = None,
) -> pd.DataFrame:
    """Profile a variant of the table (with ``knobs``, as :func:`dlrmlab.variants.prepare` takes them) on a
    workload; rows carry variant, knobs (``params``, JSON) and workload columns."""
    stage = check_profilable(variant, preset, knobs, table_dtype)
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])  # so `python -m dlrmlab...` imports this checkout
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    regex = kernel_regex or default_kernel_regex(variant)
    df = profile(
        target_argv(variant, dataset, preset, seed, knobs, table_dtype), regex, launch_skip, launch_count,
        timeout=timeout, env=env,
    )
    info = {"variant": variant, "dataset": dataset, "params": json.dumps(knobs or {}, sort_keys=True),
            "seed": int(seed), **stage.describe(), "kernel_regex": regex}
    for i, (k, v) in enumerate(info.items()):
        df.insert(i, k, str(v) if isinstance(v, list) else v)
    return df


def latest(df: pd.DataFrame) -> pd.DataFrame:
    """One row per profiled (variant, dataset): the newest taken with the variant's own configuration
    (``params`` empty), i.e. "the" kernel of a table or notebook (a renamed kernel included); explicit
    configurations and older captures stay in the file for comparisons."""
    params = df["params"].fillna("{}") if "params" in df else pd.Series("{}", index=df.index)
    own = df[params.isin(["{}", ""])]
    return own.groupby(["variant", "dataset"], sort=False).tail(1)


def format_summary(df: pd.DataFrame, top: int = 5) -> str:
    """Human-readable stall and occupancy report, one paragraph per profiled launch."""

    def pct(x: float) -> str:
        return "n/a" if pd.isna(x) else f"{x:.1%}"

    paras = []
    for _, r in df.iterrows():
        shares = {c[len("stall_") : -len("_share")]: r[c] for c in df.columns if c.endswith("_share")}
        shares = sorted(((k, v) for k, v in shares.items() if pd.notna(v)), key=lambda kv: -kv[1])[:top]
        stalls = ", ".join(f"{k} {v:.1%}" for k, v in shares) or "n/a"
        spr = "n/a" if pd.isna(r.get("sectors_per_request")) else f"{r['sectors_per_request']:.2f}"
        paras.append(
            f"{r['kernel']}  grid {r['grid']:,.0f} x block {r['block']:,.0f}  {r['registers']:.0f} registers"
            f"  {r['gpu_time_us']:.1f} us\n"
            f"  occupancy   theoretical {pct(r['theoretical_occupancy'])} (limited by {r['occupancy_limiter'] or '?'})"
            f", achieved {pct(r['achieved_occupancy'])}\n"
            f"  memory      L1 hit {pct(r['l1_hit_rate'])}, L2 hit {pct(r['l2_hit_rate'])}, "
            f"DRAM {r['dram_throughput_pct']:.1f}% of peak, {spr} sectors per global load request\n"
            f"  stalls      {r['stall_total_cpi']:.2f} warp cycles per issued instruction: {stalls}"
        )
    return "\n\n".join(paras)
