"""DLRM on the sharded stage: data-parallel dense layers and interaction, model-parallel embeddings.

Every rank keeps the same dense weights (seeded, as :class:`dlrmlab.dlrm.model.DLRM` draws them) and runs
the bottom MLP, the dot interaction and the top MLP on its own ``B_local`` samples; the embedding stage is
:class:`~dlrmlab.shard.stage.ShardedEmbeddingBagCollection`. Rank ``r``'s output equals one process's
DLRM on the global batch, rows ``r * B_local ...``.
"""

from __future__ import annotations

import torch

from dlrmlab.dlrm.kjt import KeyedJaggedTensor
from dlrmlab.dlrm.model import DLRM
from dlrmlab.errors import DlrmlabError
from dlrmlab.shard.stage import ShardedEmbeddingBagCollection


class ShardedDLRM(torch.nn.Module):
    """``forward(dense (B_local, n), kjt_local) -> (B_local, 1)``: ``model``'s dense layers (shared, not
    copied) around the sharded embedding stage ``stage``."""

    def __init__(self, model: DLRM, stage: ShardedEmbeddingBagCollection) -> None:
        super().__init__()
        if stage.k != model.embedding.num_tables or stage.dim != model.embedding.embedding_dim:
            raise DlrmlabError(f"the sharded stage has {stage.k} tables x {stage.dim}, the model "
                               f"{model.embedding.num_tables} x {model.embedding.embedding_dim}")  # fmt: skip
        self.dense_model, self.stage = model, stage

    def forward(self, dense: torch.Tensor, sparse: KeyedJaggedTensor) -> torch.Tensor:
        m = self.dense_model
        if dense.dim() != 2 or dense.shape[0] != sparse.stride or dense.shape[1] != m.arch_mlp_bot[0]:
            raise DlrmlabError(f"dense features of shape {tuple(dense.shape)}: need ({sparse.stride}, "
                               f"{m.arch_mlp_bot[0]}) for this rank's batch")  # fmt: skip
        x = m.bot_l(dense)
        ly = self.stage(sparse)
        return m.top_l(m.interact(x, ly))
