"""Generative recommenders: a user's history in, the next item's semantic ID out, one level at a time.

Items are ``L`` code tokens (the semantic IDs of :mod:`edgewise.rec_ids`; token = level offset +
code, one shared vocabulary). A history is (B, T) item indices, 1-based, 0 for padding on the
left, so the most recent item is always last. Both models keep the item -> tokens table as a
buffer, so a checkpoint carries the IDs it was trained with.

Two models share everything but the context:

- :class:`LazyDecoderRec` (OneRec-V2's lazy decoder-only model): a context processor embeds the
  history once and projects it to keys and values for each *group* of ``kv_group`` decoder layers
  (grouped-query attention, ``n_kv_heads`` heads), plus a learned recency bias; the decoder layers
  only project their queries. Training predicts the next item at every position of the history in
  one pass (causal cross-attention), so a sequence of T items gives T training targets.
- :class:`EncoderDecoderRec` (TIGER / OneRec-V1): a bidirectional encoder over the history, and
  decoder layers that each project the encoder output to their own full-width K/V. One history,
  one target.

The decoder reads ``[BOS, c_1, ..., c_{L-1}]`` (plus a level embedding) and predicts ``c_1..c_L``;
logits are over the whole vocabulary (tied to the token embeddings) and each level keeps its slice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from edgewise.cloud.models.rec.blocks import DecoderBlock, EncoderBlock, split_heads
from edgewise.cloud.models.rec.config import RecModelConfig


class CodeEmbedding(nn.Module):
    """An item's vector: the sum of its code tokens' embeddings (plus a per-item embedding)."""

    def __init__(self, item_tokens: Tensor, vocab: int, d_model: int, item_id_embedding: bool) -> None:
        super().__init__()
        self.register_buffer("item_tokens", item_tokens.long())  # (n_items + 1, L), row 0: padding
        self.tokens = nn.Embedding(vocab, d_model)
        self.items = nn.Embedding(item_tokens.shape[0], d_model, padding_idx=0) if item_id_embedding else None
        nn.init.normal_(self.tokens.weight, std=0.02)
        if self.items is not None:
            nn.init.normal_(self.items.weight, std=0.02)
            with torch.no_grad():
                self.items.weight[0].zero_()

    def forward(self, history: Tensor) -> Tensor:
        e = self.tokens(self.item_tokens[history]).sum(-2)
        if self.items is not None:
            e = e + self.items(history)
        return e * (history > 0).unsqueeze(-1).to(e.dtype)


@dataclass
class Context:
    """What the decoder reads of a batch of histories: per decoder layer, K/V and the cross mask."""

    kv: list[tuple[Tensor, Tensor]]  # per layer: (B, H_kv, T, hd) each
    masks: list[Tensor]  # per layer: additive float mask, broadcastable to (B, H, Q * n, T)


class GenerativeRec(nn.Module):
    """Shared decoder, embeddings, teacher-forced forward and the incremental ``step`` of beam search."""

    kind = "generative"

    def __init__(self, config: RecModelConfig, item_tokens: Tensor, level_sizes: tuple[int, ...]) -> None:
        super().__init__()
        self.config = config
        self.level_sizes = tuple(int(s) for s in level_sizes)
        self.n_levels = len(self.level_sizes)
        offsets = [0]
        for size in self.level_sizes[:-1]:
            offsets.append(offsets[-1] + size)
        self.level_offsets = tuple(offsets)
        self.vocab = sum(self.level_sizes)
        if item_tokens.shape[1] != self.n_levels:
            raise ValueError(f"item_tokens has {item_tokens.shape[1]} levels, level_sizes {self.n_levels}")
        d = config.d_model
        self.embed = CodeEmbedding(item_tokens, self.vocab, d, config.item_id_embedding)
        self.bos = nn.Parameter(torch.randn(d) * 0.02)
        self.level_emb = nn.Embedding(self.n_levels, d)
        nn.init.normal_(self.level_emb.weight, std=0.02)
        self.drop = nn.Dropout(config.dropout)
        self.out_norm = nn.LayerNorm(d)

    @property
    def n_items(self) -> int:
        return self.embed.item_tokens.shape[0] - 1

    def context(
        self, history: Tensor, every_position: bool, positions: Tensor | None = None
    ) -> Context:  # pragma: no cover - abstract
        raise NotImplementedError

    def decoder_input(self, target_tokens: Tensor) -> Tensor:
        """(B, Q, L) target tokens -> (B, Q, L, D) decoder input ``[BOS, c_1 .. c_{L-1}]`` + levels."""
        prev = self.embed.tokens(target_tokens[..., :-1])
        bos = self.bos.expand(*target_tokens.shape[:-1], 1, -1)
        return torch.cat([bos, prev], dim=-2) + self.level_emb.weight

    def logits(self, h: Tensor) -> Tensor:
        return self.out_norm(h) @ self.embed.tokens.weight.t()

    def forward(self, history: Tensor, target_tokens: Tensor, positions: Tensor | None = None) -> Tensor:
        """Teacher-forced logits (B, Q, L, vocab). ``target_tokens`` is (B, Q, L): Q = T (the item after
        every history position) or Q = 1 (the item after the whole history); the lazy model also
        takes ``positions`` (B, Q): the history position each target follows."""
        every = positions is None and target_tokens.shape[1] > 1
        ctx = self.context(history, every_position=every, positions=positions)
        x = self.drop(self.decoder_input(target_tokens))
        for i, block in enumerate(self.blocks):
            x, _ = block(x, *ctx.kv[i], ctx.masks[i])
        return self.logits(x)

    def step(
        self, ctx: Context, tokens: Tensor | None, level: int, caches: list | None
    ) -> tuple[Tensor, list]:
        """One decoding step for Q beams per history: ``tokens`` (B, Q) are the codes chosen at
        ``level - 1`` (None at level 0: BOS). Returns logits (B, Q, vocab) and the updated caches
        (per layer, self-attention K/V of batch B * Q)."""
        if tokens is None:
            b = ctx.kv[0][0].shape[0]
            x = self.bos.expand(b, 1, 1, -1)
        else:
            x = self.embed.tokens(tokens).unsqueeze(2)
        x = x + self.level_emb.weight[level]
        new_caches = []
        for i, block in enumerate(self.blocks):
            x, cache = block(x, *ctx.kv[i], ctx.masks[i], None if caches is None else caches[i])
            new_caches.append(cache)
        return self.logits(x[:, :, 0]), new_caches


def _additive(allowed: Tensor, bias: Tensor | None = None) -> Tensor:
    """Boolean mask (+ float bias) -> additive float mask; a query with no allowed key sees all keys
    (its output is ignored, but stays finite)."""
    allowed = allowed | ~allowed.any(-1, keepdim=True)
    mask = torch.zeros(allowed.shape, dtype=torch.float32, device=allowed.device).masked_fill(
        ~allowed, float("-inf")
    )
    return mask if bias is None else mask + bias


class LazyDecoderRec(GenerativeRec):
    kind = "lazy"

    def __init__(self, config: RecModelConfig, item_tokens: Tensor, level_sizes: tuple[int, ...]) -> None:
        super().__init__(config, item_tokens, level_sizes)
        d, h = config.d_model, config.n_heads
        hrf = config.hrf.hidden_dim(d) if config.hrf is not None else None
        self.head_dim = d // h
        self.ctx_layers = nn.ModuleList(
            EncoderBlock(d, h, config.d_ff, config.dropout, hrf) for _ in range(config.context_layers)
        )
        self.ctx_norm = nn.LayerNorm(d)
        self.n_groups = math.ceil(config.n_layers / config.kv_group)
        self.ctx_kv = nn.ModuleList(
            nn.Linear(d, 2 * config.n_kv_heads * self.head_dim) for _ in range(self.n_groups)
        )
        self.recency_bias = nn.Parameter(torch.zeros(self.n_groups, h, config.max_len))
        self.position = None  # each history item's place in the window, the oldest 0 (padding skipped)
        if config.context_positions:
            self.position = nn.Embedding(config.max_len, d)
            nn.init.normal_(self.position.weight, std=0.02)
        self.blocks = nn.ModuleList(
            DecoderBlock(d, h, config.d_ff, config.dropout, hrf, kv_proj=False)
            for _ in range(config.n_layers)
        )

    def context(self, history: Tensor, every_position: bool, positions: Tensor | None = None) -> Context:
        """``every_position``: one target after each history position (training); ``positions``
        (B, Q): one target after each given position (training on a sample of positions); neither:
        one target after the whole history (inference)."""
        t = history.shape[1]
        valid = history > 0
        pos = torch.arange(t, device=history.device)
        x = self.embed(history)
        if self.position is not None:
            place = (valid.long().cumsum(1) - 1).clamp(min=0)  # a prefix keeps its items' places
            x = x + self.position(place) * valid.unsqueeze(-1).to(x.dtype)
        x = self.drop(x)
        if self.ctx_layers:
            causal = (pos[None, :] <= pos[:, None])[None, None] & valid[:, None, None, :]
            causal = causal | ~causal.any(-1, keepdim=True)
            for layer in self.ctx_layers:
                x = layer(x, causal)
        x = self.ctx_norm(x)
        n_tokens = self.n_levels
        if positions is not None:  # query q (after history position positions[b, q]) sees 0..that
            distance = positions[:, :, None] - pos[None, None, :]  # (B, Q, T)
            allowed = (distance >= 0) & valid[:, None, :]
            allowed = allowed.repeat_interleave(n_tokens, dim=1)[:, None]  # (B, 1, Q * L, T)
        elif every_position:  # query t (target: item t + 1) sees history 0..t
            distance = pos[:, None] - pos[None, :]  # (T, T)
            allowed = (distance >= 0)[None] & valid[:, None, :]  # (B, T, T)
            allowed = allowed.repeat_interleave(n_tokens, dim=1)[:, None]  # (B, 1, T * L, T)
        else:  # one target after the whole history (inference, or a single cut)
            distance = (t - 1 - pos)[None, :]  # (1, T)
            allowed = valid[:, None, None, :]  # (B, 1, 1, T)
        index = distance.clamp(0, self.config.max_len - 1)
        kv, masks = [], []
        for g in range(self.n_groups):
            k, v = self.ctx_kv[g](x).chunk(2, dim=-1)
            kv.append((split_heads(k, self.config.n_kv_heads), split_heads(v, self.config.n_kv_heads)))
            bias = self.recency_bias[g][:, index]  # (H, T, T), (H, 1, T) or (H, B, Q, T)
            if positions is not None:
                bias = bias.transpose(0, 1).repeat_interleave(n_tokens, dim=2)  # (B, H, Q * L, T)
            else:
                if every_position:
                    bias = bias.repeat_interleave(n_tokens, dim=1)
                bias = bias[None]
            masks.append(_additive(allowed, bias))
        per_layer = [i // self.config.kv_group for i in range(self.config.n_layers)]
        return Context([kv[g] for g in per_layer], [masks[g] for g in per_layer])


class EncoderDecoderRec(GenerativeRec):
    kind = "encdec"

    def __init__(self, config: RecModelConfig, item_tokens: Tensor, level_sizes: tuple[int, ...]) -> None:
        super().__init__(config, item_tokens, level_sizes)
        d, h = config.d_model, config.n_heads
        hrf = config.hrf.hidden_dim(d) if config.hrf is not None else None
        self.position = nn.Embedding(config.max_len, d)  # counted from the most recent item
        nn.init.normal_(self.position.weight, std=0.02)
        self.encoder = nn.ModuleList(
            EncoderBlock(d, h, config.d_ff, config.dropout, hrf) for _ in range(config.encoder_layers)
        )
        self.enc_norm = nn.LayerNorm(d)
        self.blocks = nn.ModuleList(
            DecoderBlock(d, h, config.d_ff, config.dropout, hrf, kv_proj=True) for _ in range(config.n_layers)
        )

    def context(self, history: Tensor, every_position: bool, positions: Tensor | None = None) -> Context:
        if every_position or positions is not None:
            raise ValueError("the encoder-decoder reads one target per history (Q = 1)")
        t = history.shape[1]
        valid = history > 0
        from_end = (t - 1 - torch.arange(t, device=history.device)).clamp(max=self.config.max_len - 1)
        x = self.drop(self.embed(history) + self.position(from_end))
        keys = valid[:, None, None, :]
        keys = keys | ~keys.any(-1, keepdim=True)
        for layer in self.encoder:
            x = layer(x, keys)
        memory = self.enc_norm(x)
        mask = _additive(valid[:, None, None, :])
        return Context([block.cross.memory_kv(memory) for block in self.blocks], [mask] * len(self.blocks))
