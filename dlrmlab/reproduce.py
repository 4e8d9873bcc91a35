"""``dlrmlab reproduce``: the main job."""

from __future__ import annotations

from dlrmlab import backend

PLAN = """dlrmlab reproduce will:
  1. describe the GPU (or announce simulator mode),
  2. benchmark torch's embedding_bag and dlrmlab's kernel variants on the paper's workload
     (12 x 500K x 128 fp32, batch 2048, pooling 150) for the random, low, medium, high and Zipf datasets,
  3. profile stalls and occupancy with Nsight Compute, and
  4. write tidy results and figures under the results directory.
Steps 2-4 are not implemented yet: nothing has been measured."""


def reproduce(out: str = "results", quiet: bool = False) -> int:
    print(f"mode: {backend.describe_mode()}")
    print(PLAN)
    return 0
