"""Signal processing the TTS family shares between training, export checks and the device (numpy only).

- :func:`tts_log_mel`: the acoustic model's target, 80-band log-mel at 22.05 kHz with "same"
  padding, so a waveform of ``k * hop`` samples has exactly ``k`` frames (the teacher's durations
  are in these frames).
- :func:`istft`: the vocoder's last step on the device (the network predicts magnitude and phase;
  the inverse FFT and overlap-add run here, not in the graph, so no runtime needs an FFT op).
  :class:`StreamingISTFT` does the same chunk by chunk, carrying the overlap between chunks.
- :func:`pitch`: F0 per mel frame by the YIN difference function with the same hop, plus the
  smoothing that makes a stylised intonation contour (the pitch processor).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgewise.features import _window, mel_filterbank


@dataclass(frozen=True)
class MelSpec:
    sample_rate: int = 22050
    n_fft: int = 1024
    hop: int = 256
    n_mels: int = 80
    f_min: float = 0.0
    f_max: float = 8000.0
    log_floor: float = 1e-5

    @property
    def pad(self) -> int:
        return (self.n_fft - self.hop) // 2

    def to_dict(self) -> dict:
        return dict(self.__dict__)


NORM_FLOOR = 1e-3  # least summed squared window an output sample is divided by (as Vocoder.waveform)


def tts_log_mel(audio: np.ndarray, spec: MelSpec = MelSpec()) -> np.ndarray:
    """(frames, n_mels) float32 log-magnitude mel; frames = len(audio) // hop."""
    audio = np.asarray(audio, dtype=np.float32)
    padded = np.pad(
        audio,
        (spec.pad, spec.pad + spec.n_fft),
        mode="reflect" if audio.size > spec.pad + spec.n_fft else "constant",
    )
    n_frames = audio.shape[0] // spec.hop
    frames = np.lib.stride_tricks.sliding_window_view(padded, spec.n_fft)[:: spec.hop][:n_frames]
    mag = np.abs(np.fft.rfft(frames * _window(spec.n_fft, spec.n_fft), axis=-1))
    mel = mag @ mel_filterbank(spec.sample_rate, spec.n_fft, spec.n_mels, spec.f_min, spec.f_max).T
    return np.log(np.maximum(mel, spec.log_floor)).astype(np.float32)


def istft(log_mag: np.ndarray, phase: np.ndarray, spec: MelSpec = MelSpec()) -> np.ndarray:
    """Waveform (frames * hop samples) from per-frame log-magnitude and phase, each (frames, n_fft//2+1).

    Overlap-add divided by the summed squared windows at each sample (as ``torch.istft`` and
    :meth:`Vocoder.waveform` do), so an exact STFT with the same padding comes back exactly, the
    first and last frames included."""
    stream = StreamingISTFT(spec)
    return np.concatenate([stream.push(log_mag, phase), stream.flush()])


class StreamingISTFT:
    """Overlap-add across chunks: ``push`` returns the samples that no later frame changes.

    The signal and the squared windows are overlap-added side by side; a sample is divided by its
    own window sum once every frame that covers it has arrived, so pushing a spectrogram in any
    chunks gives exactly :func:`istft` of the whole."""

    def __init__(self, spec: MelSpec = MelSpec()) -> None:
        self.spec = spec
        self.window = _window(spec.n_fft, spec.n_fft).astype(np.float32)
        self.window_sq = self.window**2
        self.buffer = np.zeros(spec.n_fft, dtype=np.float32)
        self.norm_buffer = np.zeros(spec.n_fft, dtype=np.float32)
        self.skip = spec.pad  # "same" padding: the first pad samples are not part of the signal
        self.frames = 0
        self.emitted = 0

    def _trim(self, ready: np.ndarray) -> np.ndarray:
        if self.skip:
            cut = min(self.skip, ready.shape[0])
            ready, self.skip = ready[cut:], self.skip - cut
        return ready

    def push(self, log_mag: np.ndarray, phase: np.ndarray) -> np.ndarray:
        spec = self.spec
        mag = np.exp(np.minimum(log_mag, 8.0)).astype(np.float32)  # exp(8) ~ 3000: clip runaway frames
        frames = (
            np.fft.irfft(mag * np.exp(1j * phase), n=spec.n_fft, axis=-1).astype(np.float32) * self.window
        )
        n = frames.shape[0]
        out = np.zeros(spec.hop * n + spec.n_fft, dtype=np.float32)
        norm = np.zeros_like(out)
        out[: spec.n_fft] += self.buffer
        norm[: spec.n_fft] += self.norm_buffer
        for i in range(n):
            out[i * spec.hop : i * spec.hop + spec.n_fft] += frames[i]
            norm[i * spec.hop : i * spec.hop + spec.n_fft] += self.window_sq
        ready = out[: spec.hop * n] / np.maximum(norm[: spec.hop * n], NORM_FLOOR)
        self.buffer = out[spec.hop * n :][: spec.n_fft].copy()
        self.norm_buffer = norm[spec.hop * n :][: spec.n_fft].copy()
        self.frames += n
        ready = self._trim(ready)
        self.emitted += ready.shape[0]
        return ready

    def flush(self) -> np.ndarray:
        """The rest of the signal: up to frames * hop samples in all."""
        total = self.frames * self.spec.hop
        tail = self._trim(self.buffer / np.maximum(self.norm_buffer, NORM_FLOOR))
        tail = tail[: max(0, total - self.emitted)]
        self.emitted += tail.shape[0]
        self.buffer = np.zeros_like(self.buffer)
        self.norm_buffer = np.zeros_like(self.norm_buffer)
        return tail


# -- pitch ------------------------------------------------------------------------------------


def pitch(
    audio: np.ndarray,
    spec: MelSpec = MelSpec(),
    f0_min: float = 65.0,
    f0_max: float = 400.0,
    threshold: float = 0.2,
) -> np.ndarray:
    """F0 in Hz per mel frame (len(audio) // hop values), 0 where unvoiced (YIN)."""
    audio = np.asarray(audio, dtype=np.float64)
    n_frames = audio.shape[0] // spec.hop
    max_lag = int(spec.sample_rate / f0_min)
    min_lag = int(spec.sample_rate / f0_max)
    w = int(0.025 * spec.sample_rate)  # 25 ms integration window
    size = w + max_lag
    padded = np.pad(audio, (size // 2, size), mode="constant")
    starts = np.arange(n_frames) * spec.hop + spec.hop // 2 - w // 2 + size // 2
    frames = np.lib.stride_tricks.sliding_window_view(padded, size)[starts]
    # Difference function d(tau) = sum (x_j - x_{j+tau})^2 over the first w samples, via FFT.
    x = frames
    energy = np.cumsum(np.pad(x**2, ((0, 0), (1, 0))), axis=1)
    fft_n = 1 << (2 * size - 1).bit_length()
    spectrum = np.fft.rfft(x, fft_n)
    kernel = np.fft.rfft(x[:, :w][:, ::-1], fft_n)
    corr = np.fft.irfft(spectrum * kernel, fft_n)[:, w - 1 : w - 1 + max_lag + 1]
    lags = np.arange(max_lag + 1)
    e0 = energy[:, w][:, None]
    etau = energy[:, lags + w] - energy[:, lags]
    diff = np.maximum(e0 + etau - 2 * corr, 0.0)
    cmnd = np.ones_like(diff)
    running = np.cumsum(diff[:, 1:], axis=1)
    cmnd[:, 1:] = diff[:, 1:] * lags[1:] / np.maximum(running, 1e-12)
    f0 = np.zeros(n_frames)
    loud = energy[:, -1] / size > 1e-5
    for i in np.flatnonzero(loud):
        row = cmnd[i, min_lag:]
        below = np.flatnonzero(row < threshold)
        if below.size:
            tau = below[0]
        elif row.min() < 2 * threshold:  # no dip under the threshold: the deepest one, if clear enough
            tau = int(np.argmin(row))
        else:
            continue
        while tau + 1 < row.size and row[tau + 1] < row[tau]:
            tau += 1
        if 0 < tau < row.size - 1:  # parabolic interpolation around the minimum
            a, b, c = row[tau - 1], row[tau], row[tau + 1]
            denom = a - 2 * b + c
            shift = 0.5 * (a - c) / denom if abs(denom) > 1e-12 else 0.0
        else:
            shift = 0.0
        f0[i] = spec.sample_rate / (tau + min_lag + shift)
    return f0


def smooth_log_f0(f0: np.ndarray, width: int = 5) -> np.ndarray:
    """The pitch processor: log-F0 with unvoiced frames filled by interpolation, octave jumps and
    microprosody removed by a median then a moving average; all zeros stay zeros (no voicing)."""
    voiced = f0 > 0
    if voiced.sum() < 2:
        return np.zeros_like(f0)
    logf = np.log(np.where(voiced, f0, 1.0))
    idx = np.arange(f0.size)
    filled = np.interp(idx, idx[voiced], logf[voiced])
    half = width // 2
    padded = np.pad(filled, half, mode="edge")
    med = np.median(np.lib.stride_tricks.sliding_window_view(padded, width), axis=1)
    kernel = np.ones(width) / width
    return np.convolve(np.pad(med, half, mode="edge"), kernel, mode="valid")
