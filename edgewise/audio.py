"""Audio I/O shared by training and the edge runtime (numpy + soundfile, never torch).

``load_audio`` is the one way edgewise reads a file: it checks the container, refuses what cannot
be used (corrupt, truncated, empty, silent) with an :class:`~edgewise.errors.AudioError` that names
the file, and fixes what can be fixed (stereo, another sample rate) with a logged notice.
"""

from __future__ import annotations

import logging
import os
import struct
from pathlib import Path

import numpy as np

from edgewise.errors import AudioError, MissingDependencyError
from edgewise.fsutil import atomic_path

log = logging.getLogger(__name__)

SILENCE_PEAK = 1e-4  # peak amplitude (full scale 1.0) below which a file counts as silent
CLIP_LEVEL = 0.999  # |sample| at or above this counts as clipped
CLIP_NOTICE_FRACTION = 0.01  # notice when more than 1% of samples are clipped


def _soundfile():
    try:
        import soundfile
    except (ImportError, OSError) as exc:  # OSError: libsndfile missing
        raise MissingDependencyError(
            f"reading audio needs soundfile and libsndfile ({exc}); "
            "install with: apt-get install libsndfile1 && pip install soundfile"
        ) from None
    return soundfile


def check_wav_container(path: Path) -> None:
    """Refuse a RIFF/WAVE file whose data chunk is shorter than its header says (a truncated copy).

    libsndfile silently reads what is there, so a half-copied file would otherwise train as a
    short utterance. Non-RIFF files are left to the decoder.
    """
    size = path.stat().st_size
    with path.open("rb") as fh:
        head = fh.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return
        pos = 12
        while pos + 8 <= size:
            fh.seek(pos)
            chunk_id, chunk_size = struct.unpack("<4sI", fh.read(8))
            if chunk_id == b"data":
                available = size - pos - 8
                if chunk_size != 0xFFFFFFFF and chunk_size > available:
                    raise AudioError(
                        f"{path}: truncated wav: header declares {chunk_size} bytes of audio, "
                        f"file holds {available}"
                    )
                return
            pos += 8 + chunk_size + (chunk_size & 1)
        raise AudioError(f"{path}: wav file has no data chunk (corrupt or truncated)")


def resample(audio: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Band-limited resampling of a 1-D signal by FFT (exact length ``round(n * sr_out / sr_in)``)."""
    if sr_in == sr_out or audio.size == 0:
        return audio.astype(np.float32, copy=False)
    n_in = audio.shape[0]
    n_out = max(1, int(round(n_in * sr_out / sr_in)))
    spec = np.fft.rfft(audio.astype(np.float64))
    keep = min(spec.shape[0], n_out // 2 + 1)
    out_spec = np.zeros(n_out // 2 + 1, dtype=np.complex128)
    out_spec[:keep] = spec[:keep]
    out = np.fft.irfft(out_spec, n=n_out) * (n_out / n_in)
    return out.astype(np.float32)


def to_mono(audio: np.ndarray) -> np.ndarray:
    """Average channels of a (frames, channels) array; 1-D input is returned as is."""
    return audio if audio.ndim == 1 else audio.mean(axis=1)


def load_audio(path: str | os.PathLike, sample_rate: int = 16000, *, strict: bool = False) -> np.ndarray:
    """Read ``path`` as float32 mono at ``sample_rate``.

    Raises AudioError for a missing, corrupt, truncated, empty or silent file. Stereo is
    downmixed and another rate is resampled, each with a logged notice; with ``strict=True``
    both are refused instead. Clipping above 1% of samples is logged, not refused.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: audio file not found")
    check_wav_container(path)
    sf = _soundfile()
    try:
        audio, sr = sf.read(str(path), dtype="float32", always_2d=False)
    except (RuntimeError, sf.LibsndfileError) as exc:
        raise AudioError(f"{path}: cannot decode audio ({exc})") from None
    if audio.size == 0:
        raise AudioError(f"{path}: empty audio (0 samples); expected speech")
    if audio.ndim == 2:
        if strict:
            raise AudioError(f"{path}: expected mono audio, got {audio.shape[1]} channels")
        log.info("%s: %d channels, downmixed to mono", path, audio.shape[1])
        audio = to_mono(audio)
    if sr != sample_rate:
        if strict:
            raise AudioError(f"{path}: expected {sample_rate} Hz, got {sr} Hz")
        log.info("%s: resampled from %d Hz to %d Hz", path, sr, sample_rate)
        audio = resample(audio, sr, sample_rate)
    peak = float(np.max(np.abs(audio)))
    if peak < SILENCE_PEAK:
        raise AudioError(f"{path}: silent audio (peak {peak:.2e} of full scale); expected speech")
    clipped = float(np.mean(np.abs(audio) >= CLIP_LEVEL))
    if clipped > CLIP_NOTICE_FRACTION:
        log.warning("%s: %.1f%% of samples are clipped at full scale", path, 100 * clipped)
    return np.ascontiguousarray(audio, dtype=np.float32)


def write_wav(path: str | os.PathLike, audio: np.ndarray, sample_rate: int) -> Path:
    """Write float audio in [-1, 1] as PCM16 wav atomically (temp file in the same folder, rename)."""
    sf = _soundfile()
    with atomic_path(path) as tmp:
        sf.write(tmp, np.clip(audio, -1.0, 1.0), sample_rate, subtype="PCM_16", format="WAV")
    return Path(path)
