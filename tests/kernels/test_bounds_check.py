"""The fast kernel's device-side bounds check, one mode at a time (:class:`dlrmlab.config.BoundsCheck`, FBGEMM's
``BoundsCheckMode`` names): ``fatal`` reports a planted bad id (how many, the first position and its value)
instead of reading it; ``warning`` and ``ignore`` skip it (it adds nothing), warning once or saying nothing;
every mode gives the reference's result on good ids; a mode that is not one is refused, listing the valid ones."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from dlrmlab import api, reference
from dlrmlab.config import BoundsCheck
from dlrmlab.errors import DlrmlabError
from dlrmlab.fused import BoundsWarning, _compiled
from dlrmlab.kernels.fused import FastConfig

#: small blocks so that the bad ids fall in different bags and tiles
SMALL = {"unroll": 2, "bags_per_block": 2}


def _case(bad: int | None = None):
    rng = np.random.default_rng(7)
    w = rng.standard_normal((30, 8)).astype(np.float32)
    ids = rng.integers(0, 30, 40).astype(np.int64)
    if bad is not None:
        ids[17] = bad
        ids[31] = bad
    return w, ids, np.array([0, 10, 10, 25, 40], np.int64)


def _fast(case, mode="sum", **knobs):
    w, ids, off = case
    out = api.embedding_bag(ids, w, off, mode=mode, include_last_offset=True, variant="fast", validate=False,
                            **SMALL, **knobs)  # fmt: skip
    return out.copy_to_host()


@pytest.mark.parametrize("staging", ["shared", "registers"])
@pytest.mark.parametrize("bad", [30, -2, 1 << 40])
@pytest.mark.parametrize("fatal", ["fatal", True])  # True: the earlier boolean switch
def test_fatal_reports_a_planted_bad_id_instead_of_reading_it(bad, staging, fatal):
    w, ids, off = _case(bad)
    with pytest.raises(DlrmlabError, match=r"2 id\(s\) out of their table's range .* first at position 17 is "):
        _fast((w, ids, off), bounds_check=fatal, ids=staging)


@pytest.mark.parametrize("staging", ["shared", "registers"])
@pytest.mark.parametrize("mode", ["warning", "ignore"])
def test_warning_and_ignore_skip_bad_ids(mode, staging):
    """A skipped id adds nothing to its bag: the result is the reference's over the good ids only."""
    w, ids, off = _case(bad=30)
    good = np.ones(ids.size, bool)
    good[[17, 31]] = False
    ref = reference.embedding_bag(np.where(good, ids, 0), w, off, mode="sum", include_last_offset=True,
                                  per_sample_weights=good.astype(np.float32))  # fmt: skip
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = _fast((w, ids, off), bounds_check=mode, ids=staging)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)
    said = [str(c.message) for c in caught if issubclass(c.category, BoundsWarning)]
    if mode == "warning":  # once, with the count and the first position
        assert len(said) == 1 and "2 id(s) out of their table's range" in said[0] and "position 17 is 30" in said[0]
    else:
        assert said == []


@pytest.mark.parametrize("mode", [*BoundsCheck, False])
def test_every_mode_gives_the_reference_result_on_good_ids(mode):
    w, ids, off = _case()
    with warnings.catch_warnings():
        warnings.simplefilter("error", BoundsWarning)
        out = _fast((w, ids, off), mode="mean", bounds_check=mode)
    np.testing.assert_allclose(out, reference.embedding_bag(ids, w, off, mode="mean", include_last_offset=True),
                               rtol=1e-5, atol=1e-6)  # fmt: skip


def test_the_mode_is_parsed_once_and_the_kernel_knows_only_whether_it_checks():
    cfg = FastConfig(dim=8, bounds_check="warning")
    assert cfg.bounds_check is BoundsCheck.WARNING and cfg.checked and cfg.params()["bounds_check"] == "warning"
    assert FastConfig(dim=8, bounds_check=False).bounds_check is BoundsCheck.NONE and not FastConfig(dim=8).checked
    # one compiled kernel for every checking mode, another for none
    kernels = {_compiled(FastConfig(dim=8, bounds_check=m)) for m in BoundsCheck}
    assert kernels == {FastConfig(dim=8), FastConfig(dim=8, bounds_check="fatal")}
    with pytest.raises(DlrmlabError, match="bounds_check must be one of 'none', 'fatal', 'warning', 'ignore'.*"
                                           "got 'loud'"):  # fmt: skip
        _fast(_case(), bounds_check="loud")


@pytest.mark.gpu
def test_planted_bad_id_on_the_gpu_paper_preset_table():
    """On the GPU, a bad id in a big table (far past the end) is caught by the device check."""
    rng = np.random.default_rng(1)
    w = rng.standard_normal((500_000, 128)).astype(np.float32)
    ids = rng.integers(0, 500_000, 2048 * 150).astype(np.int64)
    ids[123_456] = 10**12
    off = np.arange(0, ids.size + 1, 150, dtype=np.int64)
    with pytest.raises(DlrmlabError, match="1 id.* first at position 123,456 is 1,000,000,000,000"):
        api.embedding_bag(ids, w, off, mode="sum", include_last_offset=True, variant="fast", validate=False,
                          bounds_check="fatal")
