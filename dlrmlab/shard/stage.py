"""The sharded embedding stage on ``torch.distributed``: input distribution, lookups, output distribution.

Every rank holds ``B_local`` samples of every feature (data-parallel input, as TorchRec's
``ShardedEmbeddingBagCollection`` takes it) and gets back the pooled embeddings of its own samples for
every table, exactly what :class:`dlrmlab.dlrm.embedding.EmbeddingBagCollection` returns on one process.
Global sample ``s * B_local + i`` is rank ``s``'s sample ``i``.

1. **Input distribution** (TorchRec's KJT all-to-all): one ``all_to_all_single`` of the bag lengths each
   shard needs (static sizes), then one of the ids (sizes read from the lengths: one host sync). A
   table-wise or column-wise shard gets all ids of its table; a row-wise shard the ids of its row block
   (bucketized by owning rank, made local to the block).
2. **Lookups**: each rank's shards, grouped by width, as :class:`EmbeddingBagCollection` modules: the
   torch plug-in (``F.embedding_bag``) or dlrmlab's fast kernel (one launch per group). Always pooled as
   sums; ``mean`` divides on the receiving rank by its own bag lengths (so row-wise partial sums stay exact).
3. **Output distribution**: pooled rows of table- and column-wise shards go back by one
   ``all_to_all_single``; row-wise partial sums are summed and scattered by one reduce-scatter.
   Data-parallel tables are looked up locally and never communicate.

:meth:`ShardedEmbeddingBagCollection.forward` overlaps communication with lookups where the plan allows
(async work handles): data-parallel lookups run while the ids travel, row-wise lookups while table- and
column-wise outputs travel. :meth:`~ShardedEmbeddingBagCollection.forward_timed` runs the same steps one
after another, synchronised, to time each (the difference is the overlap).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist

from dlrmlab.config import KERNEL_MODES as MODES
from dlrmlab.dlrm.embedding import EmbeddingBagCollection
from dlrmlab.dlrm.kjt import KeyedJaggedTensor
from dlrmlab.errors import DlrmlabError
from dlrmlab.shard.dist import Group, collective, reduce_scatter, wait
from dlrmlab.shard.plan import Shard, ShardingPlan

#: Implementations of the per-rank lookups (names of :func:`dlrmlab.dlrm.embedding.implementations`).
LOOKUPS = ("torch", "fast")
PHASES = ("pooled", "row_wise", "data_parallel")  # table-/column-wise, row-wise, data-parallel


def _phase(s: Shard) -> str:
    return {"row_wise": "row_wise", "data_parallel": "data_parallel"}.get(s.sharding, "pooled")


@dataclass
class Dispatched:
    """What the input distribution delivered: one KJT per lookup group (B = world x B_local bags per key),
    the local KJT for data-parallel tables, and bytes sent."""

    groups: dict[tuple[str, int], KeyedJaggedTensor]
    local: KeyedJaggedTensor | None
    input_bytes: int = 0


@dataclass
class Looked:
    """Pooled outputs of every local shard, by shard index in :attr:`ShardedEmbeddingBagCollection.local`."""

    outputs: dict[int, torch.Tensor] = field(default_factory=dict)


class ShardedEmbeddingBagCollection:
    """The shards that ``plan`` gives this rank, and the collectives that serve a batch. ``weight`` is a
    packed (sum of rows, dim) tensor of every table (as :class:`EmbeddingBagCollection` holds them), or a
    function ``shard -> (rows, cols) tensor`` that makes one shard (then no rank holds a whole table).
    ``forward(kjt_local) -> [(B_local, dim)] * K``, fp32, the same on every rank as one process's
    EmbeddingBagCollection on the global batch, restricted to this rank's samples."""

    def __init__(
        self, plan: ShardingPlan, group: Group, embedding_sizes: Sequence[int],
        weight: torch.Tensor | Callable[[Shard], torch.Tensor], impl: str = "torch", mode: str = "sum",
        memory_budget: float | None = None, dim: int | None = None,
    ) -> None:
        self.sizes = tuple(int(n) for n in embedding_sizes)
        self.dim = int(weight.shape[1]) if isinstance(weight, torch.Tensor) else int(dim or 0)
        if self.dim <= 0:
            raise DlrmlabError("give the tables' width (dim) with a shard-making function")
        impl, _, placement = impl.partition("@")  # NAME@PLACEMENT: each shard in host memory (fast@cached:10%)
        if impl not in LOOKUPS:
            raise DlrmlabError(f"unknown lookup implementation {impl!r}; valid: {', '.join(LOOKUPS)}")
        self.placement = placement or "device"
        if mode not in MODES:
            raise DlrmlabError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if plan.world_size != group.world_size:
            raise DlrmlabError(f"the plan is for {plan.world_size} rank(s), the group has {group.world_size}")
        plan.validate(self.sizes, self.dim, 4, memory_budget)
        if isinstance(weight, torch.Tensor) and tuple(weight.shape) != (sum(self.sizes), self.dim):
            raise DlrmlabError(f"packed weight of shape {tuple(weight.shape)} for tables {self.sizes} x {self.dim}")
        self.plan, self.group, self.impl, self.mode = plan, group, impl, mode
        self.w, self.k = group.world_size, len(self.sizes)
        everyone = plan.shards(self.sizes, self.dim)
        self.local = [s for s in everyone if s.rank == group.rank]
        #: For every rank, the shards it holds that need ids from the others (in plan order).
        self.remote = [[s for s in everyone if s.rank == r and s.sharding != "data_parallel"] for r in range(self.w)]
        self.pooled_dims = [sum(s.dim for s in self.remote[r] if s.sharding != "row_wise") for r in range(self.w)]
        self.rw_tables = [p.table for p in plan.tables if p.sharding == "row_wise"]
        if isinstance(weight, torch.Tensor):
            if weight.dtype != torch.float32:
                raise DlrmlabError(f"the sharded stage runs float32 tables, got {weight.dtype}")
            packed = weight.detach().to(group.device)
            starts = [0]
            for n in self.sizes:
                starts.append(starts[-1] + n)

            def weight(s: Shard) -> torch.Tensor:
                r0 = starts[s.table]
                return packed[r0 + s.row_start : r0 + s.row_end, s.col_start : s.col_end]

        self.modules = self._build(weight)

    # --- construction --------------------------------------------------------------------------------------

    def _build(self, make: Callable[[Shard], torch.Tensor]) -> dict[tuple[str, int], tuple[list[int], Any]]:
        """One EmbeddingBagCollection per (phase, width) over copies of this rank's shards."""
        groups: dict[tuple[str, int], list[int]] = {}
        for i, s in enumerate(self.local):
            groups.setdefault((_phase(s), s.dim), []).append(i)
        out = {}
        for key, idx in groups.items():
            pieces = [make(self.local[i]).to(self.group.device) for i in idx]
            packed = torch.cat(pieces) if len(pieces) > 1 else pieces[0].contiguous()
            del pieces
            ebc = EmbeddingBagCollection([self.local[i].rows for i in idx], key[1], self.impl, mode="sum",
                                         keys=[f"t{self.local[i].table}" for i in idx], weight=packed,
                                         validate=False, placement=self.placement)  # fmt: skip
            out[key] = (idx, ebc)
        return out

    def shard_bytes(self) -> int:
        return sum(e.weight.numel() * e.weight.element_size() for _, e in self.modules.values())

    # --- input distribution ---------------------------------------------------------------------------------

    def check(self, kjt: KeyedJaggedTensor) -> None:
        if not isinstance(kjt, KeyedJaggedTensor):
            raise DlrmlabError(f"sparse input must be a KeyedJaggedTensor, got {type(kjt).__name__}")
        if kjt.num_keys != self.k:
            raise DlrmlabError(f"sparse input has {kjt.num_keys} keys, the sharded stage {self.k} tables")
        if kjt.weights is not None:
            raise DlrmlabError("the sharded stage takes no per-sample weights")
        if kjt.values.device != self.group.device:
            raise DlrmlabError(f"the batch is on {kjt.values.device}, this rank's shards on {self.group.device}")

    def _send_for(self, s: Shard, ids: torch.Tensor, off: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(lengths, ids) of this rank's local batch that shard ``s`` needs."""
        lengths = off[1:] - off[:-1]
        if s.sharding != "row_wise":
            return lengths, ids
        keep = (ids >= s.row_start) & (ids < s.row_end)
        bag = torch.repeat_interleave(torch.arange(lengths.numel(), device=ids.device), lengths)
        counts = torch.bincount(bag[keep], minlength=lengths.numel()).to(lengths.dtype)
        return counts, ids[keep] - s.row_start

    def _exchange_lengths(self, kjt: KeyedJaggedTensor) -> tuple[torch.Tensor, torch.Tensor, list[int], int]:
        """All-to-all of the lengths; returns (received lengths, ids to send, their per-rank split, bytes)."""
        b = kjt.stride
        per_key = kjt.split()
        send_len, send_ids, id_split = [], [], []
        for r in range(self.w):
            parts = [self._send_for(s, per_key[s.table][0], per_key[s.table][1]) for s in self.remote[r]]
            send_len += [p[0].to(torch.int64) for p in parts]
            send_ids += [p[1].to(torch.int64) for p in parts]
            id_split.append(parts)
        dev = self.group.device
        lengths = torch.cat(send_len) if send_len else torch.zeros(0, dtype=torch.int64, device=dev)
        ids = torch.cat(send_ids) if send_ids else torch.zeros(0, dtype=torch.int64, device=dev)
        recv = torch.empty(self.w * len(self.remote[self.group.rank]) * b, dtype=torch.int64, device=dev)
        collective(self.group, "all-to-all of the bag lengths", dist.all_to_all_single, recv, lengths,
                   [b * len(self.remote[self.group.rank])] * self.w, [b * len(x) for x in self.remote])  # fmt: skip
        sizes = [sum(int(p[1].numel()) for p in parts) for parts in id_split]
        return recv, ids, sizes, int((lengths.numel() + ids.numel()) * 8)

    def dispatch(self, kjt: KeyedJaggedTensor, overlap: Callable[[], Any] | None = None) -> Dispatched:
        """The input distribution; ``overlap()`` runs while the ids travel (data-parallel lookups). A plan
        with data-parallel tables only communicates nothing."""
        self.check(kjt)
        if not any(self.remote):
            local = self._local_kjt(kjt)
            if overlap is not None:
                overlap(local)
            return Dispatched({}, local, 0)
        b, me = kjt.stride, self.group.rank
        mine = self.remote[me]
        recv_len, ids, send_sizes, nbytes = self._exchange_lengths(kjt)
        seg = recv_len.view(self.w, len(mine), b).sum(2).tolist() if mine else [[] for _ in range(self.w)]
        recv_ids = torch.empty(sum(map(sum, seg)), dtype=torch.int64, device=self.group.device)
        work = collective(self.group, "all-to-all of the ids", dist.all_to_all_single, recv_ids, ids,
                          [sum(x) for x in seg], send_sizes, async_op=True)  # fmt: skip
        local = self._local_kjt(kjt)
        if overlap is not None:
            overlap(local)
        wait(self.group, "all-to-all of the ids", work)
        per_shard_ids: list[list[torch.Tensor]] = [[] for _ in mine]
        pos = 0
        for src in range(self.w):
            for j in range(len(mine)):
                per_shard_ids[j].append(recv_ids[pos : pos + seg[src][j]])
                pos += seg[src][j]
        lens = recv_len.view(self.w, len(mine), b) if mine else None
        groups = {}
        for key, (idx, _) in self.modules.items():
            if key[0] == "data_parallel":
                continue
            js = [mine.index(self.local[i]) for i in idx]
            vals = torch.cat([torch.cat(per_shard_ids[j]) for j in js])
            lengths = torch.cat([lens[:, j, :].reshape(-1) for j in js])
            names = [f"t{self.local[i].table}" for i in idx]
            per_key = [sum(r[j] for r in seg) for j in js]
            groups[key] = KeyedJaggedTensor.from_lengths(names, vals, lengths, length_per_key=per_key)
        return Dispatched(groups, local, nbytes)

    def _local_kjt(self, kjt: KeyedJaggedTensor) -> KeyedJaggedTensor | None:
        """This rank's own batch of its data-parallel tables (group order)."""
        key = next((k for k in self.modules if k[0] == "data_parallel"), None)
        if key is None:
            return None
        per_key = kjt.split()
        idx = self.modules[key][0]
        ids = [per_key[self.local[i].table][0] for i in idx]
        lengths = [per_key[self.local[i].table][1].diff() for i in idx]
        names = [f"t{self.local[i].table}" for i in idx]
        return KeyedJaggedTensor.from_lengths(names, torch.cat(ids), torch.cat(lengths),
                                              length_per_key=[int(x.numel()) for x in ids])

    # --- lookups -------------------------------------------------------------------------------------------

    def lookup(self, d: Dispatched, phases: Sequence[str] = PHASES, into: Looked | None = None) -> Looked:
        """The lookups of the given phases (all by default) on this rank's shards."""
        into = into or Looked()
        for key, (idx, ebc) in self.modules.items():
            if key[0] not in phases:
                continue
            kjt = d.local if key[0] == "data_parallel" else d.groups[key]
            for i, out in zip(idx, ebc(kjt), strict=True):
                into.outputs[i] = out
        return into

    # --- output distribution -------------------------------------------------------------------------------

    def _start_pooled(self, looked: Looked, b: int) -> tuple[torch.Tensor, Any, int]:
        """All-to-all of table- and column-wise outputs, started async (none when no rank has any)."""
        mine = [i for i, s in enumerate(self.local) if _phase(s) == "pooled"]
        dev = self.group.device
        if not sum(self.pooled_dims):
            return torch.zeros(0, dtype=torch.float32, device=dev), None, 0
        if mine:
            send = torch.cat([looked.outputs[i].reshape(self.w, -1) for i in mine], dim=1).reshape(-1)
        else:
            send = torch.zeros(0, dtype=torch.float32, device=dev)
        recv = torch.empty(b * sum(self.pooled_dims), dtype=torch.float32, device=dev)
        work = collective(self.group, "all-to-all of the pooled embeddings", dist.all_to_all_single, recv, send,
                          [b * d for d in self.pooled_dims], [b * self.pooled_dims[self.group.rank]] * self.w,
                          async_op=True)  # fmt: skip
        return recv, work, int(send.numel() * 4)

    def _start_row_wise(self, looked: Looked, b: int) -> tuple[torch.Tensor | None, Any, int]:
        if not self.rw_tables:
            return None, None, 0
        by_table = {s.table: i for i, s in enumerate(self.local) if s.sharding == "row_wise"}
        send = torch.cat([looked.outputs[by_table[t]] for t in self.rw_tables], dim=1).contiguous()
        recv = torch.empty((b, send.shape[1]), dtype=torch.float32, device=send.device)
        return recv, reduce_scatter(self.group, recv, send, async_op=True), int(send.numel() * 4)

    def _assemble(self, pooled: torch.Tensor, rw: torch.Tensor | None, looked: Looked,
                  kjt: KeyedJaggedTensor) -> list[torch.Tensor]:  # fmt: skip
        b = kjt.stride
        pieces: dict[int, list[tuple[int, torch.Tensor]]] = {}
        pos = 0
        for r in range(self.w):
            for s in self.remote[r]:
                if s.sharding == "row_wise":
                    continue
                pieces.setdefault(s.table, []).append((s.col_start, pooled[pos : pos + b * s.dim].view(b, s.dim)))
                pos += b * s.dim
        out: list[torch.Tensor | None] = [None] * self.k
        for t, ps in pieces.items():
            ps.sort(key=lambda x: x[0])
            out[t] = ps[0][1] if len(ps) == 1 else torch.cat([p for _, p in ps], dim=1)
        for j, t in enumerate(self.rw_tables):
            out[t] = rw[:, j * self.dim : (j + 1) * self.dim]
        for i, s in enumerate(self.local):
            if s.sharding == "data_parallel":
                out[s.table] = looked.outputs[i]
        if self.mode == "mean":
            lengths = [o.diff().clamp(min=1).to(torch.float32) for o in kjt.key_offsets]
            out = [o / n[:, None] for o, n in zip(out, lengths, strict=True)]
        return out

    def combine(self, looked: Looked, kjt: KeyedJaggedTensor) -> tuple[list[torch.Tensor], int]:
        """Output distribution after all lookups (no overlap); the outputs and the bytes sent."""
        pooled, w1, n1 = self._start_pooled(looked, kjt.stride)
        rw, w2, n2 = self._start_row_wise(looked, kjt.stride)
        wait(self.group, "all-to-all of the pooled embeddings", w1)
        wait(self.group, "reduce-scatter of row-wise partial sums", w2)
        return self._assemble(pooled, rw, looked, kjt), n1 + n2

    # --- forward -------------------------------------------------------------------------------------------

    def forward(self, kjt: KeyedJaggedTensor) -> list[torch.Tensor]:
        """The whole stage, communication overlapped with lookups where the plan allows."""
        looked = Looked()
        d = self.dispatch(kjt, overlap=lambda local: self.lookup(Dispatched({}, local), ("data_parallel",), looked))
        self.lookup(d, ("pooled",), looked)
        pooled, w1, _ = self._start_pooled(looked, kjt.stride)
        self.lookup(d, ("row_wise",), looked)
        rw, w2, _ = self._start_row_wise(looked, kjt.stride)
        wait(self.group, "all-to-all of the pooled embeddings", w1)
        wait(self.group, "reduce-scatter of row-wise partial sums", w2)
        return self._assemble(pooled, rw, looked, kjt)

    __call__ = forward

    def forward_timed(self, kjt: KeyedJaggedTensor) -> tuple[list[torch.Tensor], dict]:
        """The stage step by step, each synchronised and timed (wall ms on this rank): input_dist,
        lookup, output_dist, with the bytes each rank sent."""
        sync = _synchronizer(self.group.device)
        t0 = sync()
        d = self.dispatch(kjt)
        t1 = sync()
        looked = self.lookup(d)
        t2 = sync()
        out, out_bytes = self.combine(looked, kjt)
        t3 = sync()
        return out, {"input_dist_ms": (t1 - t0) * 1e3, "lookup_ms": (t2 - t1) * 1e3, "output_dist_ms": (t3 - t2) * 1e3,
                     "input_bytes": d.input_bytes, "output_bytes": out_bytes}  # fmt: skip


def _synchronizer(device: torch.device) -> Callable[[], float]:
    if device.type == "cuda":
        return lambda: (torch.cuda.synchronize(device), time.perf_counter())[1]
    return time.perf_counter
