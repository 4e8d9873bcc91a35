"""The NumPy reference embedding-bag: hand-computed cases, errors, and agreement with PyTorch."""

from __future__ import annotations

import numpy as np
import pytest

from dlrmlab.errors import DlrmlabError
from dlrmlab.reference import embedding_bag
from dlrmlab.validate import offsets as validate_offsets

# Row r is [2r + 1, 2r + 2].
W = np.array([[1, 2], [3, 4], [5, 6], [7, 8]], np.float32)
# Bag 0 = rows 0, 1; bag 1 = rows 2, 3, 1.
IDS = np.array([0, 1, 2, 3, 1])
OFFSETS = np.array([0, 2])
LAST = np.array([0, 2, 5])

EXPECTED = {
    "sum": [[4, 6], [15, 18]],
    "mean": [[2, 3], [5, 6]],
    "max": [[3, 4], [7, 8]],
}


def bag(*args, **kwargs) -> np.ndarray:
    out = embedding_bag(*args, **kwargs)
    assert out.dtype == np.float32
    return out


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
@pytest.mark.parametrize("id_dtype", [np.int32, np.int64])
def test_modes(mode, id_dtype):
    ids, offsets = IDS.astype(id_dtype), OFFSETS.astype(id_dtype)
    np.testing.assert_array_equal(bag(ids, W, offsets, mode=mode), EXPECTED[mode])
    last = LAST.astype(id_dtype)
    np.testing.assert_array_equal(bag(ids, W, last, mode=mode, include_last_offset=True), EXPECTED[mode])


def test_default_mode_is_mean():
    np.testing.assert_array_equal(bag(IDS, W, OFFSETS), EXPECTED["mean"])


def test_per_sample_weights():
    w = np.array([1, 2, 0.5, -1, 3], np.float32)
    # bag 0: 1*[1,2] + 2*[3,4]; bag 1: 0.5*[5,6] - [7,8] + 3*[3,4]
    np.testing.assert_array_equal(bag(IDS, W, OFFSETS, mode="sum", per_sample_weights=w), [[7, 10], [4.5, 7]])


def test_include_last_offset_ignores_ids_past_the_last_offset():
    np.testing.assert_array_equal(
        bag(IDS, W, np.array([0, 2, 4]), mode="sum", include_last_offset=True), [[4, 6], [12, 14]]
    )


@pytest.mark.parametrize("padding_idx", [1, -3])
def test_padding_idx(padding_idx):
    # Row 1 is left out: bag 0 = row 0; bag 1 = rows 2, 3.
    np.testing.assert_array_equal(bag(IDS, W, OFFSETS, mode="sum", padding_idx=padding_idx), [[1, 2], [12, 14]])
    np.testing.assert_array_equal(bag(IDS, W, OFFSETS, mode="mean", padding_idx=padding_idx), [[1, 2], [6, 7]])
    np.testing.assert_array_equal(bag(IDS, W, OFFSETS, mode="max", padding_idx=padding_idx), [[1, 2], [7, 8]])
    w = np.array([1, 2, 0.5, -1, 3], np.float32)
    np.testing.assert_array_equal(
        bag(IDS, W, OFFSETS, mode="sum", per_sample_weights=w, padding_idx=padding_idx), [[1, 2], [-4.5, -5]]
    )


def test_bag_of_only_padding_is_zero():
    for mode in ("sum", "mean", "max"):
        np.testing.assert_array_equal(
            bag(np.array([2, 2, 0]), W, np.array([0, 2]), mode=mode, padding_idx=2), [[0, 0], [1, 2]]
        )


@pytest.mark.parametrize("padding_idx", [4, -5])
def test_padding_idx_out_of_range(padding_idx):
    with pytest.raises(DlrmlabError, match="padding_idx"):
        embedding_bag(IDS, W, OFFSETS, padding_idx=padding_idx)


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
def test_empty_bags(mode):
    ids = np.array([2, 3])
    want = {"sum": [12, 14], "mean": [6, 7], "max": [7, 8]}[mode]
    z = [0, 0]
    np.testing.assert_array_equal(bag(ids, W, np.array([0, 0, 2, 2]), mode=mode), [z, want, z, z])
    np.testing.assert_array_equal(
        bag(ids, W, np.array([0, 0, 2, 2]), mode=mode, include_last_offset=True), [z, want, z]
    )
    # every bag empty
    np.testing.assert_array_equal(bag(np.zeros(0, np.int64), W, np.array([0, 0]), mode=mode), [z, z])
    # no bags at all
    assert bag(np.zeros(0, np.int64), W, np.array([0]), mode=mode, include_last_offset=True).shape == (0, 2)


@pytest.mark.parametrize("id_dtype", [np.int32, np.int64])
def test_2d_input(id_dtype):
    ids = np.array([[0, 1], [2, 3], [1, 1]], id_dtype)
    np.testing.assert_array_equal(bag(ids, W, mode="sum"), [[4, 6], [12, 14], [6, 8]])
    np.testing.assert_array_equal(bag(ids, W, mode="mean"), [[2, 3], [6, 7], [3, 4]])
    np.testing.assert_array_equal(bag(ids, W, mode="max"), [[3, 4], [7, 8], [3, 4]])
    w = np.array([[1, 0], [2, 1], [0.5, 0.5]], np.float32)
    np.testing.assert_array_equal(bag(ids, W, mode="sum", per_sample_weights=w), [[1, 2], [17, 20], [3, 4]])
    np.testing.assert_array_equal(bag(ids, W, mode="mean", padding_idx=1), [[1, 2], [6, 7], [0, 0]])
    np.testing.assert_array_equal(bag(np.zeros((3, 0), id_dtype), W, mode="sum"), np.zeros((3, 2)))


def test_half_precision_weights_and_list_inputs():
    np.testing.assert_array_equal(bag(IDS, W.astype(np.float16), OFFSETS, mode="sum"), EXPECTED["sum"])
    np.testing.assert_array_equal(bag(IDS.tolist(), W, OFFSETS.tolist(), mode="sum"), EXPECTED["sum"])


def test_accumulates_in_double():
    w = np.array([[1e8], [1.0], [-1e8]], np.float32)
    # in fp32, 1e8 + 1 == 1e8 and the 1 is lost
    np.testing.assert_array_equal(bag(np.array([0, 1, 2]), w, np.array([0]), mode="sum"), [[1.0]])


def test_normalize_offsets():
    np.testing.assert_array_equal(validate_offsets(np.array([0, 2]), 5, False), [0, 2, 5])
    np.testing.assert_array_equal(validate_offsets(np.array([0, 2, 5], np.int32), 5, True), [0, 2, 5])
    assert validate_offsets(np.array([0, 2]), 5, False).dtype == np.int64


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"offsets": np.array([1, 2])}, "offsets\\[0\\] must be 0"),
        ({"offsets": np.array([1, 2, 5]), "include_last_offset": True}, "offsets\\[0\\] must be 0"),
        ({"offsets": np.array([0, 3, 2])}, "non-decreasing"),
        ({"offsets": np.array([0, 2, 1]), "include_last_offset": True}, "non-decreasing"),
        ({"offsets": np.array([0, 6])}, "non-decreasing|past the end"),
        ({"offsets": np.array([0, 2, 6]), "include_last_offset": True}, "past the end"),
        ({"offsets": np.array([], np.int64), "include_last_offset": True}, "at least one"),
        ({"offsets": np.array([0.0, 2.0])}, "integer"),
        ({"offsets": np.array([[0, 2]])}, "1-D"),
        ({"offsets": None}, "offsets are required"),
        ({"input": np.array([0, 1, 4, 3, 1])}, "input: 1 id\\(s\\) out of range .* first is 4 at position 2"),
        ({"input": np.array([0, 1, -1, 3, 1])}, "input: 1 id\\(s\\) out of range .*1 negative.* first is -1"),
        ({"input": np.array([0.0, 1.0])}, "integer ids"),
        ({"input": np.zeros((1, 1, 1), np.int64), "offsets": None}, "1-D .* or 2-D"),
        ({"input": np.zeros((2, 2), np.int64)}, "offsets must be None"),
        ({"weight": np.ones(4, np.float32)}, "weight must be 2-D"),
        ({"mode": "min"}, "mode must be one of"),
        ({"mode": "mean", "per_sample_weights": np.ones(5, np.float32)}, "only supported for mode='sum'"),
        ({"mode": "max", "per_sample_weights": np.ones(5, np.float32)}, "only supported for mode='sum'"),
        ({"mode": "sum", "per_sample_weights": np.ones(4, np.float32)}, "same shape"),
    ],
)
def test_errors(kwargs, match):
    args = {"input": IDS, "weight": W, "offsets": OFFSETS, **kwargs}
    with pytest.raises(DlrmlabError, match=match):
        embedding_bag(**args)


# --- against PyTorch -------------------------------------------------------------------------------------


def _random_case(seed: int) -> dict:
    rng = np.random.default_rng([seed, 0xEB])
    rows, dim = int(rng.integers(1, 40)), int(rng.integers(1, 20))
    weight = rng.standard_normal((rows, dim)).astype(np.float32)
    id_dtype = (np.int32, np.int64)[seed % 2]
    mode = ("sum", "mean")[(seed // 2) % 2]
    include_last_offset = bool(rng.integers(2))
    padding_idx = None
    if rng.random() < 0.4:
        padding_idx = int(rng.integers(-rows, rows))
    per_sample_weights = None
    if seed % 10 == 9:  # a 2-D case: fixed bag size, no offsets
        ids = rng.integers(0, rows, size=(int(rng.integers(1, 8)), int(rng.integers(1, 6)))).astype(id_dtype)
        offsets = None
    else:
        lengths = rng.integers(0, 7, size=int(rng.integers(1, 12)))
        lengths[rng.random(lengths.size) < 0.25] = 0  # empty bags, often
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(id_dtype)
        if not include_last_offset:
            offsets = offsets[:-1]
        ids = rng.integers(0, rows, size=int(lengths.sum())).astype(id_dtype)
        if padding_idx is not None and ids.size:
            ids[rng.random(ids.size) < 0.3] = padding_idx % rows  # make padding actually occur
    if mode == "sum" and rng.random() < 0.5:
        per_sample_weights = rng.standard_normal(ids.shape).astype(np.float32)
    return dict(
        input=ids,
        weight=weight,
        offsets=offsets,
        mode=mode,
        per_sample_weights=per_sample_weights,
        include_last_offset=include_last_offset if offsets is not None else False,
        padding_idx=padding_idx,
    )


@pytest.mark.torch
@pytest.mark.parametrize("seed", range(32))
def test_matches_torch(seed):
    import torch

    case = _random_case(seed)
    t = {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in case.items()}
    want = torch.nn.functional.embedding_bag(**t).numpy()
    got = embedding_bag(**case)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_random_cases_cover_the_features():
    cases = [_random_case(s) for s in range(32)]
    assert {c["mode"] for c in cases} == {"sum", "mean"}
    assert {c["input"].dtype for c in cases} == {np.dtype(np.int32), np.dtype(np.int64)}
    assert any(c["per_sample_weights"] is not None for c in cases)
    assert any(c["padding_idx"] is not None and c["padding_idx"] < 0 for c in cases)
    assert any(
        c["padding_idx"] is not None and np.isin(c["padding_idx"] % c["weight"].shape[0], c["input"]) for c in cases
    )
    assert any(c["input"].ndim == 2 for c in cases)
    assert any(c["include_last_offset"] for c in cases) and not all(c["include_last_offset"] for c in cases)
    empty = [
        c
        for c in cases
        if c["offsets"] is not None
        and (np.diff(validate_offsets(c["offsets"], c["input"].size, c["include_last_offset"])) == 0).any()
    ]
    assert empty
