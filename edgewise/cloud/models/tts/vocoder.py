"""A Vocos-style vocoder: log-mel frames -> per-frame log-magnitude and phase -> iSTFT.

The network is ConvNeXt blocks at frame rate (no upsampling, which is why it is fast on CPUs).
Its FFN is :class:`~edgewise.cloud.models.layers.FeedForward`, so HRF trains and merges as in
every other edgewise block. The graph ends at (log-magnitude, phase); the inverse FFT and
overlap-add run outside it (:func:`edgewise.tts_dsp.istft` on the device, :func:`torch.istft`-
equivalent :meth:`Vocoder.waveform` in training), so no runtime needs an FFT operator.

Each block looks 3 frames to each side (kernel 7), so chunked decoding with ``receptive_field``
frames of context on each side equals decoding the whole mel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edgewise.cloud.models.layers import FeedForward
from edgewise.cloud.models.tts.config import VocoderConfig


class ConvNeXtBlock(nn.Module):
    def __init__(self, dim: int, d_ff: int, kernel: int, hrf_dim: int | None) -> None:
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, kernel, padding=kernel // 2, groups=dim)
        self.ffn = FeedForward(dim, d_ff, hrf_dim=hrf_dim)
        self.scale = nn.Parameter(torch.full((dim,), 0.1))

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:  # (B, T, C), mask (B, T, 1)
        y = self.dwconv((x if mask is None else x * mask).transpose(1, 2)).transpose(1, 2)
        return x + self.scale * self.ffn(y)


class Vocoder(nn.Module):
    def __init__(self, config: VocoderConfig) -> None:
        super().__init__()
        self.config = config
        hrf_dim = config.hrf.hidden_dim(config.dim) if config.hrf else None
        self.embed = nn.Conv1d(config.n_mels, config.dim, config.kernel, padding=config.kernel // 2)
        self.norm_in = nn.LayerNorm(config.dim)
        self.blocks = nn.ModuleList(
            ConvNeXtBlock(config.dim, config.d_ff, config.kernel, hrf_dim) for _ in range(config.n_layers)
        )
        self.norm_out = nn.LayerNorm(config.dim)
        self.n_bins = config.n_fft // 2 + 1
        self.head = nn.Linear(config.dim, 2 * self.n_bins)
        self.register_buffer("window", torch.hann_window(config.n_fft), persistent=False)

    @property
    def receptive_field(self) -> int:
        """Frames of context on each side that make chunked output equal the whole-mel output."""
        return (self.config.kernel // 2) * (self.config.n_layers + 1)

    def forward(self, mel: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """mel (B, T, n_mels) -> log-magnitude (B, T, bins), phase (B, T, bins).

        ``mask`` (B, T), 1 for real frames: every convolution sees zeros past them, as it does at
        the end of an unpadded mel, so a fixed-length graph's real frames match the dynamic one's.
        """
        m = None if mask is None else mask[..., None].to(mel.dtype)
        x = self.norm_in(self.embed((mel if m is None else mel * m).transpose(1, 2)).transpose(1, 2))
        for block in self.blocks:
            x = block(x, m)
        out = self.head(self.norm_out(x))
        log_mag, phase_raw = out.split(self.n_bins, dim=-1)
        # Vocos predicts the phase angle through (cos, sin) of one output; here the angle directly.
        return log_mag.clamp(max=8.0), phase_raw

    def waveform(self, log_mag: Tensor, phase: Tensor) -> Tensor:
        """Differentiable iSTFT with the "same" padding of :mod:`edgewise.tts_dsp`: T frames -> T*hop samples."""
        cfg = self.config
        spec = torch.exp(log_mag) * torch.exp(1j * phase)  # (B, T, bins)
        frames = torch.fft.irfft(spec, n=cfg.n_fft, dim=-1) * self.window  # (B, T, n_fft)
        n = frames.shape[1]
        length = cfg.n_fft + cfg.hop * (n - 1)
        y = F.fold(
            frames.transpose(1, 2), output_size=(1, length), kernel_size=(1, cfg.n_fft), stride=(1, cfg.hop)
        ).reshape(frames.shape[0], length)
        win_sq = self.window.square().expand(1, n, -1).transpose(1, 2)
        norm = F.fold(
            win_sq, output_size=(1, length), kernel_size=(1, cfg.n_fft), stride=(1, cfg.hop)
        ).reshape(length)
        pad = (cfg.n_fft - cfg.hop) // 2
        return (y / norm.clamp(min=1e-3))[:, pad : pad + n * cfg.hop]


def stft_log_mag(audio: Tensor, n_fft: int, hop: int) -> Tensor:
    window = torch.hann_window(n_fft, device=audio.device)
    spec = torch.stft(audio, n_fft, hop, window=window, center=True, return_complex=True)
    return spec.abs().clamp(min=1e-5)


def multi_resolution_stft_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Spectral convergence + log-magnitude L1 at three resolutions (Parallel WaveGAN's loss)."""
    loss = pred.new_zeros(())
    for n_fft, hop in ((512, 128), (1024, 256), (2048, 512)):
        p, t = stft_log_mag(pred, n_fft, hop), stft_log_mag(target, n_fft, hop)
        loss = loss + torch.linalg.norm(t - p) / torch.linalg.norm(t).clamp(min=1e-5)
        loss = loss + F.l1_loss(p.log(), t.log())
    return loss / 3


class TorchLogMel(nn.Module):
    """:func:`edgewise.tts_dsp.tts_log_mel` in torch (differentiable; same frames and filterbank)."""

    def __init__(self, spec=None) -> None:
        super().__init__()
        from edgewise.features import mel_filterbank
        from edgewise.tts_dsp import MelSpec

        self.spec = spec or MelSpec()
        s = self.spec
        fb = mel_filterbank(s.sample_rate, s.n_fft, s.n_mels, s.f_min, s.f_max)
        self.register_buffer("fb", torch.from_numpy(fb.astype("float32")), persistent=False)
        self.register_buffer("window", torch.hann_window(s.n_fft), persistent=False)

    def forward(self, audio: Tensor) -> Tensor:  # (B, L) -> (B, L // hop, n_mels)
        s = self.spec
        n = audio.shape[-1] // s.hop
        mode = "reflect" if audio.shape[-1] > s.pad + s.n_fft else "constant"
        x = F.pad(audio[:, None], (s.pad, s.pad + s.n_fft), mode=mode)[:, 0]
        frames = x.unfold(-1, s.n_fft, s.hop)[:, :n] * self.window
        mag = torch.fft.rfft(frames, dim=-1).abs()
        return torch.log((mag @ self.fb.T).clamp(min=s.log_floor))
