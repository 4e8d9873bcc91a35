"""Prefetch policies (construction and validation), the combine description and the paper-family kernel
configuration."""

from __future__ import annotations

import numpy as np
import pytest

from dlrmlab import prefetch
from dlrmlab.config import Combine
from dlrmlab.errors import DlrmlabError
from dlrmlab.kernels import paper


@pytest.mark.parametrize(
    "kind,cls",
    [
        ("none", prefetch.NoPrefetch),
        ("register", prefetch.RegisterPrefetch),
        ("l1", prefetch.L1Prefetch),
        ("shared", prefetch.SharedStaging),
    ],
)
def test_make_prefetch_kinds(kind, cls):
    p = prefetch.make_prefetch(kind, 3)
    assert type(p) is cls
    assert p.name == kind
    if kind == "none":
        assert p.params() == {"prefetch": "none"}
    else:
        assert p.distance == 3
        assert p.params() == {"prefetch": kind, "prefetch_distance": 3}


def test_make_prefetch_default_is_none():
    assert prefetch.make_prefetch() == prefetch.NoPrefetch()


def test_make_prefetch_unknown_kind():
    with pytest.raises(DlrmlabError, match="unknown prefetch kind 'l2'"):
        prefetch.make_prefetch("l2")


@pytest.mark.parametrize("kind", ["register", "l1", "shared"])
@pytest.mark.parametrize("distance", [0, 17, 2.5, -1, "2"])
def test_bad_distance(kind, distance):
    with pytest.raises(DlrmlabError, match="prefetch distance"):
        prefetch.make_prefetch(kind, distance)


@pytest.mark.parametrize("kind", ["register", "l1", "shared"])
@pytest.mark.parametrize("distance", [1, 16])
def test_distance_bounds_accepted(kind, distance):
    assert prefetch.make_prefetch(kind, distance).distance == distance


@pytest.mark.parametrize("cls", [prefetch.RegisterPrefetch, prefetch.L1Prefetch, prefetch.SharedStaging])
def test_policies_validate_on_direct_construction(cls):
    with pytest.raises(DlrmlabError, match="prefetch distance"):
        cls(distance=0)


def test_numpy_integer_distance_accepted():
    assert prefetch.make_prefetch("register", np.int64(4)).distance == 4


# --- PaperConfig ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"mode": "max"}, "mode must be one of sum, mean, got 'max'"),
        ({"mode": "min"}, "mode"),
        ({"weighted": True, "mode": "mean"}, "per_sample_weights"),
    ],
)
def test_combine_validation(kwargs, match):
    with pytest.raises(DlrmlabError, match=match):
        Combine(**kwargs)


def test_combine_properties():
    assert Combine() == Combine("sum", False, False)
    assert Combine("mean").mean and not Combine("sum").mean
    assert not Combine().factors
    assert Combine(weighted=True).factors and Combine("mean", padded=True).factors
    assert Combine("sum", True, True).params() == {"mode": "sum", "weighted": True, "padded": True}


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"block": (48, 4)}, "block"),
        ({"block": (32, 64)}, "block"),  # 2048 threads
        ({"block": (0, 8)}, "block"),
        ({"block": (32, 0)}, "block"),
        ({"grid": 0}, "grid"),
        ({"dtype": "int8"}, "unknown table dtype 'int8'"),
    ],
)
def test_paper_config_validation(kwargs, match):
    with pytest.raises(DlrmlabError, match=match):
        paper.PaperConfig(**kwargs)


def test_paper_config_accepts_limits():
    assert paper.PaperConfig(block=(1024, 1)).block == (1024, 1)
    assert paper.PaperConfig(block=(32, 32)).block == (32, 32)
    assert paper.PaperConfig(combine=Combine("sum", weighted=True)).combine.weighted


def test_paper_config_params_default():
    assert paper.PaperConfig().params() == {
        "dtype": "float32",
        "mode": "sum",
        "weighted": False,
        "padded": False,
        "max_registers": None,
        "block": "32x8",
        "grid": 1024,
        "prefetch": "none",
    }


def test_paper_config_params_with_prefetch():
    cfg = paper.PaperConfig(
        dtype="float16", combine=Combine("mean", padded=True), prefetch=prefetch.make_prefetch("shared", 4),
        max_registers=42, block=(64, 2),
    )  # fmt: skip
    assert cfg.params() == {
        "dtype": "float16",
        "mode": "mean",
        "weighted": False,
        "padded": True,
        "max_registers": 42,
        "block": "64x2",
        "grid": 1024,
        "prefetch": "shared",
        "prefetch_distance": 4,
    }


def test_paper_config_from_knobs():
    cfg = paper.PaperConfig.from_knobs(
        "float16", Combine("mean", padded=True), prefetch="shared", prefetch_distance=4, max_registers=42,
        block=[64, 2], grid=7,
    )  # fmt: skip
    assert cfg == paper.PaperConfig(
        dtype="float16", combine=Combine("mean", padded=True), prefetch=prefetch.SharedStaging(4),
        max_registers=42, block=(64, 2), grid=7,
    )  # fmt: skip
    assert paper.PaperConfig.from_knobs() == paper.PaperConfig()
    assert paper.PaperConfig.from_knobs(prefetch="register").prefetch == prefetch.RegisterPrefetch(2)


@pytest.mark.parametrize(
    "knobs,match",
    [
        ({"max_registers": 8}, r"max_registers \(register cap\) must be in 16\.\.255"),
        ({"max_registers": 256}, "register cap"),
        ({"prefetch": "l2"}, "unknown prefetch kind"),
        ({"prefetch": "register", "prefetch_distance": 0}, "prefetch distance"),
        ({"block": (48, 4)}, "block"),
    ],
)
def test_paper_config_from_knobs_validates(knobs, match):
    with pytest.raises(DlrmlabError, match=match):
        paper.PaperConfig.from_knobs(**knobs)


def test_paper_config_is_hashable_and_builds_once():
    a = paper.PaperConfig(prefetch=prefetch.make_prefetch("register", 2))
    b = paper.PaperConfig(prefetch=prefetch.RegisterPrefetch(2))
    assert a == b and hash(a) == hash(b)
    assert paper.build(a) is paper.build(b)
