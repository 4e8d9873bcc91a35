"""The occupancy calculator against hand-computed CUDA occupancy-calculator values (H100 / sm_90 limits).

Hand computation (H100: 65536 registers, 64 warps, 32 blocks and 228 KiB of shared memory per SM;
registers allocated per warp in units of 256; shared memory in units of 128 plus 1 KiB per block):

* 45 regs x 256 threads: 45*32 = 1440 -> 1536 regs/warp; 65536 // 1536 = 42 warps -> 42 // 8 = 5 blocks
  (warps alone would allow 64 // 8 = 8): 40 / 64 = 0.625, registers limit.
* 32 regs x 256 threads: 1024 regs/warp -> 64 warps -> 8 blocks, and warps allow 8 too: 1.0, a tie that
  the calculator reports as the warp limit.
* 255 regs x 1024 threads: 255*32 = 8160 -> 8192 regs/warp; 32 warps * 8192 = 262144 > 65536 registers
  per block: the block cannot launch, 0 blocks.
* 64 regs x 1024 threads: 2048 regs/warp; 32 * 2048 = 65536 fits exactly; 65536 // 2048 = 32 warps ->
  1 block (warps would allow 2): 0.5, registers limit.
* 16 regs x 128 threads with 48 KiB shared memory: 49152 + 1024 = 50176 bytes/block (a multiple of 128);
  233472 // 50176 = 4 blocks (registers allow 32, warps 16): 16 / 64 = 0.25, shared-memory limit.
* 16 regs x 32 threads: registers allow 128 blocks, warps 64, the block slots 32: 32 / 64 = 0.5.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import FIXTURES, simulator_only

from dlrmlab import device, occupancy
from dlrmlab.config import register_cap
from dlrmlab.errors import DlrmlabError
from dlrmlab.kernels import paper

H100 = device.H100_LIMITS


@pytest.mark.parametrize(
    "regs,threads,smem,blocks,warps,occ,limiter",
    [
        (45, 256, 0, 5, 40, 0.625, "registers"),
        (32, 256, 0, 8, 64, 1.0, "warps"),
        (255, 1024, 0, 0, 0, 0.0, "registers"),
        (64, 1024, 0, 1, 32, 0.5, "registers"),
        (16, 128, 48 * 1024, 4, 16, 0.25, "shared_memory"),
        (16, 32, 0, 32, 32, 0.5, "blocks"),
        (128, 256, 0, 2, 16, 0.25, "registers"),  # 4096 regs/warp: 16 warps
        (24, 1024, 0, 2, 64, 1.0, "warps"),  # 768 regs/warp: 85 warps by registers, 64 by warps
    ],
)
def test_theoretical_matches_hand_computed_calculator(regs, threads, smem, blocks, warps, occ, limiter):
    o = occupancy.theoretical(regs, threads, smem, limits=H100)
    assert o.blocks_per_sm == blocks
    assert o.warps_per_sm == warps
    assert o.max_warps_per_sm == 64
    assert o.theoretical == pytest.approx(occ)
    assert o.limiter == limiter


def test_theoretical_reports_every_limit():
    o = occupancy.theoretical(45, 256, limits=H100)
    assert o.limits == {"warps": 8, "registers": 5, "shared_memory": 32, "blocks": 32}
    o = occupancy.theoretical(16, 128, 48 * 1024, limits=H100)
    assert o.limits == {"warps": 16, "registers": 32, "shared_memory": 4, "blocks": 32}


def test_partial_warp_counts_as_a_whole_warp():
    # 33 threads take two warps: same occupancy as 64 threads
    a = occupancy.theoretical(32, 33, limits=H100)
    b = occupancy.theoretical(32, 64, limits=H100)
    assert (a.blocks_per_sm, a.warps_per_sm) == (b.blocks_per_sm, b.warps_per_sm) == (32, 64)


def test_shared_memory_rounds_up_to_allocation_unit():
    # 46 KiB + 1 B: (47104 + 1 + 1024) -> 48256 bytes/block; 233472 // 48256 = 4
    assert occupancy.theoretical(16, 128, 46 * 1024 + 1, limits=H100).blocks_per_sm == 4
    # 44 KiB: 45056 + 1024 = 46080 bytes; 233472 // 46080 = 5
    assert occupancy.theoretical(16, 128, 44 * 1024, limits=H100).blocks_per_sm == 5


def test_registers_are_allocated_per_sub_partition():
    # CUDA calculator: 45 regs -> 1536 regs/warp; 16384 // 1536 = 10 warps per sub-partition, 40 per SM;
    # 64-thread blocks (2 warps): 20 blocks, 40 / 64 = 0.625. Pooled: 42 warps -> 21 blocks.
    o = occupancy.theoretical(45, 64, limits=H100)
    assert o.blocks_per_sm == 20
    assert o.theoretical == pytest.approx(0.625)


@simulator_only
def test_theoretical_defaults_to_h100_limits_in_simulator():
    assert device.limits() == H100
    assert device.limits() is not H100  # a copy: callers cannot change the stand-in
    assert occupancy.theoretical(45, 256) == occupancy.theoretical(45, 256, limits=H100)


@pytest.mark.parametrize("threads", [0, -32, 1025, 2048])
def test_theoretical_rejects_bad_block_sizes(threads):
    with pytest.raises(DlrmlabError, match="threads per block"):
        occupancy.theoretical(32, threads, limits=H100)


@pytest.mark.parametrize("cap", [8, 15, 256, 300, 40.5])
def test_register_cap_rejects(cap):
    with pytest.raises(DlrmlabError, match=r"max_registers \(register cap\) must be (in 16\.\.255|an integer)"):
        register_cap(cap)


@pytest.mark.parametrize("cap,expected", [(None, None), (16, 16), (42, 42), (255, 255), (32.0, 32)])
def test_register_cap_accepts(cap, expected):
    got = register_cap(cap)
    assert got == expected
    assert got is None or type(got) is int


def test_occupancy_table_shape_and_monotone():
    regs = list(range(16, 256, 8))
    df = occupancy.occupancy_table(regs, threads_per_block=256, limits=H100)
    assert df.shape == (len(regs), 6)
    assert list(df.columns) == [
        "registers", "threads_per_block", "blocks_per_sm", "warps_per_sm", "theoretical_occupancy", "limiter",
    ]  # fmt: skip
    assert df["registers"].tolist() == regs
    assert (df["threads_per_block"] == 256).all()
    occ = df["theoretical_occupancy"].to_numpy()
    assert (np.diff(occ) <= 0).all()
    assert occ[0] == 1.0 and occ[-1] > 0
    assert set(df["limiter"]) <= {"warps", "registers"}
    assert df.loc[df["registers"] == 48, "blocks_per_sm"].item() == 5  # 48*32 = 1536 regs/warp, as 45


def test_occupancy_table_propagates_errors():
    with pytest.raises(DlrmlabError):
        occupancy.occupancy_table([32], threads_per_block=0, limits=H100)


@simulator_only
def test_kernel_resources_are_none_in_simulator():
    kernel = paper.build(paper.PaperConfig())
    assert occupancy.kernel_resources(kernel) == {"registers": None, "shared_bytes": None, "local_bytes": None}
    # no compiled overload is even needed in the simulator
    assert occupancy.kernel_resources(object())["registers"] is None


def test_compiled_needs_a_launched_kernel():
    with pytest.raises(DlrmlabError, match="not been compiled"):
        occupancy.compiled(object())


def test_calculator_matches_ncu_theoretical_occupancy_from_fixture():
    """Cross-check against Nsight Compute: the calculator gives ncu's theoretical occupancy for the kernel
    ncu profiled (registers and block size read from the committed capture)."""
    from dlrmlab.bench import ncu

    fixtures = sorted(FIXTURES.glob("ncu_raw_*.csv"))
    assert fixtures
    for path in fixtures:
        for _, row in ncu.parse_raw_csv(path.read_text()).iterrows():
            occ = occupancy.theoretical(int(row["registers"]), int(row["block"]), 0, device.H100_LIMITS)
            assert occ.theoretical == pytest.approx(row["theoretical_occupancy"], abs=1e-6), path.name
            assert occ.limiter == row["occupancy_limiter"], path.name


# --- device limits and family ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,family",
    [
        ("NVIDIA H100 80GB HBM3", "h100"),
        ("NVIDIA H200", "h200"),
        ("NVIDIA GH200 480GB", "gh200"),
        ("NVIDIA A100-SXM4-80GB", "a100"),
        ("NVIDIA L40S", "l40s"),
        ("NVIDIA L40", "l40"),
        ("NVIDIA L4", "l4"),
        ("Tesla V100-SXM2-16GB", "v100"),
        ("NVIDIA RTX 6000 Ada Generation", "nvidia-rtx-6000-ada-generation"),
    ],
)
def test_family_from_device_name(name, family):
    assert device.family(name) == family


@simulator_only
def test_family_is_simulator_without_a_gpu():
    assert device.family() == "simulator"


def test_limits_have_what_occupancy_and_grids_need():
    lim = device.limits()
    need = {"sms", "l2_bytes", "persisting_l2_max_bytes", "regs_per_sm", "regs_per_block", "threads_per_sm",
            "threads_per_block", "blocks_per_sm", "smem_per_sm", "smem_reserved_per_block", "warp_size", "name"}
    assert need <= set(lim)
    assert H100["sms"] == 132 and H100["l2_bytes"] == 50 * 1024 * 1024
