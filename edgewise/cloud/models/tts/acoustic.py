"""The acoustic model: phoneme ids -> mel frames, after ProsodyFM on a Matcha-TTS-style backbone.

- :class:`TextEncoder`: embeddings, a convolutional position signal, pre-norm transformer blocks
  whose FFNs carry HRF (:class:`~edgewise.cloud.models.layers.FeedForward`).
- :class:`PhraseBreakEncoder`: at every word boundary, a classifier says whether a phrase break
  goes there; a learned break embedding is added where one does. Trained on breaks read from the
  teacher's own pauses (no labels); at inference its predictions place the breaks.
- :class:`DurationPredictor`: frames per id (log(1 + frames)), so it sets how long each break is.
- :class:`TerminalIntonationEncoder`: GST-style: a bank of learned intonation-shape tokens; in
  training a reference encoder reads the stylised pitch contour of the sentence's last word (the
  pitch processor, :func:`edgewise.tts_dsp.smooth_log_f0`) and attends over the tokens; a text-side
  head learns to predict those token weights from the encoder (sentence type included), which is
  what inference uses. The resulting embedding is added to the last word's ids.
- :class:`FlowDecoder`: the OT-CFM vector field, conv + windowed self-attention + FFN blocks over
  (noisy mel, length-regulated encoder mean, time), run for a few Euler steps.

Inference is split the way the device runs it: :meth:`AcousticModel.encode` (ids -> per-id mel
mean and log-durations, one graph), length regulation (repeat, outside the graph), and
:meth:`FlowDecoder.forward` (one ODE step, one graph; the loop runs in the runtime).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edgewise.cloud.models.layers import (
    ConvPositionalEncoding,
    FeedForward,
    MultiHeadSelfAttention,
    windowed_self_attention,
)
from edgewise.cloud.models.tts.config import AcousticConfig


class TransformerBlock(nn.Module):
    def __init__(
        self, d: int, heads: int, d_ff: int, dropout: float, hrf_dim: int | None, window: int | None = None
    ):
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.attn = MultiHeadSelfAttention(d, heads, dropout)
        self.ffn = FeedForward(d, d_ff, dropout, hrf_dim=hrf_dim)
        self.window = window
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, attn_mask: Tensor | None = None, frame_mask: Tensor | None = None) -> Tensor:
        """``attn_mask``: full attention's key mask; ``frame_mask`` (B, T): windowed attention's."""
        h = self.norm(x)
        if self.window:
            h = windowed_self_attention(self.attn, h, self.window, frame_mask)
        else:
            h = self.attn(h, attn_mask=attn_mask)
        x = x + self.dropout(h)
        return x + self.ffn(x)


class TextEncoder(nn.Module):
    def __init__(self, cfg: AcousticConfig, hrf_dim: int | None) -> None:
        super().__init__()
        e = cfg.encoder
        self.embed = nn.Embedding(cfg.n_symbols, e.d_model)
        nn.init.normal_(self.embed.weight, 0.0, e.d_model**-0.5)
        self.pos = ConvPositionalEncoding(e.d_model, e.pos_kernel)
        self.blocks = nn.ModuleList(
            TransformerBlock(e.d_model, e.n_heads, e.d_ff, e.dropout, hrf_dim) for _ in range(e.n_layers)
        )
        self.norm = nn.LayerNorm(e.d_model)

    def forward(self, ids: Tensor, mask: Tensor) -> Tensor:
        """ids (B, N), mask (B, N) float 1 for real ids -> (B, N, d)."""
        x = self.pos(self.embed(ids) * mask[..., None]) * mask[..., None]
        attn_mask = mask[:, None, None, :] > 0
        for block in self.blocks:
            x = block(x, attn_mask) * mask[..., None]
        return self.norm(x) * mask[..., None]


class PhraseBreakEncoder(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.classifier = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, 1))
        self.embed = nn.Parameter(torch.zeros(d))

    def forward(self, h: Tensor, boundary: Tensor, breaks: Tensor | None) -> tuple[Tensor, Tensor]:
        """Break logits at every id (meaningful at boundaries), and h with break embeddings added.
        ``breaks`` (teacher's, 0/1) in training; None at inference (the classifier decides)."""
        logits = self.classifier(h).squeeze(-1)
        chosen = breaks if breaks is not None else (logits > 0).to(h.dtype)
        return logits, h + (chosen * boundary)[..., None] * self.embed


class TerminalIntonationEncoder(nn.Module):
    def __init__(self, d: int, n_tokens: int, token_dim: int) -> None:
        super().__init__()
        self.tokens = nn.Parameter(torch.randn(n_tokens, token_dim) * 0.5)
        self.reference = nn.GRU(1, 64, batch_first=True)
        self.query = nn.Linear(64, token_dim)
        self.predictor = nn.Sequential(nn.Linear(2 * d, d), nn.GELU(), nn.Linear(d, n_tokens))
        self.out = nn.Linear(token_dim, d)

    def reference_weights(self, contour: Tensor) -> Tensor:
        """(B, points) stylised log-F0 of the last word -> token weights (B, K)."""
        _, hidden = self.reference(contour[..., None])
        keys = torch.tanh(self.tokens)
        scores = self.query(hidden[-1]) @ keys.T / math.sqrt(keys.shape[-1])
        return scores.softmax(-1)

    def predicted_logits(self, h: Tensor, last_word: Tensor, mask: Tensor) -> Tensor:
        """Token-weight logits from the text: the last word's mean state and the final id's state
        (the terminator: '?', '.', '!')."""
        word = (h * last_word[..., None]).sum(1) / last_word.sum(1, keepdim=True).clamp(min=1)
        # the state of the last real id before EOS (the terminator in Piper's layout)
        lengths = mask.sum(1).long()
        final = h[torch.arange(h.shape[0]), (lengths - 2).clamp(min=0)]
        return self.predictor(torch.cat([word, final], dim=-1))

    def forward(self, h, last_word, mask, contour: Tensor | None):
        logits = self.predicted_logits(h.detach(), last_word, mask)
        weights = self.reference_weights(contour) if contour is not None else logits.softmax(-1)
        style = self.out(weights @ torch.tanh(self.tokens))  # (B, d)
        return logits, weights, h + last_word[..., None] * style[:, None, :]


class DurationPredictor(nn.Module):
    def __init__(self, d: int, channels: int = 128, kernel: int = 3, dropout: float = 0.1) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(d, channels, kernel, padding=kernel // 2)
        self.norm1 = nn.LayerNorm(channels)
        self.conv2 = nn.Conv1d(channels, channels, kernel, padding=kernel // 2)
        self.norm2 = nn.LayerNorm(channels)
        self.proj = nn.Linear(channels, 1)
        self.dropout = nn.Dropout(dropout)

    def forward(self, h: Tensor, mask: Tensor) -> Tensor:
        x = (h * mask[..., None]).transpose(1, 2)
        x = self.dropout(self.norm1(F.relu(self.conv1(x)).transpose(1, 2))).transpose(1, 2)
        x = self.dropout(self.norm2(F.relu(self.conv2(x * mask[:, None])).transpose(1, 2)))
        return self.proj(x).squeeze(-1) * mask  # log(1 + frames)


def timestep_embedding(t: Tensor, dim: int) -> Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=t.dtype, device=t.device) / half)
    args = 1000.0 * t[:, None] * freqs[None]
    return torch.cat([args.sin(), args.cos()], dim=-1)


class DecoderBlock(nn.Module):
    def __init__(self, c: int, heads: int, d_ff: int, kernel: int, window: int, dropout: float, hrf_dim):
        super().__init__()
        self.conv_norm = nn.LayerNorm(c)
        self.conv = nn.Conv1d(c, c, kernel, padding=kernel // 2, groups=c)
        self.time = nn.Linear(c, c)
        self.transformer = TransformerBlock(c, heads, d_ff, dropout, hrf_dim, window=window)

    def forward(self, x: Tensor, temb: Tensor, mask: Tensor) -> Tensor:
        m = mask[..., None]
        x = x + self.time(temb)[:, None, :]
        # the convolution and the attention see nothing of masked frames, so a sequence padded
        # past its end (a fixed-length graph) gives its real frames what the unpadded one gives
        x = x + self.conv((self.conv_norm(x) * m).transpose(1, 2)).transpose(1, 2)
        return self.transformer(x * m, frame_mask=mask) * m


class FlowDecoder(nn.Module):
    """The vector field v(x_t, mu, t): (B, T, n_mels) x 2 and (B,) -> (B, T, n_mels)."""

    def __init__(self, cfg: AcousticConfig, hrf_dim: int | None) -> None:
        super().__init__()
        d = cfg.decoder
        self.window = d.window
        self.inp = nn.Linear(2 * cfg.n_mels, d.channels)
        self.time_mlp = nn.Sequential(nn.Linear(64, d.channels), nn.SiLU(), nn.Linear(d.channels, d.channels))
        self.blocks = nn.ModuleList(
            DecoderBlock(d.channels, d.n_heads, d.d_ff, d.kernel, d.window, d.dropout, hrf_dim)
            for _ in range(d.n_blocks)
        )
        self.norm = nn.LayerNorm(d.channels)
        self.out = nn.Linear(d.channels, cfg.n_mels)

    def forward(self, x: Tensor, mu: Tensor, t: Tensor, mask: Tensor) -> Tensor:
        temb = self.time_mlp(timestep_embedding(t, 64))
        h = self.inp(torch.cat([x, mu], dim=-1)) * mask[..., None]
        for block in self.blocks:
            h = block(h, temb, mask)
        return self.out(self.norm(h)) * mask[..., None]


class AcousticModel(nn.Module):
    def __init__(self, config: AcousticConfig) -> None:
        super().__init__()
        self.config = config
        hrf = config.hrf
        d = config.encoder.d_model
        self.encoder = TextEncoder(config, hrf.hidden_dim(d) if hrf else None)
        p = config.prosody
        self.breaks = PhraseBreakEncoder(d) if p.phrase_breaks else None
        self.intonation = (
            TerminalIntonationEncoder(d, p.n_tokens, p.token_dim) if p.terminal_intonation else None
        )
        self.duration = DurationPredictor(d)
        self.proj_mu = nn.Linear(d, config.n_mels)
        self.decoder = FlowDecoder(config, hrf.hidden_dim(config.decoder.channels) if hrf else None)

    def prosody(self, ids, mask, boundary, last_word, breaks=None, contour=None):
        """Encoder states with break and intonation embeddings, plus the heads' outputs."""
        h = self.encoder(ids, mask)
        out: dict[str, Tensor] = {}
        if self.breaks is not None:
            out["break_logits"], h = self.breaks(h, boundary, breaks)
        if self.intonation is not None:
            out["tone_logits"], out["tone_weights"], h = self.intonation(h, last_word, mask, contour)
        return h, out

    def encode(self, ids: Tensor, mask: Tensor, boundary: Tensor, last_word: Tensor) -> tuple[Tensor, Tensor]:
        """Inference front half: (per-id mel mean (B, N, n_mels), log(1 + frames) (B, N))."""
        h, _ = self.prosody(ids, mask, boundary, last_word)
        return self.proj_mu(h) * mask[..., None], self.duration(h, mask)


def durations_from_log(logd: Tensor, mask: Tensor, length_scale: float = 1.0) -> Tensor:
    return (torch.round((torch.exp(logd) - 1.0).clamp(min=0) * length_scale) * mask).long()


def length_regulate(mu_x: Tensor, durations: Tensor) -> tuple[Tensor, Tensor]:
    """Repeat each id's row by its frames: (B, N, C), (B, N) -> (B, T, C), frame mask (B, T)."""
    total = durations.sum(1)
    t_max = int(total.max().clamp(min=1))
    ends = durations.cumsum(1)  # (B, N)
    frames = torch.arange(t_max, device=mu_x.device)
    # index of the id that covers each frame: number of ids whose end <= frame
    index = (ends[:, None, :] <= frames[None, :, None]).sum(-1).clamp(max=mu_x.shape[1] - 1)  # (B, T)
    mu_y = torch.gather(mu_x, 1, index[..., None].expand(-1, -1, mu_x.shape[-1]))
    mask = (frames[None] < total[:, None]).to(mu_x.dtype)
    return mu_y * mask[..., None], mask


@torch.inference_mode()
def synthesise(
    model: AcousticModel,
    ids: Tensor,
    boundary: Tensor,
    last_word: Tensor,
    *,
    steps: int | None = None,
    temperature: float | None = None,
    noise: Tensor | None = None,
    length_scale: float = 1.0,
) -> tuple[Tensor, Tensor]:
    """One sentence (batch 1) -> (normalised mel (T, n_mels), frames per id (N,)).

    ``noise`` (T', n_mels) with T' >= T gives the starting point (the device and export checks pass
    the same noise); otherwise it is drawn from torch's generator.
    """
    cfg = model.config
    steps = steps or cfg.flow.steps
    temperature = cfg.flow.temperature if temperature is None else temperature
    mask = torch.ones_like(ids, dtype=torch.float32)
    mu_x, logd = model.encode(ids, mask, boundary, last_word)
    durations = durations_from_log(logd, mask, length_scale)
    mu_y, fmask = length_regulate(mu_x, durations)
    t_len = mu_y.shape[1]
    z = noise[:t_len][None] if noise is not None else torch.randn_like(mu_y)
    x = z * temperature
    dt = 1.0 / steps
    for i in range(steps):
        t = torch.full((1,), i * dt)
        x = x + dt * model.decoder(x, mu_y, t, fmask)
    return x[0], durations[0]
