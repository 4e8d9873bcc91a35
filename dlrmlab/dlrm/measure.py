"""End-to-end DLRM timing: stage breakdown, pipelines side by side, batch-size sweep.

What is timed is one batch already resident on the GPU (the paper's setting: no host-to-device copy), from
"stream idle" to "click probabilities written", with the benchmark's timer
(:class:`~dlrmlab.bench.timing.StageTimer`: CUDA events on torch's current stream before and after the
call, the host issuing the launches in between, so launch overhead counts whenever the host is slower than
the GPU, as it does for a server), its warm-up, percentiles, environment columns and baseline. Eager
pipelines are also run with events between the stages (bottom MLP, embedding, interaction, top MLP) in
separate runs, so the breakdown never perturbs the end-to-end figure. Pipelines are interleaved round by
round (and their order rotated) so that clock and thermal drift hit them alike; a few distinct batches
rotate through the rounds.

Pipelines (names as ``--embedding`` takes them, see :func:`dlrmlab.dlrm.embedding.resolve`):
``torch`` (all-PyTorch eager, the baseline of every ratio), ``torch_compile``
(``torch.compile`` of the same model under the setting measured fastest on this GPU family, see
:mod:`dlrmlab.dlrm.compile_peer`), dlrmlab
embeddings eager (``rpf``, ``fast``, ...) and whole-batch graph-captured (``fast_graph``, ``NAME_graph``).

In simulator mode nothing is a speed: rows carry ``timing_valid=False``; graphs and torch.compile need a
GPU and are skipped (with the reason).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import torch

from dlrmlab import backend, quant, validate
from dlrmlab.backend import cuda
from dlrmlab.bench import env as benv
from dlrmlab.bench import runs, timing
from dlrmlab.bench.schema import BASELINE
from dlrmlab.datasets import canonical_name
from dlrmlab.device import family
from dlrmlab.dlrm.embedding import resolve
from dlrmlab.dlrm.graph import CapturedCall
from dlrmlab.dlrm.kjt import KeyedJaggedTensor
from dlrmlab.dlrm.model import DLRM, STAGES, make_dense
from dlrmlab.errors import DlrmlabError
from dlrmlab.placement import Placement
from dlrmlab.published import PUBLISHED
from dlrmlab.workload import MAX_BATCH, EmbeddingStage, Workload, preset

COMPILE_PEER = "torch_compile"
#: Eager PyTorch with the whole forward in one CUDA graph: on an H100 faster than every torch.compile setting
#: that ran (``results/h100/compile_peer.csv``), so a peer every comparison includes on a GPU.
TORCH_GRAPH = "torch_graph"
#: The all-PyTorch pipelines: the "strongest torch" of a run is the fastest of these measured in it.
TORCH_FORMS = (BASELINE, TORCH_GRAPH, COMPILE_PEER)
#: Batch sizes of ``--batch-sizes sweep``.
SWEEP_BATCH_SIZES = (256, 512, 1024, 2048, 4096, 8192, 16384)
#: fp32: max |out - torch's| on the click probabilities, and relative error of the pooled embeddings.
OUT_ATOL, EMB_RTOL = 1e-4, 1e-5

ROW_COLUMNS: list[str] = [
    "run_id", "timestamp", "pipeline", "embedding", "execution", "dataset", "preset", "batch_size", "latency_ms",
    "latency_p10_ms", "latency_p90_ms", "samples_per_s", "host_ms", "bottom_mlp_ms", "embedding_ms",
    "interaction_ms", "top_mlp_ms", "staged_total_ms", "embedding_share", "speedup_vs_torch",
    "speedup_vs_torch_compile", "correct", "max_abs_err", "embedding_rel_err", "n_runs", "repeats", "n_batches",
    "seed", "tables", "rows", "dim", "dtype", "pooling", "arch_mlp_bot", "arch_mlp_top", "timing_valid", "device",
    "gpu_name", "torch_version", "numba_cuda_version", "error",
]  # fmt: skip

#: Meaning of the measurement columns.
COLUMN_DOCS: dict[str, str] = {
    "latency_ms": "end-to-end batch latency, median: CUDA events around one whole forward, stream idle before",
    "latency_p10_ms": "10th percentile of the same runs",
    "latency_p90_ms": "90th percentile",
    "samples_per_s": "batch_size / latency_ms",
    "host_ms": "host time to issue one forward (perf_counter, no sync), median",
    "bottom_mlp_ms": "eager pipelines: stage time between events, median of separate staged runs (else NaN)",
    "staged_total_ms": "sum of the four stage medians (staged runs)",
    "embedding_share": "embedding_ms / staged_total_ms",
    "speedup_vs_torch": "torch's latency_ms / this pipeline's, same dataset and batch size",
    "speedup_vs_torch_compile": "torch_compile's latency_ms / this pipeline's",
    "correct": f"click probabilities within {OUT_ATOL} of torch's and pooled embeddings within {EMB_RTOL} (rel.)",
    "timing_valid": "False in simulator mode: timings are recorded but mean nothing",
}


# --- streams and events --------------------------------------------------------------------------------


def timing_stream() -> Any:
    """torch's current stream as a Numba stream (the benchmark's timer records on it); the simulator's own."""
    if backend.SIMULATOR:
        return cuda.default_stream()
    return cuda.external_stream(torch.cuda.current_stream().cuda_stream)


def stage_event() -> Any:
    """An event the model records between its stages (``.record()`` on torch's current stream)."""
    return backend.HostEvent() if backend.SIMULATOR else torch.cuda.Event(enable_timing=True)


def _sync() -> None:
    if not backend.SIMULATOR:
        torch.cuda.synchronize()


# --- pipelines -------------------------------------------------------------------------------------------


@dataclass
class Inputs:
    """Batches resident on the device: dense features and sparse features per batch."""

    dense: list[torch.Tensor]
    sparse: list[KeyedJaggedTensor]

    @classmethod
    def make(cls, workload: Any, model: DLRM, n_batches: int) -> Inputs:
        dense, sparse = [], []
        for i, batch in enumerate(workload.batches(n_batches)):
            sparse.append(KeyedJaggedTensor.from_batch(batch, model.device, model.embedding.keys))
            dense.append(make_dense(workload.stage.batch_size, model.arch_mlp_bot[0], workload.seed * 7919 + i,
                                    model.device))  # fmt: skip
        return cls(dense, sparse)


@dataclass
class Pipeline:
    """``run(i)`` enqueues the whole forward of batch ``i`` (no sync) and returns its output tensor;
    ``staged(i, events)`` (eager only) does the same with five stage events."""

    name: str
    embedding: str
    execution: str
    model: DLRM
    run: Callable[[int], torch.Tensor]
    staged: Callable[[int, Sequence[Any]], torch.Tensor] | None = None
    cleanup: list[Any] = field(default_factory=list)

    def close(self) -> None:
        for c in self.cleanup:
            c.close()
        self.cleanup.clear()


def compiled_pipeline(name: str, impl: str, model: DLRM, inputs: Inputs, compiled: dict) -> Pipeline:
    """The torch.compile peer under the setting chosen by measurement for this GPU family
    (:func:`dlrmlab.dlrm.compile_peer.peer_setting`: modes, fullgraph, static shapes, whole-model graphs)."""
    from dlrmlab.dlrm.compile_peer import SETTINGS, peer_setting, runner

    if backend.SIMULATOR:
        raise DlrmlabError("the torch.compile peer is measured on a GPU only (simulator mode)")
    run, close = runner(model, SETTINGS[peer_setting()], inputs, compiled)
    return Pipeline(name, impl, "compile", model, run, cleanup=close)


def make_pipeline(base: DLRM, name: str, inputs: Inputs, compiled: dict) -> Pipeline:
    """A named pipeline over ``base``'s weights (shared) for these inputs; graphs are captured here."""
    base_name, _, placement = name.partition("@")  # NAME@PLACEMENT: the tables in host memory
    impl, execution = resolve(base_name)
    model = base.with_embedding(impl, placement or "device")
    d, s = inputs.dense, inputs.sparse
    if execution == "eager":
        return Pipeline(name, impl, execution, model, lambda i: model(d[i], s[i]),
                        lambda i, ev: model(d[i], s[i], ev), cleanup=[model.embedding])  # fmt: skip
    if execution == "graph":
        graphs = [CapturedCall(model, d[i], s[i]) for i in range(len(d))]
        return Pipeline(name, impl, execution, model, lambda i: graphs[i].replay(), cleanup=graphs)
    return compiled_pipeline(name, impl, model, inputs, compiled)


def check_pipeline(p: Pipeline, ref: torch.Tensor, ref_emb: list[torch.Tensor], inputs: Inputs) -> tuple[float, float]:
    """(max |out - ref| on batch 0, max relative error of the pooled embeddings of batch 0)."""
    _sync()
    out = p.run(0).clone()
    _sync()
    err = float((out - ref).abs().max())
    emb = [e.clone() for e in p.model.embedding(inputs.sparse[0])]
    rel = max(float((a - b).norm() / max(float(b.norm()), 1e-30)) for a, b in zip(emb, ref_emb, strict=True))
    return err, rel


# --- timing ----------------------------------------------------------------------------------------------


def _time_stages(p: Pipeline, i: int, ev: Sequence[Any]) -> list[float]:
    _sync()
    p.staged(i, ev)
    ev[-1].synchronize()
    return [ev[k].elapsed_time(ev[k + 1]) for k in range(len(STAGES))]


def time_pipelines(pipes: Sequence[Pipeline], n_batches: int, repeats: int, warmup_s: float) -> dict[str, dict]:
    """Interleaved rounds (all on batch ``r % n_batches``, the order rotated by one each round) after the
    benchmark's warm-up; per pipeline the lists ``e2e``, ``host`` and per-stage times."""
    stream = timing_stream()
    runs.warm_up([lambda p=p: p.run(0) for p in pipes], stream, warmup_s)
    timer = timing.StageTimer(stream)
    stage_ev = [stage_event() for _ in range(len(STAGES) + 1)]
    out = {p.name: {"e2e": [], "host": [], **{s: [] for s in STAGES}} for p in pipes}
    for r in range(repeats):
        i = r % n_batches
        for k in range(len(pipes)):
            p = pipes[(k + r) % len(pipes)]
            _sync()  # the timer needs the stream idle; the device too, for kernels on other streams
            ms, host = timer(p.run, i)
            out[p.name]["e2e"].append(ms)
            out[p.name]["host"].append(host)
            if p.staged is not None:
                for s, v in zip(STAGES, _time_stages(p, i, stage_ev), strict=True):
                    out[p.name][s].append(v)
    return out


# --- one case: a dataset at one batch size ------------------------------------------------------------------


def _timing_fields(t: dict | None, batch_size: int) -> dict:
    """The timing columns of one pipeline (NaN when it was not timed), from :func:`timing.summarize`."""
    t = t or {}
    e2e = timing.summarize(t.get("e2e", []))
    stages = {f"{s}_ms": timing.summarize(t.get(s, []))["median"] for s in STAGES}
    total = float(sum(stages.values()))
    return {
        "latency_ms": e2e["median"], "latency_p10_ms": e2e["p10"], "latency_p90_ms": e2e["p90"],
        "samples_per_s": batch_size / e2e["median"] * 1e3, "host_ms": timing.summarize(t.get("host", []))["median"],
        "n_runs": e2e["n"], **stages, "staged_total_ms": total, "embedding_share": stages["embedding_ms"] / total,
    }  # fmt: skip


def build_pipelines(base: DLRM, names: Sequence[str], inputs: Inputs, compiled: dict) -> tuple[list, dict]:
    """Pipelines that could be built (graphs captured, compiled) and, for the others, why not."""
    pipes, skipped = [], {}
    for name in names:
        try:
            pipes.append(make_pipeline(base, name, inputs, compiled))
        except Exception as e:  # report and go on: one broken pipeline must not hide the others
            skipped[name] = f"{type(e).__name__}: {e}" if not isinstance(e, DlrmlabError) else str(e)
    return pipes, skipped


def measure_case(
    base: DLRM, workload: Any, names: Sequence[str], *, n_batches: int, repeats: int, warmup_s: float,
    compiled: dict,
) -> tuple[list[dict], dict[str, str]]:
    """Rows (one per pipeline) for one dataset at one batch size, and the pipelines skipped with reasons."""
    inputs = Inputs.make(workload, base, n_batches)
    pipes, skipped = build_pipelines(base, names, inputs, compiled)
    try:
        ref_pipe = next((p for p in pipes if p.name == BASELINE), None)
        if ref_pipe is None:
            raise DlrmlabError(f"the {BASELINE} pipeline (the reference) could not run: {skipped.get(BASELINE)}")
        _sync()
        ref = ref_pipe.run(0).clone()
        ref_emb = [e.clone() for e in ref_pipe.model.embedding(inputs.sparse[0])]
        checks = {p.name: check_pipeline(p, ref, ref_emb, inputs) for p in pipes}
        good = [p for p in pipes if checks[p.name][0] <= OUT_ATOL and checks[p.name][1] <= EMB_RTOL]
        times = time_pipelines(good, n_batches, repeats, warmup_s)
        b = workload.stage.batch_size
        rows = []
        for p in pipes:
            err, rel = checks[p.name]
            ok = p in good
            rows.append({"pipeline": p.name, "embedding": p.embedding, "execution": p.execution,
                         "correct": ok, "max_abs_err": err, "embedding_rel_err": rel,
                         **_timing_fields(times.get(p.name) if ok else None, b),
                         "error": None if ok else f"outputs differ from {BASELINE}'s"})  # fmt: skip
        return rows, skipped
    finally:
        for p in pipes:
            p.close()


# --- the run -------------------------------------------------------------------------------------------------


def with_peers(names: Sequence[str], compile_peer: bool = True) -> list[str]:
    """``names`` validated, de-duplicated, with the peers every comparison needs: torch first, then on a GPU
    (unless ``compile_peer`` is False) the stronger all-PyTorch forms, torch_graph and torch_compile."""
    for n in names:
        base_name, _, placement = n.partition("@")
        resolve(base_name)
        if placement:
            Placement.parse(placement)
    peers = [BASELINE] + ([TORCH_GRAPH, COMPILE_PEER] if compile_peer and not backend.SIMULATOR else [])
    out = []
    for n in [*peers, *names]:
        if n not in out and not (n == COMPILE_PEER and backend.SIMULATOR):
            out.append(n)
    return out


def _environment_columns() -> dict:
    """The environment columns of a DLRM row, from the benchmark's :func:`~dlrmlab.bench.env.environment`
    (``device`` here is the GPU family, as in the results folder's name)."""
    env = benv.environment()
    return {"device": family(), "timing_valid": not backend.SIMULATOR,
            **{k: env.get(k) for k in ("gpu_name", "torch_version", "numba_cuda_version")}}  # fmt: skip


def _speedups(df: pd.DataFrame) -> pd.DataFrame:
    keys = ["run_id", "dataset", "batch_size"]
    for peer, col in ((BASELINE, "speedup_vs_torch"), (COMPILE_PEER, "speedup_vs_torch_compile")):
        ref = df[df["pipeline"] == peer].set_index(keys)["latency_ms"]
        base = df.set_index(keys).index.map(lambda k, ref=ref: ref.get(k, np.nan))
        df[col] = np.asarray(base, dtype=float) / df["latency_ms"].to_numpy(dtype=float)
    return df


def strongest_torch(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with, per run, dataset and batch size, the fastest correct all-PyTorch pipeline measured in that
    run (:data:`TORCH_FORMS`: ``best_torch``, ``best_torch_ms``) and every row's ``speedup_vs_best_torch``.
    Derived from the rows, never stored: a run without torch_graph or torch_compile compares with what it
    measured (eager torch at least)."""
    keys = [k for k in ("run_id", "dataset", "batch_size") if k in df]
    forms = df[df["pipeline"].isin(TORCH_FORMS) & df["correct"].astype(bool)].dropna(subset=["latency_ms"])
    best = forms.loc[forms.groupby(keys)["latency_ms"].idxmin(), [*keys, "pipeline", "latency_ms"]] if len(forms) \
        else pd.DataFrame(columns=[*keys, "pipeline", "latency_ms"])
    best = best.rename(columns={"pipeline": "best_torch", "latency_ms": "best_torch_ms"})
    out = df.drop(columns=["best_torch", "best_torch_ms", "speedup_vs_best_torch"], errors="ignore")
    out = out.merge(best, on=keys, how="left")
    out["speedup_vs_best_torch"] = out["best_torch_ms"].astype(float) / out["latency_ms"].astype(float)
    return out


def make_model(stage: Any, seed: int = 0) -> DLRM:
    """The paper artifact's DLRM over ``stage``'s tables: bottom MLP 256-128-dim, top MLP 128-64-1. Its
    batches come from dlrmlab's own workloads (ids within rows by construction), so the embedding stage
    skips the per-forward content checks (``validate=False``): they would add a sync to every timed batch."""
    quantized = quant.is_quantized(stage.dtype)
    model = DLRM("torch", arch_mlp_bot=(256, 128, stage.embedding_dim), embedding_sizes=stage.embedding_sizes,
                 seed=seed, dtype="float32" if quantized else stage.dtype)  # fmt: skip
    if quantized:  # fast pipelines read the quantized rows, the others the values they hold (in fp32)
        model.embedding.serve_quantized(stage.dtype)
    model.embedding.validate = False
    return model


def run_dlrm(
    embeddings: Sequence[str], datasets: Sequence[str], stage: Any = None, *, batch_sizes: Sequence[int] | None = None,
    seed: int = 0, n_batches: int | None = None, repeats: int | None = None, warmup_s: float | None = None,
    compile_peer: bool = True, progress: Callable[[str], None] | None = None,
    on_rows: Callable[[pd.DataFrame], None] | None = None,
) -> tuple[pd.DataFrame, dict[str, str]]:
    """Every pipeline on every dataset and batch size: tidy rows (:data:`ROW_COLUMNS`), and the pipelines
    skipped with their reasons. ``stage``: a preset name or EmbeddingStage (default: paper on a GPU, tiny
    in the simulator); its batch size is used unless ``batch_sizes`` is given. ``on_rows`` gets each
    (dataset, batch size)'s rows as soon as they are measured (the CLI appends them, so Ctrl-C keeps them);
    a request larger than free memory is refused before the model is built."""
    seed, n_batches, repeats, warmup_s = validate.bench_numbers(seed=seed, n_batches=n_batches, repeats=repeats,
                                                                warmup_s=warmup_s)
    stage = preset(stage or backend.default_preset()) if not isinstance(stage, EmbeddingStage) else stage
    if not datasets:
        raise DlrmlabError("need at least one dataset")
    sizes = [validate.integer("batch_sizes", b, 1, MAX_BATCH) for b in (batch_sizes or [stage.batch_size])]
    names = with_peers(embeddings, compile_peer)
    repeats, warmup_s = timing.default_repeats(repeats or None, warmup_s)
    n_batches = int(n_batches or 2)
    for ds in datasets:
        validate.check_stage(stage.with_(batch_size=max(sizes)), n_batches, dataset=ds)
    say = progress or (lambda s: None)
    run_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    rows, skipped, compiled = [], {}, {}
    with torch.inference_mode(), _recompile_limit(len(sizes) + 8):
        model = make_model(stage, seed)
        for b in sizes:
            for ds in datasets:
                say(f"dlrm: {ds}, batch {b}: {', '.join(names)}")
                wl = Workload(stage.with_(batch_size=b), ds, seed=seed)
                case_rows, why = measure_case(model, wl, names, n_batches=n_batches, repeats=repeats,
                                              warmup_s=warmup_s, compiled=compiled)  # fmt: skip
                skipped.update(why)
                meta = {"dataset": canonical_name(ds), "batch_size": b}
                rows += [{**r, **meta} for r in case_rows]
                if on_rows is not None and case_rows:
                    on_rows(_frame([{**r, **meta} for r in case_rows], stage, run_id, seed, repeats, n_batches))
                if not backend.SIMULATOR:
                    torch.cuda.empty_cache()
    return _frame(rows, stage, run_id, seed, repeats, n_batches), skipped


def _frame(rows: list[dict], stage: Any, run_id: str, seed: int, repeats: int, n_batches: int) -> pd.DataFrame:
    meta = {
        "run_id": run_id, "timestamp": datetime.now(UTC).isoformat(timespec="seconds"), "preset": stage.name,
        "repeats": repeats, "n_batches": n_batches, "seed": seed, "tables": stage.num_tables,
        "rows": stage.embedding_sizes[0], "dim": stage.embedding_dim, "dtype": stage.dtype,
        "pooling": str(stage.pooling), "arch_mlp_bot": f"256-128-{stage.embedding_dim}", "arch_mlp_top": "128-64-1",
        **_environment_columns(),
    }  # fmt: skip
    df = pd.DataFrame([{**meta, **r} for r in rows], columns=ROW_COLUMNS)
    return _speedups(df) if len(df) else df


@contextlib.contextmanager
def _recompile_limit(n: int) -> Iterator[None]:
    """Raise dynamo's recompile limit for a sweep (one graph per batch size), restored afterwards; a torch
    without the knob keeps its default."""
    import torch._dynamo.config as cfg  # torch.compile's, loaded only for a run (slow to import)

    old = getattr(cfg, "cache_size_limit", None)
    if old is not None:
        cfg.cache_size_limit = max(old, n)
    try:
        yield
    finally:
        if old is not None:
            cfg.cache_size_limit = old


# --- targets -------------------------------------------------------------------------------------------

#: dlrmlab's targets at batch 2048: its best pipeline vs eager torch, and vs the strongest all-PyTorch form of
#: the same run (set against torch.compile; held against the fastest of eager, its CUDA graph and compile).
TARGETS: dict[str, tuple[float, float | None]] = {
    "synthetic-high": (2.5, 2.0), "medium trace": (2.0, None), "random": (1.6, 1.4),
}


def _target_key(dataset: str) -> str | None:
    try:
        dataset = canonical_name(dataset)  # older rows say "high" for synthetic-high
    except DlrmlabError:
        pass
    if dataset in TARGETS:
        return dataset
    if dataset.startswith("trace:") and "medium" in dataset:
        return "medium trace"
    return None


def best_pipelines(df: pd.DataFrame, batch_size: int = 2048) -> pd.DataFrame:
    """Per dataset at ``batch_size``: the fastest dlrmlab pipeline, its speedups, the targets, the paper's."""
    d = strongest_torch(df[(df["batch_size"] == batch_size) & df["correct"].astype(bool)])
    out = []
    for ds, g in d.groupby("dataset", sort=False):
        ours = g[g["embedding"] != BASELINE].dropna(subset=["latency_ms"])
        if ours.empty:
            continue
        best = ours.loc[ours["latency_ms"].idxmin()]
        key = _target_key(str(ds))
        tgt = TARGETS.get(key, (None, None))
        out.append({
            "dataset": ds, "best": best["pipeline"], "latency_ms": best["latency_ms"],
            "speedup_vs_torch": best["speedup_vs_torch"], "target_vs_torch": tgt[0],
            "best_torch": best["best_torch"], "speedup_vs_best_torch": best["speedup_vs_best_torch"],
            "target_vs_best_torch": tgt[1], "eager_torch_ms": best["latency_ms"] * best["speedup_vs_torch"],
            "best_torch_ms": best["best_torch_ms"], "paper_end_to_end": PUBLISHED["end_to_end"],
        })
    return pd.DataFrame(out)


#: How the all-PyTorch forms read in a table.
TORCH_FORM_LABELS = {BASELINE: "eager", TORCH_GRAPH: "eager, one CUDA graph", COMPILE_PEER: "torch.compile"}


def best_markdown(df: pd.DataFrame, batch_size: int = 2048) -> str:
    """The headline table of a results file: per dataset, from the latest run that measured it at
    ``batch_size``, eager PyTorch, the strongest all-PyTorch form of that run and the best dlrmlab pipeline,
    with the ratios and dlrmlab's goals (``dlrm_best.md``; results/README.md shows it)."""
    from dlrmlab.report.style import dataset_label  # figure and table labels (no torch)

    d = df[(df["batch_size"] == batch_size) & df["timing_valid"].astype(bool)]
    label = d["dataset"].map(dataset_label)  # older rows name a trace by its path
    latest = d.groupby(label)["run_id"].transform("max")
    best = best_pipelines(d[d["run_id"] == latest], batch_size)
    goal = lambda v: f" ({v:g}x)" if v is not None and pd.notna(v) else ""  # noqa: E731
    lines = ["| dataset | eager torch ms | strongest torch (form) ms | best dlrmlab (pipeline) ms | vs eager (goal) "
             "| vs strongest torch (goal) |", "|---|---|---|---|---|---|"]  # fmt: skip
    for r in best.itertuples():
        form = TORCH_FORM_LABELS.get(r.best_torch, r.best_torch)
        lines.append(f"| {dataset_label(r.dataset)} | {r.eager_torch_ms:.3g} | {r.best_torch_ms:.3g} ({form}) | "
                     f"{r.latency_ms:.3g} ({r.best}) | {r.speedup_vs_torch:.2f}x{goal(r.target_vs_torch)} | "
                     f"{r.speedup_vs_best_torch:.2f}x{goal(r.target_vs_best_torch)} |")  # fmt: skip
    return "\n".join(lines) + "\n"
