"""The fast path: every table of a batch in one launch, at the memory roofline.

Skeleton (specialised at compile time by :class:`FusedConfig`):

* Work split: bags of all tables (table-major, the jagged layout) are cut into tiles of
  ``bags_per_block`` bags; blocks walk the tiles grid-stride, so no table or bag is a tail.
* Per tile the block stages the bags' ids (and per-sample weights) in shared memory, ``chunk`` ids per bag
  at a time; every thread runs the same number of chunk iterations (the tile's longest bag), so the
  barriers are uniform.
* A group of ``lanes`` threads owns one bag; each lane owns ``vectors`` 16-byte slices of the row
  (``VEC`` = 4 fp32 or 8 fp16/bf16 values), so a 128-wide fp32 row is one warp-wide 512-byte read.
* Memory-level parallelism: ``unroll`` rows are loaded (all their vectors) before any is accumulated.
* Widths that are not a multiple of the vector (or tables not 16-byte aligned) take scalar loads.

Tables live in one packed 1-D buffer. The addresser turns (table t, id r) into the row's first element:
``row_base[t] + r * dim``; with ``split_hot`` (frequency-ranked tables whose hottest ``hot_rows[t]`` rows
are stored together at the front of the buffer, for one L2 window over all of them)
``hot_base[t] + r * dim`` for ``r < hot_rows[t]``, ``row_base[t] + r * dim`` otherwise (``row_base`` then
already discounts the hot rows moved out). Ids are turned into offsets once, when staged.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache

from numba import float32, int64, uint32

from dlrmlab import backend
from dlrmlab.backend import cuda
from dlrmlab.errors import DlrmlabError
from dlrmlab.kernels.elements import VECTOR_ELEMS, load16, scalar_loader, unpack_hi, unpack_lo


@dataclass(frozen=True)
class FusedConfig:
    """Compile-time configuration of the fused kernel."""

    dim: int
    dtype: str = "float32"
    mode: str = "sum"
    weighted: bool = False
    padded: bool = False
    vector: bool = True
    unroll: int = 8
    bags_per_block: int = 4
    chunk: int = 64
    max_registers: int | None = None
    split_hot: bool = False

    def __post_init__(self) -> None:
        if self.dim <= 0:
            raise DlrmlabError(f"dim must be positive, got {self.dim}")
        if self.mode not in ("sum", "mean"):
            raise DlrmlabError(f"mode must be 'sum' or 'mean', got {self.mode!r}")
        if self.weighted and self.mode != "sum":
            raise DlrmlabError("per_sample_weights is only supported for mode='sum' (as in torch)")
        if self.dtype not in VECTOR_ELEMS:
            raise DlrmlabError(f"unknown table dtype {self.dtype!r}")
        if not 1 <= self.unroll <= 16:
            raise DlrmlabError(f"unroll (rows in flight) must be in 1..16, got {self.unroll}")
        if self.chunk <= 0:
            raise DlrmlabError(f"chunk must be positive, got {self.chunk}")
        if self.vector and self.dim % VECTOR_ELEMS[self.dtype]:
            raise DlrmlabError(
                f"vector loads need dim to be a multiple of {VECTOR_ELEMS[self.dtype]} for {self.dtype}; "
                "use vector=False"
            )
        if self.bags_per_block < 1 or self.lanes * self.bags_per_block > 1024:
            raise DlrmlabError(
                f"bags_per_block must be >= 1 with lanes x bags_per_block <= 1024, got {self.bags_per_block}"
            )

    @property
    def vec(self) -> int:
        return VECTOR_ELEMS[self.dtype] if self.vector else 1

    @property
    def lanes(self) -> int:
        """Threads per bag: enough to cover the row with one vector each, at most a warp, a power of 2."""
        need = -(-self.dim // self.vec)
        lanes = 1
        while lanes < min(need, 32):
            lanes *= 2
        return lanes

    @property
    def vectors(self) -> int:
        """Vectors per lane."""
        return -(-self.dim // (self.vec * self.lanes))

    @property
    def threads(self) -> int:
        return self.lanes * self.bags_per_block

    def params(self) -> dict:
        d = asdict(self)
        d.update(lanes=self.lanes, vectors=self.vectors, threads=self.threads)
        return d


TUNABLE = ("unroll", "bags_per_block", "chunk", "max_registers")


def choose(dim: int, dtype: str = "float32", pooling_mean: float | None = None, **overrides) -> FusedConfig:
    """Configuration for a row width: the autotuned one for this GPU and shape when the cache has it
    (``dlrmlab tune fast``) and the caller sets no tunable knob, else vector loads when the width allows,
    128-thread blocks, 8 rows in flight."""
    if dtype not in VECTOR_ELEMS:
        raise DlrmlabError(f"unknown table dtype {dtype!r}")
    if pooling_mean is not None and not any(k in overrides for k in TUNABLE):
        from dlrmlab.tune import cached_fast_params

        overrides.update(cached_fast_params(dim, dtype, pooling_mean, overrides.get("mode", "sum")))
    known = {f for f in FusedConfig.__dataclass_fields__} - {"dim", "dtype"}
    unknown = set(overrides) - known
    if unknown:
        raise DlrmlabError(
            f"unknown fused-kernel parameters: {', '.join(sorted(unknown))}; valid: {', '.join(sorted(known))}"
        )
    vec_ok = dim % VECTOR_ELEMS[dtype] == 0
    base = FusedConfig(dim=dim, dtype=dtype, vector=overrides.pop("vector", vec_ok), **{
        k: overrides.pop(k) for k in ("mode", "weighted", "padded", "split_hot") if k in overrides})
    bpb = overrides.pop("bags_per_block", max(1, 128 // base.lanes))
    return FusedConfig(**{**asdict(base), "bags_per_block": bpb, **overrides})


@lru_cache(maxsize=256)
def build(cfg: FusedConfig):
    """Compile (at first launch) the fused kernel for ``cfg``."""
    DIM, VEC, LANES, NV, U = cfg.dim, cfg.vec, cfg.lanes, cfg.vectors, cfg.unroll
    BPB, CH = cfg.bags_per_block, cfg.chunk
    ACC = NV * VEC
    MEAN, WEIGHTED, PADDED, SPLIT = cfg.mode == "mean", cfg.weighted, cfg.padded, cfg.split_hot
    FACTORS = WEIGHTED or PADDED
    COUNT_NONZERO = PADDED and not WEIGHTED  # a mean's count skips padding (weighted bags are sums)
    VECTOR, HALF = cfg.vector, cfg.dtype != "float32"
    load = scalar_loader(cfg.dtype)
    lo = unpack_lo("bfloat16" if cfg.dtype == "float32" else cfg.dtype)
    hi = unpack_hi("bfloat16" if cfg.dtype == "float32" else cfg.dtype)

    @cuda.jit(device=True, inline=True)
    def load_slice(packed, base, vals, slot):
        """Load this lane's NV slices of the row starting at ``base`` into vals[slot, :]."""
        lane = cuda.threadIdx.x % LANES
        for v in range(NV):
            col = (v * LANES + lane) * VEC
            if col < DIM:
                if VECTOR:
                    x = load16(packed, base + col)
                    if HALF:
                        for k in range(4):
                            vals[slot, v * VEC + 2 * k] = lo(uint32(x[k]))
                            vals[slot, v * VEC + 2 * k + 1] = hi(uint32(x[k]))
                    else:
                        for k in range(4):
                            vals[slot, v * VEC + k] = x[k]
                else:
                    vals[slot, v] = load(packed, base + col)
            else:  # lanes past the row's end: keep their (never written) accumulators finite
                for q in range(VEC):
                    vals[slot, v * VEC + q] = 0.0

    @backend.jit(max_registers=cfg.max_registers)
    def embedding_bag_fused(packed, row_base, hot_rows, hot_base, indices, offsets, table_offsets, psw,
                            padding_idx, out):
        # Staged per id: the element offset of its row (the addresser's answer) and its factor.
        row_s = cuda.shared.array((BPB, CH), int64)
        f_s = cuda.shared.array((BPB, CH), float32)
        vals = cuda.local.array((U, ACC), float32)
        acc = cuda.local.array(ACC, float32)
        num_bags = offsets.shape[0] - 1
        num_tables = table_offsets.shape[0] - 1
        g = cuda.threadIdx.x // LANES
        lane = cuda.threadIdx.x % LANES
        tile = cuda.blockIdx.x
        while tile * BPB < num_bags:
            bag = tile * BPB + g
            valid = bag < num_bags
            begin = offsets[bag] if valid else int64(0)
            end = offsets[bag + 1] if valid else int64(0)
            # Table of this bag: table_offsets is short (one entry per table), a linear scan is cheap.
            t = 0
            while t + 1 < num_tables and table_offsets[t + 1] <= bag:
                t += 1
            base_t = row_base[t]
            if SPLIT:
                hot_n = hot_rows[t]
                hot_t = hot_base[t]
            # Longest bag of the tile: every thread loops the same number of chunks (uniform barriers).
            longest = int64(0)
            for j in range(BPB):
                b2 = tile * BPB + j
                if b2 < num_bags:
                    longest = max(longest, offsets[b2 + 1] - offsets[b2])
            for a in range(ACC):
                acc[a] = 0.0
            cnt = 0
            c0 = int64(0)
            while c0 < longest:
                cuda.syncthreads()
                for k in range(lane, CH, LANES):
                    e = begin + c0 + k
                    if e < end:
                        idx = int64(indices[e])
                        if SPLIT and idx < hot_n:
                            row_s[g, k] = hot_t + idx * DIM
                        else:
                            row_s[g, k] = base_t + idx * DIM
                        if FACTORS:
                            f = psw[e] if WEIGHTED else float32(1.0)
                            if PADDED and idx == padding_idx:
                                f = float32(0.0)
                            f_s[g, k] = f
                cuda.syncthreads()
                n = min(int64(CH), end - begin - c0) if end - begin > c0 else int64(0)
                k = int64(0)
                while k + U <= n:
                    for u in range(U):
                        load_slice(packed, row_s[g, k + u], vals, u)
                    for u in range(U):
                        if FACTORS:
                            f = f_s[g, k + u]
                            if COUNT_NONZERO:
                                cnt += 1 if f != 0 else 0
                            for a in range(ACC):
                                acc[a] += vals[u, a] * f
                        else:
                            for a in range(ACC):
                                acc[a] += vals[u, a]
                    k += U
                while k < n:
                    load_slice(packed, row_s[g, k], vals, 0)
                    if FACTORS:
                        f = f_s[g, k]
                        if COUNT_NONZERO:
                            cnt += 1 if f != 0 else 0
                        for a in range(ACC):
                            acc[a] += vals[0, a] * f
                    else:
                        for a in range(ACC):
                            acc[a] += vals[0, a]
                    k += 1
                c0 += CH
            if valid:
                scale = float32(1.0)
                if MEAN:
                    if not COUNT_NONZERO:
                        cnt = end - begin
                    if cnt > 0:
                        scale = float32(1.0) / float32(cnt)
                for v in range(NV):
                    for q in range(VEC):
                        col = (v * LANES + lane) * VEC + q
                        if col < DIM:
                            out[bag, col] = acc[v * VEC + q] * scale
            tile += cuda.gridDim.x

    return embedding_bag_fused
