"""Process groups as context managers, collectives that fail clearly, and a launcher for local ranks.

:func:`process_group` joins (or makes) a ``torch.distributed`` group with a timeout on init and on every
collective, and always destroys it on exit, so an exception or Ctrl-C leaves no group behind. Under
``torchrun`` it reads ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and ``MASTER_ADDR``/``MASTER_PORT`` from the
environment (``init_method="env://"``); NCCL ranks take GPU ``LOCAL_RANK``.

:func:`collective` runs one collective and turns a failure (a peer that died: gloo's "Connection closed by
peer"; a timeout) into a :class:`ShardError` naming the rank and the step, never a hang: gloo and NCCL
give up after the group's timeout.

:func:`run_ranks` starts ``world_size`` local processes (fork on CPU, spawn where CUDA is used), each
calling ``fn(rank, world_size, init_method, *args)``, and returns their results in rank order; a rank
that raises, dies, or outlives ``timeout_s`` is reported with its rank, and the others are stopped.
"""

from __future__ import annotations

import contextlib
import os
import queue
import socket
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from dlrmlab.errors import DlrmlabError

BACKENDS = ("gloo", "nccl")
DEFAULT_TIMEOUT_S = 60.0


class ShardError(DlrmlabError):
    """A distributed step failed (a peer died or timed out): raised on the surviving ranks."""


@dataclass(frozen=True)
class Group:
    """The group this process is in: rank, world size, backend, the device its tensors live on."""

    rank: int
    world_size: int
    backend: str
    device: torch.device
    timeout_s: float
    handle: Any = None  # the torch ProcessGroup (None: the default group)


def free_port() -> int:
    """A TCP port free on this host now (for a local rendezvous)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def env_world() -> tuple[int, int, int] | None:
    """(rank, world size, local rank) when run under torchrun, else None."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0))
    return None


def _device(backend: str, device: str | None, local_rank: int) -> torch.device:
    if device is None:
        device = "cuda" if backend == "nccl" else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise DlrmlabError("device cuda was asked for, but torch sees no CUDA GPU")
        # one GPU per local rank; gloo ranks beyond the GPUs there are share GPU 0 (NCCL refuses that)
        idx = local_rank if backend == "nccl" or local_rank < torch.cuda.device_count() else 0
        if idx >= torch.cuda.device_count():
            have = torch.cuda.device_count()
            raise DlrmlabError(f"local rank {local_rank} needs GPU {idx}, but this host has {have}")
        torch.cuda.set_device(idx)
        return torch.device("cuda", idx)
    if backend == "nccl":
        raise DlrmlabError("the nccl backend needs CUDA tensors (device cuda); use gloo on the CPU")
    return torch.device("cpu")


@contextlib.contextmanager
def process_group(
    backend: str = "gloo", *, rank: int | None = None, world_size: int | None = None, init_method: str | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S, device: str | None = None,
) -> Iterator[Group]:
    """Join a group (``init_method`` given, or torchrun's environment) for the ``with`` block; destroyed on
    exit whatever happens. Timeouts apply to init and to every collective."""
    if backend not in BACKENDS:
        raise DlrmlabError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")
    env = env_world()
    local = 0
    if rank is None or world_size is None:
        if env is None:
            raise DlrmlabError("no rank and world size given, and not under torchrun (RANK/WORLD_SIZE unset)")
        rank, world_size, local = env
        init_method = init_method or "env://"
    elif env is not None:
        local = env[2]
    if not 0 <= int(rank) < int(world_size):
        raise DlrmlabError(f"rank {rank} outside a world of {world_size}")
    if dist.is_initialized():
        raise DlrmlabError("a torch.distributed process group is already initialised in this process")
    dev = _device(backend, device, local)
    kw: dict = {"device_id": dev} if backend == "nccl" else {}
    try:
        dist.init_process_group(backend, init_method=init_method or "env://", rank=int(rank),
                                world_size=int(world_size), timeout=timedelta(seconds=float(timeout_s)),
                                **kw)  # fmt: skip
    except (RuntimeError, ValueError) as e:
        raise ShardError(f"rank {rank}: joining the {backend} group of {world_size} failed within {timeout_s:g} s: "
                         f"{_first_line(e)}") from None  # fmt: skip
    try:
        yield Group(int(rank), int(world_size), backend, dev, float(timeout_s))
    finally:
        with contextlib.suppress(Exception):
            dist.destroy_process_group()


def _first_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text[:400]


def collective(group: Group, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` (a torch.distributed collective), a failure raised as :class:`ShardError`."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # reduce_scatter_tensor's rename in newer torch
            return fn(*args, **kwargs)
    except RuntimeError as e:  # DistBackendError and gloo's errors are RuntimeErrors
        raise ShardError(f"rank {group.rank}: {what} failed ({group.backend}, {group.world_size} ranks): a peer rank "
                         f"died or did not answer within {group.timeout_s:g} s: {_first_line(e)}") from None


def wait(group: Group, what: str, work: Any) -> None:
    """Wait on an async work handle, a failure raised as :class:`ShardError`."""
    if work is not None:
        collective(group, what, work.wait)


def reduce_scatter(group: Group, out: torch.Tensor, inp: torch.Tensor, async_op: bool = False) -> Any:
    """``reduce_scatter_single`` where torch has it (2.13+), else ``reduce_scatter_tensor``."""
    fn = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor
    return collective(group, "reduce-scatter of row-wise partial sums", fn, out, inp, async_op=async_op)


# --- local launcher ------------------------------------------------------------------------------------------


def _entry(rank: int, world: int, init: str, fn: Callable, args: tuple, results: Any) -> None:
    torch.set_num_threads(1)  # one core per rank: local ranks share the host's cores
    try:
        results.put((rank, "ok", fn(rank, world, init, *args)))
    except BaseException as e:  # reported to the parent with the rank; the process then exits
        msg = str(e) if isinstance(e, DlrmlabError) else "".join(traceback.format_exception_only(type(e), e)).strip()
        detail = "" if isinstance(e, DlrmlabError) else traceback.format_exc()
        results.put((rank, "error", (type(e).__name__, msg, detail)))


def run_ranks(fn: Callable, world_size: int, args: tuple = (), timeout_s: float = 120.0,
              start_method: str | None = None) -> list[Any]:  # fmt: skip
    """Run ``fn(rank, world_size, init_method, *args)`` in ``world_size`` local processes; their return
    values in rank order. Raises ShardError naming the first failing rank (a DlrmlabError's message as is)."""
    # forkserver on CPU: children fork from a clean server with torch preloaded (fast), never from a parent
    # whose OpenMP pool is running (fork would hang there); spawn where CUDA may be initialised.
    method = start_method or ("spawn" if torch.cuda.is_available() else "forkserver")
    ctx = mp.get_context(method)
    if method == "forkserver":
        ctx.set_forkserver_preload(["torch", "torch.distributed", getattr(fn, "__module__", "torch")])
    results = ctx.Queue()
    init = f"tcp://127.0.0.1:{free_port()}"
    procs = [ctx.Process(target=_entry, args=(r, world_size, init, fn, args, results), daemon=True)
             for r in range(world_size)]  # fmt: skip
    for p in procs:
        p.start()
    got: dict[int, tuple] = {}
    deadline = time.monotonic() + timeout_s
    try:
        while len(got) < world_size:
            try:
                r, status, value = results.get(timeout=0.2)
                got[r] = (status, value)
                continue
            except queue.Empty:
                pass
            dead = [r for r, p in enumerate(procs) if r not in got and p.exitcode is not None]
            if dead:  # a rank died without a word (killed, os._exit): give its queue a moment, then report
                time.sleep(0.5)
                while not results.empty():
                    r, status, value = results.get()
                    got[r] = (status, value)
                dead = [r for r in dead if r not in got]
                if dead:
                    got[dead[0]] = ("error", ("exit", f"rank {dead[0]} exited with code {procs[dead[0]].exitcode}", ""))
            if time.monotonic() > deadline:
                late = [r for r in range(world_size) if r not in got]
                raise ShardError(f"rank(s) {late} did not finish within {timeout_s:g} s")
    finally:
        for p in procs:
            p.join(timeout=1.0)
            if p.is_alive():
                p.terminate()
                p.join(timeout=2.0)
    errors = sorted(r for r, (s, _) in got.items() if s == "error")
    if errors:
        first = errors[0]
        _kind, msg, detail = got[first][1]
        others = "; ".join(f"rank {r}: {got[r][1][1]}" for r in errors[1:])
        raise ShardError(msg + (f" (also {others})" if others else "") + (f"\n{detail}" if detail else ""))
    return [got[r][1] for r in range(world_size)]
