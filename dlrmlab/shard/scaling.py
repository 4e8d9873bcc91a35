"""The communication model and the scaling predictions of the sharded embedding stage.

Times of collectives follow nccl-tests' definitions (github.com/NVIDIA/nccl-tests, doc/PERFORMANCE.md):
for all-to-all and reduce-scatter over n ranks, each rank moving S bytes, ``busbw = (S / t) * (n - 1) / n``,
so ``t = latency + S * (n - 1) / n / busbw``. The bus bandwidths are parameters; the defaults:

* **NVLink 4 (H100 SXM, one host of 8 through NVSwitch)**: 450 GB/s per direction per GPU is the line rate
  (NVIDIA: 900 GB/s bidirectional per GPU); NCCL reaches about 370 GB/s of bus bandwidth on operations
  other than all-reduce (NCCL's maintainer, github.com/NVIDIA/nccl-tests/issues/212). Default 370 GB/s.
* **InfiniBand NDR (one ConnectX-7 at 400 Gb/s = 50 GB/s per GPU, as in a DGX H100)**: a NIC at NDR
  reaches 48-49 GB/s, and an all-to-all cannot aggregate several NICs for one GPU
  (github.com/NVIDIA/nccl-tests/issues/267). Default 48 GB/s per GPU for traffic leaving the host.
* **Latency**: a fixed cost per collective (default 25 us within a host, 40 us across hosts): the order of
  nccl-tests' small-message times; an assumption, to be fitted from nccl-tests on the machine.

The prediction is deliberately simple (see :func:`predict`): input distribution, then the slowest rank's
lookups, then output distribution, in series (no overlap: an upper bound), every rank's traffic at the
same bus bandwidth, traffic to ranks of other hosts limited by the NIC. Lookup times come from the
planner's bytes model (:class:`dlrmlab.shard.planner.CostModel`), whose effective bandwidth can be
calibrated from a measurement on one GPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from dlrmlab.errors import DlrmlabError

#: H100 SXM memory a rank may fill with table shards by default (80 GB card, room left for buffers).
H100_BUDGET_BYTES = 70e9


@dataclass(frozen=True)
class CommModel:
    """Bus bandwidths (GB/s, nccl-tests' busbw) and fixed latencies (us) of collectives; see the module
    docstring for the defaults' sources."""

    intra_busbw_gbps: float = 370.0
    inter_busbw_gbps: float = 48.0
    intra_latency_us: float = 25.0
    inter_latency_us: float = 40.0
    gpus_per_host: int = 8

    def __post_init__(self) -> None:
        if min(self.intra_busbw_gbps, self.inter_busbw_gbps) <= 0 or self.gpus_per_host < 1:
            raise DlrmlabError("bandwidths and GPUs per host must be positive")

    def collective_ms(self, bytes_per_rank: float, world_size: int) -> float:
        """All-to-all or reduce-scatter with ``bytes_per_rank`` bytes of each rank's input (its own share
        included), ranks spread evenly: a rank's traffic to other hosts goes through its NIC."""
        n = int(world_size)
        if n <= 1 or bytes_per_rank <= 0:
            return 0.0
        g = min(self.gpus_per_host, n)
        share = bytes_per_rank / n  # to each peer
        intra = share * (g - 1) / (self.intra_busbw_gbps * 1e9)
        inter = share * (n - g) / (self.inter_busbw_gbps * 1e9)
        lat = self.inter_latency_us if n > g else self.intra_latency_us
        return (lat * 1e-6 + max(intra, inter)) * 1e3


@dataclass(frozen=True)
class DenseModel:
    """Data-parallel MLPs and interaction of DLRM per rank: ``fixed_ms + per_1k_samples_ms * B / 1000``.
    Defaults from dlrmlab's DLRM on one H100 at batch 2048 (bottom MLP + interaction + top MLP about
    0.17 ms, results/h100/dlrm.csv), with most of it assumed launch-bound (fixed)."""

    fixed_ms: float = 0.12
    per_1k_samples_ms: float = 0.025

    def ms(self, samples: float) -> float:
        return self.fixed_ms + self.per_1k_samples_ms * samples / 1000.0


def predict(cost, comm: CommModel | None = None, dense: DenseModel | None = None) -> dict:
    """Predicted times of one global batch for a plan's per-rank cost (a
    :class:`dlrmlab.shard.planner.PlanCost`): input distribution (ids and lengths, all-to-all), the
    slowest rank's lookups, output distribution (all-to-all of pooled rows, reduce-scatter of row-wise
    partial sums), in series; plus DLRM with data-parallel dense layers on ``batch / world`` samples."""
    comm, dense = comm or CommModel(), dense or DenseModel()
    n, b = cost.world_size, cost.batch_size
    fits = bool(cost.fits)
    in_ms = comm.collective_ms(float(np.max(cost.input_bytes)), n)
    out_ms = comm.collective_ms(float(np.max(cost.output_bytes)), n) + comm.collective_ms(
        float(np.max(cost.reduce_scatter_bytes)), n)  # fmt: skip
    look = float(np.max(cost.lookup_ms))
    e2e = in_ms + look + out_ms
    dlrm = e2e + dense.ms(b / n)
    nan = float("nan")
    return {
        "world_size": n, "hosts": -(-n // comm.gpus_per_host), "batch_size": b, "fits": fits,
        "input_dist_ms": in_ms if fits else nan, "lookup_ms": look if fits else nan,
        "output_dist_ms": out_ms if fits else nan, "latency_ms": e2e if fits else nan,
        "samples_per_s": b / e2e * 1e3 if fits and e2e > 0 else nan,
        "dlrm_latency_ms": dlrm if fits else nan, "dlrm_samples_per_s": b / dlrm * 1e3 if fits else nan,
        "imbalance": cost.imbalance, "max_memory_gb": float(np.max(cost.memory_bytes)) / 1e9,
    }  # fmt: skip


def scaling_table(
    make_cost, world_sizes: Sequence[int], batch_size: int, weak: bool = False, comm: CommModel | None = None,
    dense: DenseModel | None = None,
) -> pd.DataFrame:
    """Predictions over ``world_sizes``: ``make_cost(world, batch) -> PlanCost`` (a plan evaluated at that
    size). Strong scaling keeps the global batch; weak scaling (``weak=True``) gives every GPU
    ``batch_size`` samples (global batch ``batch_size * world``)."""
    rows = []
    for n in world_sizes:
        b = int(batch_size) * (int(n) if weak else 1)
        cost = make_cost(int(n), b)
        rows.append({**predict(cost, comm, dense), "scaling": "weak" if weak else "strong", "plan": cost.plan_name})
    return pd.DataFrame(rows)
