"""L2 budget split, L2 persistence guards in simulator mode, and the L2-pinning hot set and kernel."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import simulator_only

from dlrmlab import backend, cudart, l2pin, l2window
from dlrmlab.backend import cuda
from dlrmlab.errors import DlrmlabError

# Table 0: 4-byte rows, counts [10, 6, 2, 0] -> accesses/byte 2.5, 1.5, 0.5, 0
# Table 1: 8-byte rows, counts [30, 3, 0]    -> accesses/byte 3.75, 0.375, 0
# Greedy order: t1r0 (8 B), t0r0 (4 B), t0r1 (4 B), t0r2 (4 B), t1r1 (8 B); cumulative 8, 12, 16, 20, 28.
COUNTS = [np.array([10, 6, 2, 0]), np.array([30, 3, 0])]
ROW_BYTES = [4, 8]


@pytest.mark.parametrize(
    "budget,expected",
    [
        (0, [0, 0]),
        (7, [0, 0]),  # not even the densest row fits
        (8, [0, 1]),  # the densest row per byte is table 1's, although it is the larger row
        (11, [0, 1]),  # t0r0 would make 12: greedy stops
        (12, [1, 1]),
        (16, [2, 1]),  # exactly fits three rows
        (20, [3, 1]),
        (27, [3, 1]),
        (28, [3, 2]),  # every accessed row
        (10_000, [3, 2]),  # zero-count rows are never taken
    ],
)
def test_split_budget_greedy_by_accesses_per_byte(budget, expected):
    assert l2window.split_budget(COUNTS, ROW_BYTES, budget) == expected


def test_split_budget_returns_plain_ints_per_table():
    out = l2window.split_budget(COUNTS + [np.zeros(5, np.int64)], ROW_BYTES + [4], 1 << 20)
    assert out == [3, 2, 0]
    assert all(type(n) is int for n in out)


def test_split_budget_ties_prefer_earlier_tables():
    # equal density everywhere: stable order takes table 0's rows first
    counts = [np.array([4, 4]), np.array([4, 4])]
    assert l2window.split_budget(counts, [4, 4], 12) == [2, 1]


def test_split_budget_rejects_negative_budget():
    with pytest.raises(DlrmlabError, match=">= 0"):
        l2window.split_budget(COUNTS, ROW_BYTES, -1)


@pytest.fixture
def cudart_untouchable(monkeypatch):
    """Every cudart call that changes or reads L2 state fails the test if made."""
    calls = []

    def forbid(name):
        def f(*args, **kwargs):
            calls.append(name)
            raise AssertionError(f"cudart.{name} must not be called")

        return f

    for name in ("set_persisting_l2_limit", "get_persisting_l2_limit", "reset_persisting_l2",
                 "set_access_policy_window", "device_properties"):  # fmt: skip
        monkeypatch.setattr(cudart, name, forbid(name))
    monkeypatch.setattr(l2window, "device_properties", forbid("device_properties"))
    return calls


@simulator_only
def test_l2_limits_needs_gpu(cudart_untouchable):
    with pytest.raises(DlrmlabError, match="needs a CUDA GPU"):
        l2window.l2_limits()
    assert cudart_untouchable == []


@simulator_only
@pytest.mark.parametrize("limit", [1 << 20, 0])
def test_persisting_l2_raises_before_touching_state(cudart_untouchable, limit):
    entered = False
    with pytest.raises(DlrmlabError, match="needs a CUDA GPU"):
        with l2window.persisting_l2(limit):
            entered = True
    assert not entered
    assert cudart_untouchable == []


def test_set_window_validates_before_cudart(cudart_untouchable):
    h = l2window.PersistingL2(limit_bytes=1 << 20, max_window=4096)
    with pytest.raises(DlrmlabError, match="over the device maximum"):
        h.set_window(0, 0x1000, 4097)
    with pytest.raises(DlrmlabError, match="hitRatio"):
        h.set_window(0, 0x1000, 1024, hit_ratio=1.5)
    with pytest.raises(DlrmlabError, match="hitRatio"):
        h.set_window(0, 0x1000, 1024, hit_ratio=-0.1)
    assert cudart_untouchable == []
    assert h._streams == []


# --- L2P pin kernel --------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype,dim", [(np.float32, 32), (np.float16, 70)])
def test_pin_runs_in_simulator(dtype, dim):
    rows = 20
    w = np.arange(rows * dim, dtype=np.float32).astype(dtype)
    w_dev = cuda.to_device(w)
    hot_dev = cuda.to_device(np.array([0, 5, rows - 1], np.int64))
    l2pin.pin(w_dev, dim, hot_dev, np.dtype(dtype).itemsize)
    cuda.synchronize()
    np.testing.assert_array_equal(w_dev.copy_to_host(), w)  # a prefetch never changes the table


def test_gpu_without_l2_persistence_is_refused_before_any_state_change(monkeypatch):
    """A GPU reporting no persisting L2 (pre-Ampere) gets a clear error; no cudart call changes state."""
    from dlrmlab import cudart, l2window

    monkeypatch.setattr(backend, "SIMULATOR", False)
    props = {"name": "Old GPU", "persisting_l2_max_bytes": 0, "access_policy_max_window_bytes": 0}
    monkeypatch.setattr(l2window, "device_properties", lambda device=0: props)
    for name in (
        "set_persisting_l2_limit",
        "set_access_policy_window",
        "reset_persisting_l2",
        "get_persisting_l2_limit",
    ):
        monkeypatch.setattr(cudart, name, lambda *a, **k: pytest.fail("L2 state touched"))
    with pytest.raises(DlrmlabError, match="does not support L2 persistence"):
        with l2window.persisting_l2(1 << 20):
            pass
