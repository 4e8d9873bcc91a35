"""Property tests: every variant that runs here matches the NumPy reference on random small stages.

Hypothesis draws the stage (1-3 tables of 1-40 rows, widths 1, 3, 4, 8, 12, batch 1-6, fixed or uniform
pooling with empty bags, sum / weighted sum / mean, fp32 / fp16 / bf16 tables, int32 / int64 ids, a
uniform or a skewed id stream) and compares the variant's output with the reference through
:func:`dlrmlab.bench.comparison.check_result`. A combination a variant refuses up front (a
:class:`~dlrmlab.errors.DlrmlabError` from ``prepare``) is skipped with ``assume``; anything refused or
raised later is a failure. In simulator mode the GPU-only variants are not available here and the
others run in Numba's CUDA simulator (small examples keep the whole file under a minute).
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from helpers import examples as n_examples
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from dlrmlab import variants
from dlrmlab.bench.case import BenchCase
from dlrmlab.bench.comparison import check_result
from dlrmlab.errors import DlrmlabError
from dlrmlab.workload import EmbeddingStage, Pooling

#: Every variant that can run on this machine (the simulator: no GPU-only ones; torch if it imports).
AVAILABLE = variants.names(available_only=True)
#: Hypothesis examples per variant (``dev`` profile; fewer under ``ci``): the simulator runs one Python thread per
#: CUDA thread.
EXAMPLES = n_examples(10)
#: Variants given a small pin set (at most 8 rows): the simulator's pin kernel runs a Python thread per row.
PINNED = ("l2p", "combined", "fast+l2p")
COMBINES = [("sum", False), ("sum", True), ("mean", False)]


@dataclass(frozen=True)
class Example:
    stage: EmbeddingStage
    dataset: str
    seed: int
    mode: str
    weighted: bool

    def case(self) -> BenchCase:
        return BenchCase.create(self.stage, self.dataset, seed=self.seed, n_batches=1, weighted=self.weighted,
                                mode=self.mode)


@st.composite
def poolings(draw) -> Pooling:
    if draw(st.booleans()):
        return Pooling("fixed", draw(st.integers(1, 5)))
    hi = draw(st.integers(1, 6))
    return Pooling("uniform", draw(st.integers(0, min(hi, 2))), hi)  # lo 0: empty bags


@st.composite
def examples(draw) -> Example:
    tables = draw(st.integers(1, 3))
    rows = tuple(draw(st.lists(st.integers(1, 40), min_size=tables, max_size=tables)))
    mode, weighted = draw(st.sampled_from(COMBINES))
    stage = EmbeddingStage(
        rows, draw(st.sampled_from([1, 3, 4, 8, 12])), draw(st.integers(1, 6)), draw(poolings()),
        dtype=draw(st.sampled_from(["float32", "float16", "bfloat16"])),
        index_dtype=draw(st.sampled_from(["int64", "int32"])),
    )
    dataset = draw(st.sampled_from(["random", "zipf:1.2"]))
    return Example(stage, dataset, draw(st.integers(0, 2**16)), mode, weighted)


def check_variant(name: str, ex: Example) -> None:
    """``name`` on ``ex`` against the reference; a refusal at prepare skips the example."""
    case = ex.case()
    try:
        knobs = {"hot_rows": min(8, *ex.stage.embedding_sizes)} if name in PINNED else {}
        prepared = variants.prepare(name, case, **knobs)
    except DlrmlabError:
        assume(False)  # the variant refuses this combination up front, with a message
        return
    try:
        for batch in range(case.n_batches):
            err, ok, why = check_result(case, prepared.result(batch), batch)
            assert ok, f"{name} batch {batch}: {why} (max_rel_err {err:.3g}) on {ex}"
    finally:
        prepared.close()


def test_every_available_variant_is_covered():
    assert AVAILABLE, "no variant can run here"
    assert set(AVAILABLE) <= set(variants.names())


@pytest.mark.slow
@pytest.mark.parametrize("name", AVAILABLE)
@settings(max_examples=EXAMPLES)  # the profile's: the same examples on every run (derandomize)
@given(ex=examples())
def test_variant_matches_reference(name, ex):
    check_variant(name, ex)


@settings(max_examples=n_examples(5))
@given(ex=examples())
def test_examples_are_valid_cases(ex):
    """The strategy only makes stages a case accepts (refusals are the variants', not the generator's)."""
    case = ex.case()
    assert case.num_tables == ex.stage.num_tables
    for b in case.host_batches:
        for rows, tb in zip(ex.stage.embedding_sizes, b.tables, strict=True):
            assert tb.indices.size == 0 or int(tb.indices.max()) < rows
            assert tb.num_bags == ex.stage.batch_size
