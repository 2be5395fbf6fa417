"""``resemblyzer``: Resemblyzer's pretrained GE2E speaker encoder, as a layered encoder.

The ``resemblyzer`` package is not imported (it imports librosa and webrtcvad, which are not
installed): only the ``pretrained.pt`` its wheel ships is read, found with
``importlib.util.find_spec``. The network is Resemblyzer's ``VoiceEncoder``: LSTM(40 -> 256,
3 layers), the last layer's final hidden state, Linear(256 -> 256), ReLU, L2 normalization. Here the
three layers run as three one-layer LSTMs with the same weights, so each layer's outputs can be
read: those are the layers of the benchmark's weighted sum.

Front-end (as the encoder was trained): 16 kHz audio scaled to -30 dBFS, librosa-style power mel
(n_fft 400, hop 160, 40 bands, Slaney filters, centred frames), cut into 1.6 s partials at 1.3
per second. Each layer's outputs over all partials' frames are pooled to their mean and std.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgewise.cloud.para.encoders import FrameEncoder, file_sha256
from edgewise.errors import MissingDependencyError
from edgewise.features import _window, mel_filterbank

SAMPLE_RATE = 16000
N_FFT = 400  # 25 ms
HOP = 160  # 10 ms
N_MELS = 40
PARTIAL_FRAMES = 160  # 1.6 s per partial
PARTIAL_RATE = 1.3  # partials per second
MIN_COVERAGE = 0.75  # a last partial covering less than this share of PARTIAL_FRAMES is dropped
TARGET_DBFS = -30.0
HIDDEN, LAYERS, EMBEDDING_DIM = 256, 3, 256


# --- front-end (numpy) ------------------------------------------------------------------------------


def encoder_mel(audio: np.ndarray) -> np.ndarray:
    """Power mel frames (frames, 40) of 16 kHz mono audio, centred frames every 10 ms."""
    audio = np.asarray(audio, dtype=np.float32)
    padded = np.pad(audio, N_FFT // 2, mode="constant")
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP]
    spec = np.fft.rfft(frames * _window(N_FFT, N_FFT), axis=-1)
    power = spec.real**2 + spec.imag**2
    return (power @ mel_filterbank(SAMPLE_RATE, N_FFT, N_MELS, 0.0, SAMPLE_RATE / 2).T).astype(np.float32)


def normalize_level(audio: np.ndarray) -> np.ndarray:
    """Scale to an RMS of -30 dBFS (as the encoder's training audio was); silence is left as is."""
    audio = np.asarray(audio, dtype=np.float32)
    rms = float(np.sqrt(np.mean(audio.astype(np.float64) ** 2))) if audio.size else 0.0
    if rms < 1e-6:
        return audio
    return audio * np.float32(10 ** (TARGET_DBFS / 20) / rms)


def partials(audio: np.ndarray) -> np.ndarray:
    """The utterance's partial windows, shape (n, 160, 40): overlapping 1.6 s spans at 1.3 per
    second covering it (the audio zero-padded to the last one's end), at least one."""
    audio = normalize_level(audio)
    n_frames = int(np.ceil((audio.size + 1) / HOP))
    step = int(np.round(SAMPLE_RATE / PARTIAL_RATE / HOP))
    starts = list(range(0, max(1, n_frames - PARTIAL_FRAMES + step + 1), step))
    if len(starts) > 1 and (audio.size - starts[-1] * HOP) / (PARTIAL_FRAMES * HOP) < MIN_COVERAGE:
        starts.pop()
    end = (starts[-1] + PARTIAL_FRAMES) * HOP
    if end > audio.size:
        audio = np.pad(audio, (0, end - audio.size))
    mel = encoder_mel(audio)
    return np.stack([mel[s : s + PARTIAL_FRAMES] for s in starts])


# --- the network ---------------------------------------------------------------------------------------


def pretrained_path() -> Path:
    spec = importlib.util.find_spec("resemblyzer")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(
            "encoder resemblyzer: its weights ship in the resemblyzer wheel: "
            "pip install --no-deps resemblyzer==0.1.4"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "pretrained.pt"
    if not path.is_file():
        raise MissingDependencyError(f"encoder resemblyzer: {path} is missing from the installed package")
    return path


class LayeredVoiceEncoder(nn.Module):
    """GE2E's 3-layer LSTM as three one-layer LSTMs (same maths), so every layer's output is visible."""

    def __init__(self) -> None:
        super().__init__()
        self.lstms = nn.ModuleList(
            nn.LSTM(N_MELS if k == 0 else HIDDEN, HIDDEN, 1, batch_first=True) for k in range(LAYERS)
        )
        self.linear = nn.Linear(HIDDEN, EMBEDDING_DIM)

    def layer_outputs(self, mels: torch.Tensor) -> list[torch.Tensor]:
        """(batch, frames, 40) power mel -> each layer's outputs (batch, frames, 256)."""
        outs, x = [], mels
        for lstm in self.lstms:
            x, _ = lstm(x)
            outs.append(x)
        return outs

    def forward(self, mels: torch.Tensor) -> torch.Tensor:
        """(batch, frames, 40) -> (batch, 256) unit-length embeddings (Resemblyzer's VoiceEncoder)."""
        raw = torch.relu(self.linear(self.layer_outputs(mels)[-1][:, -1]))
        return raw / torch.linalg.vector_norm(raw, dim=1, keepdim=True).clamp_min(1e-12)

    def load_stacked(self, state: dict[str, torch.Tensor]) -> None:
        """Load a state dict of ``nn.LSTM(40, 256, 3)`` as ``lstm.*`` plus ``linear.*`` (Resemblyzer's
        ``model_state``; other entries, such as GE2E's similarity scale, are ignored)."""
        mine = {}
        for k in range(LAYERS):
            for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                mine[f"lstms.{k}.{kind}_l0"] = state[f"lstm.{kind}_l{k}"]
        mine.update({f"linear.{p}": state[f"linear.{p}"] for p in ("weight", "bias")})
        self.load_state_dict(mine, strict=True)


class SpeakerEncoder(FrameEncoder):
    def __init__(self, threads: int = 1) -> None:
        torch.set_num_threads(threads)
        path = pretrained_path()
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        self.model = LayeredVoiceEncoder()
        self.model.load_stacked(checkpoint["model_state"])
        self.model.eval()
        self.sha256 = file_sha256(path)

    def fingerprint(self) -> dict[str, Any]:
        return {"encoder": "resemblyzer", "version": 1, "weights_sha256": self.sha256}

    def frames(self, audio: np.ndarray) -> list[np.ndarray]:
        with torch.no_grad():
            outs = self.model.layer_outputs(torch.from_numpy(partials(audio)))
        return [o.reshape(-1, HIDDEN).numpy() for o in outs]
