"""Typed parameters, validated once at the boundary (CLI, API, variants) and trusted below it.

* :data:`TABLE_DTYPES` — the one table of table storage types (NumPy storage, bytes, 16-byte vector width).
* :class:`Combine` — how a bag's rows are combined: PyTorch's ``mode``, ``per_sample_weights``,
  ``padding_idx``.
* :class:`BoundsCheck` — what the fast kernel does with an id outside its table (FBGEMM's ``BoundsCheckMode``).
* :func:`json_object`, :func:`positive_int`, :func:`register_cap` — a user's knobs and numbers, checked.

Which knobs each kernel family takes lives with the family (``KNOBS`` of :mod:`dlrmlab.kernels.paper`,
:mod:`dlrmlab.kernels.fused`, each peer); :data:`dlrmlab.variants.KNOBS` gathers them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np

from dlrmlab.errors import DlrmlabError


@dataclass(frozen=True)
class TableDType:
    """How a table dtype is stored and loaded. bfloat16 is stored as uint16 bit patterns (NumPy has none)."""

    name: str
    storage: np.dtype
    bytes: int
    #: elements in one 16-byte vector load
    vector: int


TABLE_DTYPES: dict[str, TableDType] = {
    "float32": TableDType("float32", np.dtype(np.float32), 4, 4),
    "float16": TableDType("float16", np.dtype(np.float16), 2, 8),
    "bfloat16": TableDType("bfloat16", np.dtype(np.uint16), 2, 8),
}
INDEX_DTYPES = ("int32", "int64")

#: Modes dlrmlab's kernels implement (the NumPy reference also knows torch's "max").
KERNEL_MODES = ("sum", "mean")


def table_dtype(name: str) -> TableDType:
    if name not in TABLE_DTYPES:
        raise DlrmlabError(f"unknown table dtype {name!r}; valid: {', '.join(TABLE_DTYPES)}")
    return TABLE_DTYPES[name]


@dataclass(frozen=True)
class Combine:
    """How rows of a bag are combined, in torch's terms. ``weighted``: per_sample_weights are given;
    ``padded``: a padding_idx is set (its rows count zero, and a mean's count skips them)."""

    mode: str = "sum"
    weighted: bool = False
    padded: bool = False

    def __post_init__(self) -> None:
        if self.mode not in KERNEL_MODES:
            raise DlrmlabError(f"mode must be one of {', '.join(KERNEL_MODES)}, got {self.mode!r}")
        if self.weighted and self.mode != "sum":
            raise DlrmlabError("per_sample_weights is only supported for mode='sum' (as in torch)")

    @property
    def mean(self) -> bool:
        return self.mode == "mean"

    @property
    def factors(self) -> bool:
        """Rows are scaled (by a weight, or by 0 for padding) before they are added."""
        return self.weighted or self.padded

    def params(self) -> dict:
        return {"mode": self.mode, "weighted": self.weighted, "padded": self.padded}


class BoundsCheck(StrEnum):
    """What the fast kernel does with an id outside its table, by the names of FBGEMM's ``BoundsCheckMode``.

    The kernel knows only whether it checks (:attr:`checks`: one compile-time flag, one compiled kernel for
    every checking mode): a bad id is not read, adds nothing to its bag, and is counted with its first position;
    the host decides what the count means. Unlike FBGEMM, whose WARNING and IGNORE read row 0 in its place, a
    skipped id adds nothing (as a ``padding_idx`` row does)."""

    #: no device check (the fastest): every id is trusted and read
    NONE = "none"
    #: check, and raise a DlrmlabError after the launch naming how many ids were bad and the first
    FATAL = "fatal"
    #: check, skip bad ids, and warn once per launch with how many and the first position
    WARNING = "warning"
    #: check and skip bad ids silently (the counters are not read back: no sync)
    IGNORE = "ignore"

    @property
    def checks(self) -> bool:
        """The kernel checks every id against its table's rows."""
        return self is not BoundsCheck.NONE

    @classmethod
    def parse(cls, value: BoundsCheck | str | bool) -> BoundsCheck:
        """A user's mode by name; ``True`` is :attr:`FATAL` and ``False`` :attr:`NONE` (the earlier
        ``checked`` switch)."""
        if isinstance(value, bool):
            return cls.FATAL if value else cls.NONE
        if value not in tuple(cls):
            raise DlrmlabError(f"bounds_check must be one of {', '.join(repr(v.value) for v in cls)} (or True for "
                               f"'fatal', False for 'none'), got {value!r}")
        return cls(value)


def json_object(text: str, option: str) -> dict:
    """``text`` parsed as a JSON object (an option's knobs); anything else is a user error naming ``option``."""
    try:
        value = json.loads(text)
    except ValueError as e:
        raise DlrmlabError(f"{option}: not JSON ({e}): {text!r}") from None
    if not isinstance(value, dict):
        raise DlrmlabError(f"{option}: expected a JSON object of knob -> value, got {text!r}")
    return value


def positive_int(name: str, value: Any, low: int = 1, high: int | None = None) -> int:
    """``value`` as an int in [low, high], or a DlrmlabError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer | float) or int(value) != value:
        raise DlrmlabError(f"{name} must be an integer, got {value!r}")
    v = int(value)
    if v < low or (high is not None and v > high):
        span = f"{low}..{high}" if high is not None else f">= {low}"
        raise DlrmlabError(f"{name} must be in {span}, got {v}")
    return v


MIN_REGISTERS, MAX_REGISTERS = 16, 255


def register_cap(cap: Any) -> int | None:
    """A ``max_registers`` value (None: no cap), validated."""
    return None if cap is None else positive_int("max_registers (register cap)", cap, MIN_REGISTERS, MAX_REGISTERS)
