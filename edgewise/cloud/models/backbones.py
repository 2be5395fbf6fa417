"""Speech-emotion classifiers over log-mel features: (B, T, n_mels) float32 -> logits (B, n_classes).

Three families, all with a stride-4 convolutional front-end, a depthwise-conv positional
encoding (works for any length), mean pooling over time and a linear head:

* :class:`ConvTransformer` - pre-norm transformer encoder.
* :class:`Conformer` - macaron FFN / MHSA / conv module / FFN / LayerNorm blocks.
* :class:`SpeechFormer` - hierarchical: window attention over frames, average-merge to coarser
  units, wider windows, and so on up to the utterance.

Every FFN takes ``hrf_dim`` (see :mod:`edgewise.cloud.models.hrf`).
"""

from __future__ import annotations

from collections.abc import Sequence

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
