"""DLRM inference in PyTorch, with facebookresearch/dlrm's names and a pluggable embedding stage.

``arch_mlp_bot`` (dense features -> ... -> d, ReLU after each layer), the embedding stage (K tables of
width ``arch_sparse_feature_size`` = d), the dot interaction (pairwise dot products of the K + 1 vectors
[bottom output, pooled embeddings]; each pair once, no self-pairs; concatenated after the bottom output)
and ``arch_mlp_top`` (the interaction's width is prepended, as dlrm_s_pytorch does; ReLU, sigmoid after
the last layer). The dense layers are torch's (cuBLAS on a GPU); only the embedding stage changes with
``embedding=NAME``. Weights are seeded and random, drawn as DLRM draws them; inference only.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any

import torch

from dlrmlab import backend
from dlrmlab.dlrm.embedding import EmbeddingBagCollection
from dlrmlab.dlrm.kjt import KeyedJaggedTensor
from dlrmlab.errors import DlrmlabError
from dlrmlab.workload import preset

#: The paper artifact's dense layers: 256 dense features -> 128 -> 128 (= the embedding width); top MLP
#: (interaction width ->) 128 -> 64 -> 1.
ARCH_MLP_BOT = (256, 128, 128)
ARCH_MLP_TOP = (128, 64, 1)
STAGES = ("bottom_mlp", "embedding", "interaction", "top_mlp")


def _arch(text: str) -> str:
    return "-".join(str(n) for n in text)


def create_mlp(ln: Sequence[int], sigmoid_layer: int, generator: torch.Generator) -> torch.nn.Sequential:
    """Linear layers ``ln[0] -> ln[1] -> ...``; ReLU after each, sigmoid after layer ``sigmoid_layer``.
    Weights ~ N(0, sqrt(2 / (fan_in + fan_out))), biases ~ N(0, sqrt(1 / fan_out)), as DLRM draws them."""
    layers: list[torch.nn.Module] = []
    for i in range(len(ln) - 1):
        n, m = int(ln[i]), int(ln[i + 1])
        lin = torch.nn.Linear(n, m, bias=True)
        with torch.no_grad():
            lin.weight.normal_(0.0, math.sqrt(2.0 / (m + n)), generator=generator)
            lin.bias.normal_(0.0, math.sqrt(1.0 / m), generator=generator)
        layers += [lin, torch.nn.Sigmoid() if i == sigmoid_layer else torch.nn.ReLU()]
    return torch.nn.Sequential(*layers)


class DLRM(torch.nn.Module):
    """``forward(dense (B, arch_mlp_bot[0]) fp32, sparse KeyedJaggedTensor) -> (B, 1)`` click probability.

    ``embedding``: an :class:`EmbeddingBagCollection`, or an implementation name for a new one over
    ``embedding_sizes`` (default: the ``paper`` preset's 12 x 500,000 rows) of width
    ``arch_sparse_feature_size`` (default: the bottom MLP's output width).
    """

    def __init__(
        self, embedding: EmbeddingBagCollection | str = "torch", *, arch_mlp_bot: Sequence[int] = ARCH_MLP_BOT,
        arch_mlp_top: Sequence[int] = ARCH_MLP_TOP, arch_sparse_feature_size: int | None = None,
        embedding_sizes: Sequence[int] | None = None, device: Any = None, seed: int = 0, mode: str = "sum",
        dtype: str = "float32",
    ) -> None:
        super().__init__()
        self.arch_mlp_bot, self.arch_mlp_top = tuple(int(n) for n in arch_mlp_bot), tuple(int(n) for n in arch_mlp_top)
        if len(self.arch_mlp_bot) < 2 or len(self.arch_mlp_top) < 1 or min(self.arch_mlp_bot + self.arch_mlp_top) <= 0:
            raise DlrmlabError(f"bad MLP shapes: arch_mlp_bot {_arch(arch_mlp_bot)}, top {_arch(arch_mlp_top)}")
        if self.arch_mlp_top[-1] != 1:
            raise DlrmlabError(f"arch_mlp_top must end in 1 (a click probability), got {_arch(self.arch_mlp_top)}")
        d = self.arch_mlp_bot[-1] if arch_sparse_feature_size is None else int(arch_sparse_feature_size)
        if isinstance(embedding, str):
            if embedding_sizes is None:
                embedding_sizes = preset("paper").embedding_sizes
            embedding = EmbeddingBagCollection(embedding_sizes, d, embedding, mode=mode, dtype=dtype, device=device,
                                              seed=seed)
        elif arch_sparse_feature_size is not None and embedding.embedding_dim != d:
            raise DlrmlabError(
                f"arch_sparse_feature_size {d} but the embedding stage's tables are {embedding.embedding_dim} wide"
            )
        if embedding.embedding_dim != self.arch_mlp_bot[-1]:
            raise DlrmlabError(
                f"embedding width {embedding.embedding_dim} does not match the interaction: the bottom MLP "
                f"(arch_mlp_bot {_arch(self.arch_mlp_bot)}) ends at {self.arch_mlp_bot[-1]}, and the dot "
                "interaction needs both widths equal"
            )
        self.embedding = embedding
        gen = torch.Generator().manual_seed(int(seed) + 1)
        num_fea = embedding.num_tables + 1
        self.num_interactions = num_fea * (num_fea - 1) // 2 + self.arch_mlp_bot[-1]
        ln_top = (self.num_interactions, *self.arch_mlp_top)
        self.bot_l = create_mlp(self.arch_mlp_bot, -1, gen)
        self.top_l = create_mlp(ln_top, len(ln_top) - 2, gen)
        # DLRM's pair order: (1,0), (2,0), (2,1), (3,0), ... (the strict lower triangle of the symmetric Z,
        # i.e. the strict upper triangle's values). Buffers: no host-to-device copy inside forward.
        li = [i for i in range(num_fea) for j in range(i)]
        lj = [j for i in range(num_fea) for j in range(i)]
        self.register_buffer("li", torch.tensor(li, dtype=torch.int64))
        self.register_buffer("lj", torch.tensor(lj, dtype=torch.int64))
        self.requires_grad_(False)
        self.to(embedding.weight.device)

    @property
    def device(self) -> torch.device:
        return self.li.device

    def with_embedding(self, impl: str, placement: Any = "device") -> DLRM:
        """The same model (dense weights and tables shared, nothing copied) with another embedding name;
        a host or cached ``placement`` copies the tables into pinned host memory."""
        new = copy.copy(self)
        new._modules = dict(self._modules)
        new._buffers = dict(self._buffers)
        new._parameters = dict(self._parameters)
        new.embedding = self.embedding.with_impl(impl, placement)
        return new

    # --- validation ----------------------------------------------------------------------------------------

    def check(self, dense: torch.Tensor, sparse: KeyedJaggedTensor | int) -> None:
        """Shapes, dtypes and devices, on the host, before any launch. ``sparse`` may be a batch size."""
        if not isinstance(dense, torch.Tensor) or dense.dim() != 2:
            raise DlrmlabError(f"dense features must be a 2-D tensor (batch, {self.arch_mlp_bot[0]}), got "
                               f"{tuple(getattr(dense, 'shape', ()))}")  # fmt: skip
        if dense.shape[1] != self.arch_mlp_bot[0]:
            raise DlrmlabError(
                f"dense features of shape {tuple(dense.shape)} are {dense.shape[1]} wide but the bottom MLP "
                f"(arch_mlp_bot {_arch(self.arch_mlp_bot)}) takes {self.arch_mlp_bot[0]}"
            )
        if dense.dtype != torch.float32:
            raise DlrmlabError(f"dense features must be float32, got {dense.dtype}")
        if dense.device != self.device:
            raise DlrmlabError(f"dense features are on {dense.device} but the model on {self.device}")
        if isinstance(sparse, KeyedJaggedTensor):
            b, what = sparse.stride, f"offsets {tuple(sparse.offsets.shape)} over {sparse.num_keys} keys"
            self.embedding.check(sparse)
        else:
            b, what = int(sparse), "per-table offsets"
        if b != dense.shape[0]:
            raise DlrmlabError(
                f"dense and sparse batch sizes differ: dense {tuple(dense.shape)} has {dense.shape[0]} samples, "
                f"the sparse batch ({what}) {b}"
            )

    # --- forward -------------------------------------------------------------------------------------------

    def interact(self, x: torch.Tensor, ly: Sequence[torch.Tensor]) -> torch.Tensor:
        """DLRM's dot interaction: [x, pairwise dots of (x, *ly) without self-pairs], (B, num_interactions)."""
        b, d = x.shape
        t = torch.cat([x, *ly], dim=1).view(b, -1, d)
        z = torch.bmm(t, t.transpose(1, 2))
        return torch.cat([x, z[:, self.li, self.lj]], dim=1)

    def forward(self, dense: torch.Tensor, sparse: KeyedJaggedTensor, events: Sequence[Any] | None = None) -> Any:
        """Click probabilities (B, 1). ``events``: five events (``.record()``) put before, between and
        after the stages (bottom MLP, embedding, interaction, top MLP) on the current stream."""
        self.check(dense, sparse)
        return self._stages(dense, lambda: self.embedding(sparse), events)

    def forward_lists(
        self, dense: torch.Tensor, indices: Sequence[torch.Tensor], offsets: Sequence[torch.Tensor],
        per_sample_weights: Sequence[torch.Tensor | None] | None = None,
    ) -> torch.Tensor:
        """dlrm_s_pytorch's calling convention (lS_i, lS_o lists per table): what torch.compile traces."""
        self.check(dense, int(offsets[0].numel()) - int(self.embedding.include_last_offset))
        return self._stages(dense, lambda: self.embedding.forward_tables(indices, offsets, per_sample_weights), None)

    def _stages(self, dense: torch.Tensor, embed: Any, events: Sequence[Any] | None) -> torch.Tensor:
        rec = (lambda i: events[i].record()) if events else (lambda i: None)
        rec(0)
        x = self.bot_l(dense)
        rec(1)
        ly = embed()
        rec(2)
        z = self.interact(x, ly)
        rec(3)
        p = self.top_l(z)
        rec(4)
        return p


def make_dense(batch_size: int, num_dense: int = ARCH_MLP_BOT[0], seed: int = 0, device: Any = None) -> torch.Tensor:
    """Seeded dense features (B, num_dense), uniform in [0, 1) like DLRM's random data generator."""
    device = torch.device(device or ("cpu" if backend.SIMULATOR else "cuda"))
    g = torch.Generator().manual_seed(int(seed))
    return torch.rand((int(batch_size), int(num_dense)), generator=g).to(device)
