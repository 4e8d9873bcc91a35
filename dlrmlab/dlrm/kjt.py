"""A KeyedJaggedTensor-like batch of sparse features: TorchRec's layout, without TorchRec.

``keys`` name the tables; ``values`` holds every id, key-major (all of key 0's bags, then key 1's, ...);
``offsets`` is CSR over the K x B bags (length K*B + 1, ``include_last_offset=True`` style);
``weights`` are optional per-sample weights, one per value.

Two things are kept beside the CSR, both so that nothing on the forward path has to read the device:

* ``length_per_key`` (host ints: ids per key), as TorchRec caches it: splitting ``values`` per key is then
  slicing with known bounds, no device-to-host sync;
* ``key_offsets``: each key's own CSR (starting at 0), what ``torch.nn.functional.embedding_bag`` wants
  per table. They are made once when the batch is made (the data loader's job, outside any timing).

A batch is immutable in place except through :meth:`copy_`, which overwrites every field (so a batch
captured in a CUDA graph can be refilled with the next batch of the same shape).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dlrmlab.errors import DlrmlabError


def _torch():
    try:
        import torch  # torch: optional and slow to import
    except Exception as e:  # torch is an optional extra
        raise DlrmlabError(f"dlrmlab.dlrm needs PyTorch, which does not import: {e}") from None
    return torch


@dataclass
class KeyedJaggedTensor:
    """Sparse features of one batch for K keys (tables) and B samples. See the module docstring."""

    keys: list[str]
    values: Any
    offsets: Any
    length_per_key: list[int]
    weights: Any = None
    key_offsets: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.keys = [str(k) for k in self.keys]
        self.length_per_key = [int(n) for n in self.length_per_key]
        k = len(self.keys)
        if k == 0:
            raise DlrmlabError("a KeyedJaggedTensor needs at least one key")
        if self.values.dim() != 1 or self.offsets.dim() != 1:
            raise DlrmlabError(
                f"values and offsets must be 1-D, got shapes {tuple(self.values.shape)} and {tuple(self.offsets.shape)}"
            )
        if self.values.dtype.is_floating_point or self.values.dtype.is_complex:
            raise DlrmlabError(f"values must hold integer ids, got {self.values.dtype}")
        nb = self.offsets.numel() - 1
        if nb < 0 or nb % k:
            raise DlrmlabError(f"offsets of shape {tuple(self.offsets.shape)} do not split into {k} keys x B bags + 1")
        if len(self.length_per_key) != k or sum(self.length_per_key) != self.values.numel():
            raise DlrmlabError(
                f"length_per_key {self.length_per_key} must have {k} entries summing to values' "
                f"{self.values.numel()} ids"
            )
        if self.weights is not None and tuple(self.weights.shape) != tuple(self.values.shape):
            raise DlrmlabError(
                f"weights of shape {tuple(self.weights.shape)} must match values of shape {tuple(self.values.shape)}"
            )
        if not self.key_offsets:
            self.key_offsets = self._local_offsets()
        elif len(self.key_offsets) != k:
            raise DlrmlabError(f"key_offsets has {len(self.key_offsets)} entries for {k} keys")

    # --- shape ---------------------------------------------------------------------------------------------

    @property
    def stride(self) -> int:
        """Batch size B (TorchRec's name)."""
        return (self.offsets.numel() - 1) // len(self.keys)

    @property
    def num_keys(self) -> int:
        return len(self.keys)

    @property
    def device(self) -> Any:
        return self.values.device

    def value_starts(self) -> list[int]:
        """Host offsets of each key's first id in ``values`` (length K + 1)."""
        return [0, *np.cumsum(self.length_per_key).tolist()]

    def _local_offsets(self) -> list[Any]:
        """Each key's CSR starting at 0 (device ops from host-known bounds: no sync)."""
        b, starts = self.stride, self.value_starts()
        off = self.offsets.to(self.values.dtype)
        return [off[t * b : (t + 1) * b + 1] - starts[t] for t in range(self.num_keys)]

    def table_offsets(self) -> Any:
        """Bag offsets of each key in the key-major bag order (length K + 1): the fast kernel's input."""
        torch = _torch()
        return torch.arange(0, (self.num_keys + 1) * self.stride, self.stride, dtype=torch.int64, device=self.device)

    # --- views ---------------------------------------------------------------------------------------------

    def split(self) -> list[tuple[Any, Any, Any]]:
        """Per key: (ids view, CSR offsets from 0, weights view or None). Slices only, no device work."""
        s = self.value_starts()
        out = []
        for t in range(self.num_keys):
            w = None if self.weights is None else self.weights[s[t] : s[t + 1]]
            out.append((self.values[s[t] : s[t + 1]], self.key_offsets[t], w))
        return out

    def to(self, device: Any) -> KeyedJaggedTensor:
        w = None if self.weights is None else self.weights.to(device)
        return KeyedJaggedTensor(
            self.keys, self.values.to(device), self.offsets.to(device), list(self.length_per_key), w,
            [o.to(device) for o in self.key_offsets],
        )

    def copy_(self, other: KeyedJaggedTensor) -> KeyedJaggedTensor:
        """Overwrite this batch's tensors with ``other``'s (same keys and shapes): refills graph inputs."""
        if other.keys != self.keys or other.length_per_key != self.length_per_key or other.stride != self.stride:
            raise DlrmlabError(
                f"copy_ needs the same keys and shapes: {self.num_keys} keys x B={self.stride}, "
                f"length_per_key {self.length_per_key}; got {other.num_keys} keys x B={other.stride}, "
                f"{other.length_per_key}"
            )
        if (self.weights is None) != (other.weights is None):
            raise DlrmlabError("copy_ needs weights on both batches or on neither")
        self.values.copy_(other.values, non_blocking=True)
        self.offsets.copy_(other.offsets, non_blocking=True)
        for a, b in zip(self.key_offsets, other.key_offsets, strict=True):
            a.copy_(b, non_blocking=True)
        if self.weights is not None:
            self.weights.copy_(other.weights, non_blocking=True)
        return self

    # --- construction --------------------------------------------------------------------------------------

    @classmethod
    def from_lengths(
        cls, keys: Sequence[str], values: Any, lengths: Any, weights: Any = None,
        length_per_key: Sequence[int] | None = None,
    ) -> KeyedJaggedTensor:
        """TorchRec's constructor: ``lengths`` (K*B ids per bag). Without ``length_per_key``, and with
        ``lengths`` on a GPU, it is computed on the host: one sync, here, never in forward."""
        torch = _torch()
        lengths = torch.as_tensor(lengths)
        k = len(keys)
        if lengths.dim() != 1 or lengths.numel() % max(k, 1):
            raise DlrmlabError(f"lengths of shape {tuple(lengths.shape)} do not split into {k} keys x B bags")
        offsets = torch.zeros(lengths.numel() + 1, dtype=torch.int64, device=lengths.device)
        torch.cumsum(lengths, 0, out=offsets[1:])
        if length_per_key is None:
            length_per_key = lengths.view(k, -1).sum(1).cpu().tolist()
        return cls(list(keys), torch.as_tensor(values, device=lengths.device), offsets, list(length_per_key), weights)

    @classmethod
    def from_batch(cls, batch: Any, device: Any = "cpu", keys: Sequence[str] | None = None) -> KeyedJaggedTensor:
        """From a :class:`dlrmlab.workload.Batch` (host NumPy): one upload per field, no sync afterwards."""
        torch = _torch()
        tables = batch.tables
        keys = list(keys) if keys is not None else [f"t{t}" for t in range(len(tables))]
        if len(keys) != len(tables):
            raise DlrmlabError(f"{len(keys)} keys for {len(tables)} tables")
        j = batch.jagged()

        def up(a: np.ndarray) -> Any:
            return torch.from_numpy(np.ascontiguousarray(a)).to(device)

        idt = j.indices.dtype
        key_offsets = [up(tb.offsets.astype(idt, copy=False)) for tb in tables]
        return cls(
            keys, up(j.indices), up(j.offsets.astype(np.int64, copy=False)), [int(tb.indices.size) for tb in tables],
            None if j.per_sample_weights is None else up(j.per_sample_weights.astype(np.float32, copy=False)),
            key_offsets,
        )
