"""DLRM inference end to end: a PyTorch model whose embedding stage is pluggable by name.

:class:`~dlrmlab.dlrm.model.DLRM` (facebookresearch/dlrm's names), the embedding stage as a torch module
(:class:`~dlrmlab.dlrm.embedding.EmbeddingBagCollection`) over a KeyedJaggedTensor-like batch
(:class:`~dlrmlab.dlrm.kjt.KeyedJaggedTensor`), CUDA-graph capture (:mod:`dlrmlab.dlrm.graph`), stage
timing and the batch-size sweep (:mod:`dlrmlab.dlrm.measure`), figures (:mod:`dlrmlab.dlrm.plots`).
Needs PyTorch (the ``torch`` extra); imported lazily, so ``dlrmlab`` itself starts without it.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "DLRM": "model", "make_dense": "model", "EmbeddingBagCollection": "embedding", "implementations": "embedding",
    "embedding_names": "embedding", "resolve": "embedding", "KeyedJaggedTensor": "kjt", "CapturedCall": "graph",
    "run_dlrm": "measure",
}  # fmt: skip

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(f"dlrmlab.dlrm.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'dlrmlab.dlrm' has no attribute {name!r}")
