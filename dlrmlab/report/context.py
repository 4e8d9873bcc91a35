"""What every experiment of a ``dlrmlab reproduce`` run shares: the workload, the datasets, the measurement
settings, and the expensive things worth doing once (the embedding tables on the device, one DLRM run for
two claims, Nsight Compute profiles for two claims).

Datasets are named as :mod:`dlrmlab.datasets` names them. The artifact's traces (``trace:low``,
``trace:medium``) are looked up where ``dlrmlab data fetch`` puts them and downloaded there on first use; a
trace that is neither there nor downloadable (no network) is skipped with that reason, not an error, since the
rest of the suite still runs (the hotness claim shows the synthetic set fitted to it instead). Everything else
that is wrong with the request (an unknown dataset, a trace path that does not exist) is refused before anything runs.
"""

from __future__ import annotations

import gc
import shutil
import subprocess
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from dlrmlab import backend, cudart, paper_data
from dlrmlab.bench import env as benv
from dlrmlab.bench import ncu, shapes
from dlrmlab.bench.case import BenchCase
from dlrmlab.bench.comparison import compare
from dlrmlab.bench.quantized import run_quantized
from dlrmlab.datasets import PAPER_TRACES, canonical_name, trace_path
from dlrmlab.device import family
from dlrmlab.errors import DlrmlabError
from dlrmlab.variants import why_not_here
from dlrmlab.workload import preset

#: The suite's datasets: the artifact's public traces, our synthetic high-reuse level, uniform random.
DEFAULT_DATASETS: tuple[str, ...] = ("trace:low", "trace:medium", "high", "random")
#: What the report shows in place of a trace that could not be had.
TRACE_STAND_IN = "the report shows the synthetic set fitted to it instead"
#: Timed rounds per comparison: on a GPU (the benchmark's default is 50; 30 keep the paper preset within
#: minutes and the spread within a few percent), and in the simulator (correctness, every code path).
GPU_REPEATS, SIM_REPEATS = 30, 1


class ClaimSkipped(Exception):
    """Raised by an experiment that cannot run here (no GPU, no ncu): the report says why; not a failure."""


def resolve_datasets(names: list[str] | None) -> tuple[list[str], dict[str, str]]:
    """The dataset labels to run (in order, de-duplicated) and those skipped with their reason.

    Unknown names, ``trace:high`` (not public) and trace paths that do not exist raise DlrmlabError.
    """
    usable: list[str] = []
    skipped: dict[str, str] = {}
    for name in names or DEFAULT_DATASETS:
        label = canonical_name(name)
        if label in usable or label in skipped:
            continue
        if label.startswith("trace:"):
            spec = label[6:]
            if spec in PAPER_TRACES:
                try:
                    PAPER_TRACES[spec].obtain()
                except DlrmlabError as e:
                    skipped[label] = f"{e}; {TRACE_STAND_IN}"
                    continue
            elif not trace_path(spec).is_file():
                raise DlrmlabError(f"{name}: trace file not found: {trace_path(spec)}")
        usable.append(label)
    if not usable:
        why = "; ".join(f"{k}: {v}" for k, v in skipped.items())
        raise DlrmlabError(f"no dataset can run here ({why})")
    return usable, skipped


def resolve_preset(preset: str | None) -> str:
    """``auto`` (or None) is ``paper`` on a GPU and ``tiny`` in the simulator; ``paper`` needs a GPU."""
    chosen = backend.default_preset() if preset in (None, "auto") else preset
    if chosen not in ("tiny", "paper"):
        raise DlrmlabError(f"unknown preset {preset!r}; valid: tiny, paper, auto")
    if chosen == "paper" and backend.SIMULATOR:
        raise DlrmlabError(
            "--preset paper needs a CUDA GPU (12 tables of 256 MB are far beyond Numba's CUDA simulator); "
            "without one, run --preset tiny (the default here)"
        )
    return chosen


def _git_commit() -> str | None:
    try:
        root = Path(__file__).resolve().parents[2]
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=5)  # fmt: skip
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def run_environment(command: str = "") -> dict:
    """Where a run happened, as the report and its manifest show it: the GPU (or the simulator), driver and
    package versions of :func:`dlrmlab.bench.env.environment` (the columns of every result row), with the
    GPU family, commit, date, command and Nsight Compute."""
    env = benv.environment()
    date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    out: dict[str, Any] = {"mode": env["mode_backend"], "family": family(), "command": command, "date": date,
                           "commit": _git_commit()}  # fmt: skip
    if backend.SIMULATOR:
        out["gpu"] = "none: Numba's CUDA simulator"
    else:
        sm = str(env["compute_capability"]).replace(".", "")
        out["gpu"] = f"{env['gpu_name']} (sm_{sm}, {env['sms']} SMs, L2 {env['l2_bytes'] / 2**20:.0f} MiB)"
        out["driver"] = env["cuda_driver_version"]
    out["versions"] = cudart.package_versions()
    out["ncu"] = shutil.which("ncu")
    return out


@dataclass
class Context:
    """Shared state of one run. A benchmark case lives while one comparison needs it (:meth:`release`); the
    embedding tables it reads are generated and uploaded once per run."""

    preset: str
    datasets: list[str]
    skipped_datasets: dict[str, str] = field(default_factory=dict)
    repeats: int | None = None
    progress: bool = False
    seed: int = 0
    env: dict = field(default_factory=dict)
    _anchor: Any = field(default=None, repr=False)
    _cases: dict = field(default_factory=dict, repr=False)
    _memo: dict = field(default_factory=dict, repr=False)

    @property
    def simulator(self) -> bool:
        return backend.SIMULATOR

    @property
    def stage(self) -> Any:
        return preset(self.preset)

    @property
    def n_repeats(self) -> int:
        """Timed rounds per comparison: ``--repeats`` or the mode's default."""
        return int(self.repeats) if self.repeats is not None else (SIM_REPEATS if self.simulator else GPU_REPEATS)

    @property
    def stamp(self) -> str:
        """The corner text of every figure: the GPU and the date."""
        gpu = "simulator (no GPU)" if self.simulator else str(self.env.get("gpu", "GPU")).split(" (")[0]
        return f"dlrmlab reproduce · {gpu} · {self.env.get('date', '')[:10]} · preset {self.preset}"

    def say(self, text: str) -> None:
        if self.progress:
            tqdm.write(text)

    def focus(self, n: int = 2) -> list[str]:
        """The datasets sweeps run on (1 in the simulator, else ``n``): the medium-reuse trace and random
        first, where the suite has them, then the rest in order."""
        pref = [d for d in ("trace:medium", "random", "synthetic-high", "trace:low") if d in self.datasets]
        rest = [d for d in self.datasets if d not in pref]
        return (pref + rest)[: 1 if self.simulator else n]

    # --- cases and comparisons ------------------------------------------------------------------------------

    def case(self, dataset: str) -> Any:
        """The benchmark case of ``dataset`` (tables generated and uploaded once per run)."""
        if dataset not in self._cases:
            if self._anchor is None:
                self._anchor = BenchCase.create(self.stage, "random", self.seed, 1)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # trace wraps and dropped ids: the hotness claim reports them
                self._cases[dataset] = BenchCase.create(self.stage, dataset, self.seed, 4, tables_from=self._anchor)
        return self._cases[dataset]

    def release(self) -> None:
        """Drop the cases of the claim that finished (and the buffers variants derived from them)."""
        self._cases.clear()
        gc.collect()

    def runnable(self, specs: list[tuple[str, str, dict]]) -> tuple[list[tuple[str, str, dict]], dict[str, str]]:
        """``(label, variant, params)`` specs that can run here, and the others with the reason."""
        ok, skipped = [], {}
        for spec in specs:
            why = why_not_here(spec[1])
            if why:
                skipped[spec[0]] = why
            else:
                ok.append(spec)
        return ok, skipped

    def compare(self, dataset: str, specs: list[tuple[str, str, dict]]) -> pd.DataFrame:
        """Harness rows of ``specs`` on ``dataset`` (checked, then timed interleaved), with a ``config`` column
        holding each spec's label. The simulator times one interleaved round and no per-kernel runs: enough
        to run every code path; nothing there is a speed."""
        kw: dict[str, Any] = {"repeats": self.n_repeats, "progress": self.progress}
        if self.simulator:
            kw.update(timing_mode="interleaved", kernel_repeats=0, warmup_s=0.0)
        res = compare(self.case(dataset), [(name, dict(params)) for _, name, params in specs], **kw)
        rows = res.rows.copy()
        rows.insert(0, "config", [label for label, _, _ in specs])
        return rows

    def shape_grid(self, datasets: list[str]) -> pd.DataFrame:
        """Harness rows of the shape grid's batch-2048 row (:mod:`dlrmlab.bench.shapes`): four widths, torch,
        cuEmbed's two layouts and ``fast_graph`` as a fresh install configures it."""
        return shapes.run_grid(datasets=datasets, stages=shapes.grid_stages(batches=((2048, 150),)),
                               repeats=self.n_repeats, progress=self.progress)

    def quantized(self) -> pd.DataFrame:
        """Each table format's ``fast_graph`` against fp32 on random ids at this run's stage, torch's and
        cuEmbed's fp16 beside them, one run (:func:`dlrmlab.bench.quantized.run_quantized`)."""
        return run_quantized(stage=self.stage, seed=self.seed, repeats=self.n_repeats)

    def hot_params(self, dataset: str) -> dict:
        """Pinning knobs of the artifact for ``dataset``: its own 60K hot-row list for the public traces
        (paper preset; the tiny tables are smaller than the list's row ids), else the case's hottest rows."""
        level = dataset[6:] if dataset.startswith("trace:") else None
        if self.preset != "paper" or level not in PAPER_TRACES:
            return {}

        try:
            return {"hot_file": str(paper_data.paper_file(f"hot60K:{level}").source.obtain())}
        except DlrmlabError:  # no copy and no network: the case's own hottest rows
            return {}

    # --- shared expensive measurements ----------------------------------------------------------------------

    def memo(self, key: str, make: Any) -> Any:
        """``make()`` once per run; an exception is remembered and raised again for the next claim."""
        if key not in self._memo:
            try:
                self._memo[key] = (True, make())
            except Exception as e:  # remembered: a second claim must not pay for the same failure
                self._memo[key] = (False, e)
        ok, value = self._memo[key]
        if not ok:
            raise value
        return value

    def dlrm_pipelines(self) -> list[str]:
        """DLRM embedding pipelines run: PyTorch's kernel and the paper's best the DLRM pipeline can run
        (OptMT+RPF; L2P is not wired into it) and, on a GPU, the fast path in a CUDA graph and eager PyTorch in
        one whole-model CUDA graph (``torch_graph``: on an H100 faster than any torch.compile setting measured,
        so the strongest all-PyTorch form the report compares with, at no compile time)."""
        return ["optmt_rpf"] if self.simulator else ["baseline", "optmt_rpf", "fast_graph", "torch_graph"]

    def dlrm(self) -> tuple[pd.DataFrame, dict[str, str]]:
        """One DLRM end-to-end run for every dataset (shared by ``embedding_share`` and ``end_to_end``)."""

        def make():
            from dlrmlab.dlrm.measure import run_dlrm  # torch: optional and slow to import

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return run_dlrm(self.dlrm_pipelines(), self.datasets, self.stage, seed=self.seed,
                                repeats=self.n_repeats, compile_peer=False, progress=self.say)  # fmt: skip

        return self.memo("dlrm", make)

    def profile_dataset(self) -> str:
        return "random" if "random" in self.datasets else self.datasets[0]

    def ncu(self, variant: str) -> pd.DataFrame:
        """Nsight Compute profile of ``variant`` on :meth:`profile_dataset` (shared by ``occupancy`` and
        ``stalls``); :class:`ClaimSkipped` without a GPU or without ncu."""
        if self.simulator:
            raise ClaimSkipped("needs a CUDA GPU and Nsight Compute (ncu); this is Numba's CUDA simulator")
        if shutil.which("ncu") is None:
            raise ClaimSkipped("needs Nsight Compute: `ncu` is not on PATH (install it, or the CUDA toolkit that "
                               "ships it, and add its bin directory to PATH)")  # fmt: skip

        def make():
            self.say(f"ncu: profiling {variant} on {self.profile_dataset()}")
            return ncu.profile_variant(variant, self.profile_dataset(), self.preset, self.seed, timeout=600)

        return self.memo(f"ncu:{variant}", make)
