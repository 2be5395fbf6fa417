"""Building blocks shared by the backbones: attention, feed-forward, convolution modules.

All tensors are (batch, time, channels) unless said otherwise. Nothing here turns a shape into a
Python int for control flow, so the blocks trace with a dynamic batch and time axis
(``torch.onnx.export(..., dynamo=True)``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edgewise.cloud.models.hrf import fuse_linear_linear


class MultiHeadSelfAttention(nn.Module):
    """Self-attention via ``F.scaled_dot_product_attention`` (no time length baked into reshapes)."""

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}")
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        self.attn_dropout = dropout
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, x: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        """``attn_mask``: bool, True where a query may attend a key, broadcastable to (B, H, T, T)."""
        qkv = self.qkv(x).unflatten(-1, (3, self.n_heads, self.head_dim))
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, T, head_dim)
        dropout_p = self.attn_dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p)
        return self.proj(out.transpose(1, 2).flatten(2))


def windowed_self_attention(
    attn: MultiHeadSelfAttention, x: Tensor, window: int, mask: Tensor | None = None
) -> Tensor:
    """``attn`` within non-overlapping windows of ``window`` frames, for any length.

    The sequence is zero-padded to a multiple of the window; padded frames are masked out as keys
    and their outputs are sliced away, so results do not depend on the padding. ``mask`` (B, T),
    1 for real frames, masks padding the caller added too (a fixed-length graph's frames past the
    input's end): real frames then get exactly what they get without it. A window with no real
    frame attends to all of its keys (any output is finite; the caller masks it away).
    """
    length = x.shape[1]
    pad = (-length) % window
    frames = torch.ones_like(x[..., 0]) if mask is None else mask.to(x.dtype)
    valid = F.pad(frames, (0, pad))  # (B, T_padded)
    windows = F.pad(x, (0, 0, 0, pad)).unflatten(1, (-1, window)).flatten(0, 1)  # (B * n_win, window, D)
    key_mask = valid.reshape(-1, 1, 1, window) > 0  # (B * n_win, 1, 1, window)
    key_mask = key_mask | ~key_mask.any(-1, keepdim=True)  # no window without a key (NaN otherwise)
    out = attn(windows, attn_mask=key_mask)
    return out.reshape(x.shape[0], -1, x.shape[2])[:, :length]


def merge_tokens(x: Tensor, factor: int) -> Tensor:
    """Average consecutive groups of ``factor`` frames; a shorter last group averages what it has."""
    pad = (-x.shape[1]) % factor
    summed = F.pad(x, (0, 0, 0, pad)).unflatten(1, (-1, factor)).sum(2)
    counts = F.pad(torch.ones_like(x[..., :1]), (0, 0, 0, pad)).unflatten(1, (-1, factor)).sum(2)
    return summed / counts


class FeedForward(nn.Module):
    """Pre-norm FFN: norm -> [hrf] -> fc1 -> act -> dropout -> fc2 -> dropout (residual outside).

    ``hrf_dim`` adds the training-time HRF linear layer of that width; ``deploy=True`` (or
    :meth:`reparameterize`) gives the plain form, whose modules and state_dict keys are those of
    the block built with ``hrf_dim=None``.
    """

    def __init__(
        self,
        d_model: int,
        d_ff: int,
        dropout: float = 0.0,
        activation: type[nn.Module] = nn.GELU,
        hrf_dim: int | None = None,
        deploy: bool = False,
    ) -> None:
        super().__init__()
        self.deploy = deploy or hrf_dim is None
        self.norm = nn.LayerNorm(d_model)
        self.hrf: nn.Linear | None = None
        if not self.deploy:
            self.hrf = nn.Linear(d_model, hrf_dim)
            # Start as an isometry (or a projection when hrf_dim < d_model): the training form
            # then begins as a plain FFN instead of one whose input is shrunk by a random map.
            nn.init.orthogonal_(self.hrf.weight)
            nn.init.zeros_(self.hrf.bias)
        self.fc1 = nn.Linear(hrf_dim if self.hrf is not None else d_model, d_ff)
        self.act = activation()
        self.dropout1 = nn.Dropout(dropout)
        self.fc2 = nn.Linear(d_ff, d_model)
        self.dropout2 = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        x = self.norm(x)
        if self.hrf is not None:
            x = self.hrf(x)
        return self.dropout2(self.fc2(self.dropout1(self.act(self.fc1(x)))))

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Merge ``hrf`` into ``fc1`` and drop it (idempotent)."""
        if self.hrf is not None:
            self.fc1 = fuse_linear_linear(self.hrf, self.fc1)
            del self.hrf
            self.hrf = None
        self.deploy = True


class ConvSubsampling(nn.Module):
    """Two stride-2 Conv1d layers over time (stride 4 in all): (B, T, n_mels) -> (B, ceil(T/4), d)."""

    def __init__(self, in_features: int, d_model: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(in_features, d_model, kernel_size=3, stride=2, padding=1)
        self.act1 = nn.GELU()
        self.conv2 = nn.Conv1d(d_model, d_model, kernel_size=3, stride=2, padding=1)
        self.act2 = nn.GELU()

    def forward(self, x: Tensor) -> Tensor:
        x = self.act1(self.conv1(x.transpose(1, 2)))
        return self.act2(self.conv2(x)).transpose(1, 2)


class ConvPositionalEncoding(nn.Module):
    """Length-agnostic relative position signal: ``x + GELU(depthwise_conv(x))`` (wav2vec 2.0, CPVT)."""

    def __init__(self, d_model: int, kernel_size: int = 15) -> None:
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        self.conv = nn.Conv1d(d_model, d_model, kernel_size, padding=kernel_size // 2, groups=d_model)
        self.act = nn.GELU()

    def forward(self, x: Tensor) -> Tensor:
        return x + self.act(self.conv(x.transpose(1, 2))).transpose(1, 2)


class ConformerConvModule(nn.Module):
    """LayerNorm -> pointwise (2d) -> GLU -> depthwise -> BatchNorm -> SiLU -> pointwise -> dropout.

    ``depthwise`` followed by ``batchnorm`` is the pair the export step folds with
    :func:`~edgewise.cloud.models.hrf.fold_batchnorm`.
    """

    def __init__(self, d_model: int, kernel_size: int = 15, dropout: float = 0.0) -> None:
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        self.norm = nn.LayerNorm(d_model)
        self.pointwise_in = nn.Conv1d(d_model, 2 * d_model, kernel_size=1)
        self.glu = nn.GLU(dim=1)
        self.depthwise = nn.Conv1d(d_model, d_model, kernel_size, padding=kernel_size // 2, groups=d_model)
        self.batchnorm = nn.BatchNorm1d(d_model)
        self.act = nn.SiLU()
        self.pointwise_out = nn.Conv1d(d_model, d_model, kernel_size=1)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        x = self.glu(self.pointwise_in(self.norm(x).transpose(1, 2)))
        x = self.act(self.batchnorm(self.depthwise(x)))
        return self.dropout(self.pointwise_out(x).transpose(1, 2))
