"""Attention blocks of the recommenders: grouped-query attention with a KV cache, and the blocks built on it.

Shapes: hidden states (B, T, D); keys and values (B, H_kv, S, head_dim). ``mask`` arguments are
boolean (True where a query may attend a key) or additive float, broadcastable to (B, H, T, S).
Feed-forward blocks are :class:`~edgewise.cloud.models.layers.FeedForward`, so HRF merges the same
way as in every other edgewise model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edgewise.cloud.models.layers import FeedForward


def expand_kv(x: Tensor, n_heads: int) -> Tensor:
    """(B, H_kv, S, hd) -> (B, n_heads, S, hd): each K/V head serves n_heads / H_kv query heads."""
    groups = n_heads // x.shape[1]
    if groups == 1:
        return x
    return x[:, :, None].expand(-1, -1, groups, -1, -1).flatten(1, 2)


def split_heads(x: Tensor, n_heads: int) -> Tensor:
    """(B, T, n_heads * hd) -> (B, n_heads, T, hd)."""
    return x.unflatten(-1, (n_heads, -1)).transpose(1, 2)


def attend(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, dropout: float) -> Tensor:
    """Scaled dot-product attention of (B, H, T, hd) queries on grouped K/V; returns (B, T, H * hd)."""
    out = F.scaled_dot_product_attention(
        q, expand_kv(k, q.shape[1]), expand_kv(v, q.shape[1]), attn_mask=mask, dropout_p=dropout
    )
    return out.transpose(1, 2).flatten(2)


class CachedSelfAttention(nn.Module):
    """Causal self-attention over the tokens being generated, with an optional KV cache.

    ``forward(x, past)``: ``past`` is None (a whole sequence, causal) or the (k, v) of the tokens
    before ``x``; returns the output and the (k, v) including ``x``'s, for the next step.
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.dropout = dropout
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)

    def forward(
        self, x: Tensor, past: tuple[Tensor, Tensor] | None = None
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        q, k, v = (split_heads(t, self.n_heads) for t in self.qkv(x).chunk(3, dim=-1))
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        n_new, n_all = q.shape[2], k.shape[2]
        # query i (of the new ones) sits at position n_all - n_new + i and sees keys up to it
        rows = torch.arange(n_new, device=x.device)[:, None] + (n_all - n_new)
        mask = torch.arange(n_all, device=x.device)[None, :] <= rows
        out = attend(q, k, v, mask, self.dropout if self.training else 0.0)
        return self.proj(out), (k, v)


class CrossAttention(nn.Module):
    """Queries from the decoder on keys and values of the history.

    ``kv_proj=True``: the layer projects the memory to its own K/V (the encoder-decoder);
    ``kv_proj=False``: the lazy form, which takes K/V computed once by the context processor and
    only projects its queries (OneRec-V2's lazy cross-attention).
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0, kv_proj: bool = True) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.dropout = dropout
        self.q = nn.Linear(d_model, d_model)
        self.kv = nn.Linear(d_model, 2 * d_model) if kv_proj else None
        self.proj = nn.Linear(d_model, d_model)

    def memory_kv(self, memory: Tensor) -> tuple[Tensor, Tensor]:
        """This layer's K/V of the encoder output (encoder-decoder only): computed once per request."""
        k, v = self.kv(memory).chunk(2, dim=-1)
        return split_heads(k, self.n_heads), split_heads(v, self.n_heads)

    def forward(self, x: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        q = split_heads(self.q(x), self.n_heads)
        return self.proj(attend(q, k, v, mask, self.dropout if self.training else 0.0))


class EncoderBlock(nn.Module):
    """Pre-norm self-attention + FFN over the history (SASRec's block with ``causal``, TIGER's encoder without)."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float, hrf_dim: int | None) -> None:
        super().__init__()
        from edgewise.cloud.models.layers import MultiHeadSelfAttention

        self.norm = nn.LayerNorm(d_model)
        self.attn = MultiHeadSelfAttention(d_model, n_heads, dropout)
        self.drop = nn.Dropout(dropout)
        self.ffn = FeedForward(d_model, d_ff, dropout, hrf_dim=hrf_dim)

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        x = x + self.drop(self.attn(self.norm(x), attn_mask=mask))
        return x + self.ffn(x)


class DecoderBlock(nn.Module):
    """Causal self-attention among an item's code tokens, cross-attention to the history, FFN.

    ``x`` is (B, Q, L, D): Q targets per history (every position while training the lazy model, one
    at inference), each with L code tokens. Self-attention runs within each target's tokens
    (``past``: their cached K/V, batch B * Q); cross-attention runs on all B's Q * L tokens at once
    against the history's K/V (B, H_kv, T, hd) under ``cross_mask`` (broadcastable to
    (B, H, Q * L, T)).
    """

    def __init__(
        self, d_model: int, n_heads: int, d_ff: int, dropout: float, hrf_dim: int | None, kv_proj: bool
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.self_attn = CachedSelfAttention(d_model, n_heads, dropout)
        self.norm2 = nn.LayerNorm(d_model)
        self.cross = CrossAttention(d_model, n_heads, dropout, kv_proj=kv_proj)
        self.drop = nn.Dropout(dropout)
        self.ffn = FeedForward(d_model, d_ff, dropout, hrf_dim=hrf_dim)

    def forward(
        self,
        x: Tensor,
        k: Tensor,
        v: Tensor,
        cross_mask: Tensor | None,
        past: tuple[Tensor, Tensor] | None = None,
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        b, q, n, d = x.shape
        h, cache = self.self_attn(self.norm1(x).reshape(b * q, n, d), past)
        x = x + self.drop(h).reshape(b, q, n, d)
        flat = x.reshape(b, q * n, d)
        flat = flat + self.drop(self.cross(self.norm2(flat), k, v, cross_mask))
        flat = flat + self.ffn(flat)
        return flat.reshape(b, q, n, d), cache
