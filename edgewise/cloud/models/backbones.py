"""Speech-emotion classifiers over log-mel features: (B, T, n_mels) float32 -> logits (B, n_classes).

Three families, all with a stride-4 convolutional front-end, a depthwise-conv positional
encoding (works for any length), mean pooling over time and a linear head:

* :class:`ConvTransformer` - pre-norm transformer encoder.
* :class:`Conformer` - macaron FFN / MHSA / conv module / FFN / LayerNorm blocks.
* :class:`SpeechFormer` - hierarchical: window attention over frames, average-merge to coarser
  units, wider windows, and so on up to the utterance.
* :class:`DynamicGraph` - graphs rebuilt per input over the frames of each window (a learned
  adjacency next to the similarity one, degree-normalized updates), then over the windows, with a
  graph-structure loss beside the classification loss.

Every FFN takes ``hrf_dim`` (see :mod:`edgewise.cloud.models.hrf`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edgewise.cloud.models.layers import (
    ConformerConvModule,
    ConvPositionalEncoding,
    ConvSubsampling,
    FeedForward,
    MultiHeadSelfAttention,
    merge_tokens,
    windowed_self_attention,
)


class TransformerBlock(nn.Module):
    """Pre-norm block: ``x + attn(norm(x))`` then ``x + ffn(x)``; ``window`` makes attention local."""

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        d_ff: int,
        dropout: float = 0.0,
        hrf_dim: int | None = None,
        window: int | None = None,
    ) -> None:
        super().__init__()
        self.window = window
        self.norm = nn.LayerNorm(d_model)
        self.attn = MultiHeadSelfAttention(d_model, n_heads, dropout)
        self.dropout = nn.Dropout(dropout)
        self.ffn = FeedForward(d_model, d_ff, dropout, nn.GELU, hrf_dim)

    def forward(self, x: Tensor) -> Tensor:
        h = self.norm(x)
        h = self.attn(h) if self.window is None else windowed_self_attention(self.attn, h, self.window)
        x = x + self.dropout(h)
        return x + self.ffn(x)


class ConformerBlock(nn.Module):
    """Half-step FFN, MHSA, conv module, half-step FFN, LayerNorm (Gulati et al., 2020)."""

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        d_ff: int,
        conv_kernel: int,
        dropout: float = 0.0,
        hrf_dim: int | None = None,
    ) -> None:
        super().__init__()
        self.ffn1 = FeedForward(d_model, d_ff, dropout, nn.SiLU, hrf_dim)
        self.attn_norm = nn.LayerNorm(d_model)
        self.attn = MultiHeadSelfAttention(d_model, n_heads, dropout)
        self.attn_dropout = nn.Dropout(dropout)
        self.conv = ConformerConvModule(d_model, conv_kernel, dropout)
        self.ffn2 = FeedForward(d_model, d_ff, dropout, nn.SiLU, hrf_dim)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: Tensor) -> Tensor:
        x = x + 0.5 * self.ffn1(x)
        x = x + self.attn_dropout(self.attn(self.attn_norm(x)))
        x = x + self.conv(x)
        x = x + 0.5 * self.ffn2(x)
        return self.norm(x)


class ClassifierHead(nn.Module):
    """Dropout then Linear on the pooled utterance vector."""

    def __init__(self, d_model: int, n_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(d_model, n_classes)

    def forward(self, pooled: Tensor) -> Tensor:
        return self.fc(self.dropout(pooled))


class SERBackbone(nn.Module):
    """Common interface: ``encode`` gives (B, T', d_model); mean over time; linear head."""

    d_model: int
    n_classes: int
    head: ClassifierHead

    def encode(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def forward_with_hidden(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Logits (B, n_classes) and the pooled hidden state (B, d_model) for distillation."""
        pooled = self.encode(x).mean(dim=1)
        return self.head(pooled), pooled

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_with_hidden(x)[0]


class ConvTransformer(SERBackbone):
    """Conv subsampling + pre-norm transformer encoder + mean pooling."""

    def __init__(
        self,
        n_mels: int,
        n_classes: int,
        d_model: int,
        n_layers: int,
        n_heads: int,
        d_ff: int,
        dropout: float = 0.1,
        hrf_dim: int | None = None,
        pos_kernel: int = 15,
    ) -> None:
        super().__init__()
        self.d_model, self.n_classes = d_model, n_classes
        self.subsample = ConvSubsampling(n_mels, d_model)
        self.pos = ConvPositionalEncoding(d_model, pos_kernel)
        self.blocks = nn.ModuleList(
            TransformerBlock(d_model, n_heads, d_ff, dropout, hrf_dim) for _ in range(n_layers)
        )
        self.norm = nn.LayerNorm(d_model)
        self.head = ClassifierHead(d_model, n_classes, dropout)

    def encode(self, x: Tensor) -> Tensor:
        x = self.pos(self.subsample(x))
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


class Conformer(SERBackbone):
    """Conv subsampling + Conformer blocks + mean pooling."""

    def __init__(
        self,
        n_mels: int,
        n_classes: int,
        d_model: int,
        n_layers: int,
        n_heads: int,
        d_ff: int,
        conv_kernel: int = 15,
        dropout: float = 0.1,
        hrf_dim: int | None = None,
        pos_kernel: int = 15,
    ) -> None:
        super().__init__()
        self.d_model, self.n_classes = d_model, n_classes
        self.subsample = ConvSubsampling(n_mels, d_model)
        self.pos = ConvPositionalEncoding(d_model, pos_kernel)
        self.blocks = nn.ModuleList(
            ConformerBlock(d_model, n_heads, d_ff, conv_kernel, dropout, hrf_dim) for _ in range(n_layers)
        )
        self.head = ClassifierHead(d_model, n_classes, dropout)

    def encode(self, x: Tensor) -> Tensor:
        x = self.pos(self.subsample(x))
        for block in self.blocks:
            x = block(x)
        return x


class SpeechFormerStage(nn.Module):
    """``depth`` transformer blocks sharing one attention window (None: the whole sequence)."""

    def __init__(
        self,
        depth: int,
        window: int | None,
        d_model: int,
        n_heads: int,
        d_ff: int,
        dropout: float = 0.0,
        hrf_dim: int | None = None,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            TransformerBlock(d_model, n_heads, d_ff, dropout, hrf_dim, window) for _ in range(depth)
        )

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x)
        return x


class SpeechFormer(SERBackbone):
    """SpeechFormer-style hierarchy (Chen et al., 2022) at one width.

    ``stages`` is a sequence of ``(depth, window)``; between stages, ``merge_factor`` consecutive
    units are averaged into one. After a stride-4 front-end at a 10 ms hop, windows of 8 cover
    about 320 ms of frames, then 640 ms of 80 ms units, and a last ``window=None`` stage attends
    over the whole utterance: the window grows in time at every stage.
    """

    def __init__(
        self,
        n_mels: int,
        n_classes: int,
        d_model: int,
        n_heads: int,
        d_ff: int,
        stages: Sequence[tuple[int, int | None]],
        merge_factor: int = 2,
        dropout: float = 0.1,
        hrf_dim: int | None = None,
        pos_kernel: int = 15,
    ) -> None:
        super().__init__()
        if not stages:
            raise ValueError("SpeechFormer needs at least one stage")
        self.d_model, self.n_classes = d_model, n_classes
        self.merge_factor = merge_factor
        self.subsample = ConvSubsampling(n_mels, d_model)
        self.pos = ConvPositionalEncoding(d_model, pos_kernel)
        self.stages = nn.ModuleList(
            SpeechFormerStage(depth, window, d_model, n_heads, d_ff, dropout, hrf_dim)
            for depth, window in stages
        )
        self.norm = nn.LayerNorm(d_model)
        self.head = ClassifierHead(d_model, n_classes, dropout)

    def encode(self, x: Tensor) -> Tensor:
        x = self.pos(self.subsample(x))
        for i, stage in enumerate(self.stages):
            if i > 0:
                x = merge_tokens(x, self.merge_factor)
            x = stage(x)
        return self.norm(x)


class GraphLayer(nn.Module):
    """One dynamic-graph layer over nodes (B, N, D) with a validity mask (B, N).

    Edges are soft, in [0, 1]: the sigmoid of a learned similarity between the nodes (the graph is
    rebuilt for every input, so it is dynamic), plus a learned position-to-position adjacency when
    the number of nodes is fixed (``nodes``: the frames of a window). The update averages the
    neighbours' messages with the symmetric degree normalization ``D^-1/2 A D^-1/2``, so a node's
    pull on another is weighted down by how connected both are; then an FFN (with HRF).
    :attr:`structure_loss` (after a forward) is the graph-structure loss of this layer's adjacency:
    smoothness (connected nodes should be alike) with a log-degree barrier against an empty graph
    and a Frobenius penalty against a full one.
    """

    def __init__(
        self,
        d_model: int,
        d_ff: int,
        nodes: int | None = None,
        dropout: float = 0.0,
        hrf_dim: int | None = None,
    ) -> None:
        super().__init__()
        self.d_edge = max(8, d_model // 4)
        self.norm = nn.LayerNorm(d_model)
        self.query = nn.Linear(d_model, self.d_edge)
        self.key = nn.Linear(d_model, self.d_edge)
        self.static = nn.Parameter(torch.zeros(nodes, nodes)) if nodes else None
        self.message = nn.Linear(d_model, d_model)
        self.dropout = nn.Dropout(dropout)
        self.ffn = FeedForward(d_model, d_ff, dropout, nn.GELU, hrf_dim)
        self.structure_loss: Tensor | None = None

    def forward(self, x: Tensor, valid: Tensor) -> Tensor:
        h = self.norm(x)
        scores = self.query(h) @ self.key(h).transpose(1, 2) / self.d_edge**0.5
        if self.static is not None:
            scores = scores + self.static
        pair = valid[:, :, None] * valid[:, None, :]
        adj = torch.sigmoid(scores) * pair
        degree = adj.sum(-1).clamp_min(1e-6)
        inv_sqrt = degree.rsqrt()
        norm_adj = adj * inv_sqrt[:, :, None] * inv_sqrt[:, None, :]
        x = x + self.dropout(self.message(norm_adj @ h))
        x = x + self.ffn(x)
        if self.training:
            sq = (h * h).sum(-1)
            dist = (sq[:, :, None] + sq[:, None, :] - 2 * h @ h.transpose(1, 2)).clamp_min(0) / h.shape[-1]
            pairs = pair.sum().clamp_min(1.0)
            smooth = (adj * dist).sum() / pairs
            barrier = -(torch.log(degree) * valid).sum() / valid.sum().clamp_min(1.0)
            dense = (adj * adj).sum() / pairs
            self.structure_loss = smooth + 0.1 * barrier + dense
        else:
            self.structure_loss = None
        return x


class DynamicGraph(SERBackbone):
    """Dynamic-graph SER backbone: graphs over the frames of each window, then over the windows.

    After the stride-4 front-end, the frames are cut into non-overlapping windows of ``window``
    frames (the last one zero-padded and masked); ``local_layers`` graph layers run inside each
    window with a learned in-window adjacency next to the dynamic one; each window's real frames
    are averaged into one node, and ``global_layers`` graph layers connect the windows of the
    utterance. :meth:`pop_structure_loss` gives the layers' graph-structure loss of the last training
    forward; the trainer adds it, weighted by ``graph_loss``, to the classification loss.
    """

    def __init__(
        self,
        n_mels: int,
        n_classes: int,
        d_model: int,
        d_ff: int,
        window: int,
        local_layers: int,
        global_layers: int,
        dropout: float = 0.1,
        hrf_dim: int | None = None,
        pos_kernel: int = 15,
    ) -> None:
        super().__init__()
        self.d_model, self.n_classes, self.window = d_model, n_classes, window
        self.subsample = ConvSubsampling(n_mels, d_model)
        self.pos = ConvPositionalEncoding(d_model, pos_kernel)
        self.local = nn.ModuleList(
            GraphLayer(d_model, d_ff, window, dropout, hrf_dim) for _ in range(local_layers)
        )
        self.across = nn.ModuleList(
            GraphLayer(d_model, d_ff, None, dropout, hrf_dim) for _ in range(global_layers)
        )
        self.norm = nn.LayerNorm(d_model)
        self.head = ClassifierHead(d_model, n_classes, dropout)

    def pop_structure_loss(self) -> Tensor | None:
        """The mean graph-structure loss of the layers in the last training forward, once: the
        layers let go of it (a module holding a graph tensor cannot be deep-copied or merged)."""
        layers = (*self.local, *self.across)
        losses = [layer.structure_loss for layer in layers if layer.structure_loss is not None]
        for layer in layers:
            layer.structure_loss = None
        return sum(losses) / len(losses) if losses else None

    def encode(self, x: Tensor) -> Tensor:
        x = self.pos(self.subsample(x))
        batch, length, dim = x.shape
        pad = (-length) % self.window
        valid = F.pad(torch.ones_like(x[..., 0]), (0, pad)).reshape(-1, self.window)  # (B * n_win, W)
        nodes = F.pad(x, (0, 0, 0, pad)).reshape(-1, self.window, dim)  # (B * n_win, W, D)
        for layer in self.local:
            nodes = layer(nodes, valid)
        counts = valid.sum(-1, keepdim=True)  # >= 1: only the last window is padded, never empty
        windows = ((nodes * valid[..., None]).sum(1) / counts).reshape(batch, -1, dim)  # (B, n_win, D)
        every = torch.ones_like(windows[..., 0])
        for layer in self.across:
            windows = layer(windows, every)
        return self.norm(windows)
