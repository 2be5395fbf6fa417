"""Audio I/O shared by training and the edge runtime (numpy + soundfile, never torch).

``load_audio`` is the one way edgewise reads a file: it checks the container, refuses what cannot
be used (corrupt, truncated, empty, non-finite, silent) with an :class:`~edgewise.errors.AudioError`
that names the file, and fixes what can be fixed (stereo, another sample rate) with a logged notice.
``check_finite`` is the one NaN/Inf check that every other entry point (streams, commands) calls.
Resampling, whole-signal and streaming, is libsoxr's (python-soxr).
"""

from __future__ import annotations

import io
import logging
import os
import struct
from pathlib import Path
from typing import BinaryIO

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
    with path.open("rb") as fh:
        _check_riff(fh, path.stat().st_size, str(path))


def check_wav_bytes(data: bytes, where: str) -> None:
    """:func:`check_wav_container` for a WAV file held in memory (``where`` names it in errors)."""
    _check_riff(io.BytesIO(data), len(data), where)


def _check_riff(fh: BinaryIO, size: int, where: str) -> None:
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
                    f"{where}: truncated wav: header declares {chunk_size} bytes of audio, "
                    f"file holds {available}"
                )
            return
        pos += 8 + chunk_size + (chunk_size & 1)
    raise AudioError(f"{where}: wav file has no data chunk (corrupt or truncated)")


def check_finite(audio: np.ndarray, where: str, sample_rate: int | None = None) -> None:
    """Refuse audio holding NaN or infinite samples with an AudioError naming ``where``.

    Such samples come from a broken float WAV or a bad upstream computation; a model fed them
    returns NaN probabilities, so every entry point (files, streams, commands) checks with this.
    """
    audio = np.asarray(audio)
    finite = np.isfinite(audio)
    if finite.all():
        return
    bad = ~finite
    n_nan = int(np.isnan(audio).sum())
    n_inf = int(bad.sum()) - n_nan
    frames = bad.reshape(audio.shape[0], -1).any(axis=1) if audio.ndim else bad.reshape(1)
    first = int(np.flatnonzero(frames)[0])
    at = f"sample {first}" + (f" ({first / sample_rate:.2f} s)" if sample_rate else "")
    raise AudioError(
        f"{where}: non-finite audio: {n_nan} NaN and {n_inf} infinite sample(s), the first at {at}; "
        "expected finite samples in [-1, 1]"
    )


def _soxr():
    try:
        import soxr
    except ImportError as exc:
        raise MissingDependencyError(
            f"resampling audio needs python-soxr ({exc}); install with: pip install soxr"
        ) from None
    return soxr


def _check_rates(sr_in: int, sr_out: int) -> None:
    if sr_in <= 0 or sr_out <= 0:
        raise ValueError(f"sample rates must be positive, got {sr_in} -> {sr_out}")


def resample(audio: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Band-limited resampling of a 1-D signal with libsoxr (high quality, no added delay).

    The output has ``round(n * sr_out / sr_in)`` samples. Live audio cut into blocks goes through
    :class:`StreamResampler` instead (the same filter, with its state carried between blocks).
    """
    _check_rates(sr_in, sr_out)
    if sr_in == sr_out or audio.size == 0:
        return audio.astype(np.float32, copy=False)
    out = _soxr().resample(np.ascontiguousarray(audio, dtype=np.float32), sr_in, sr_out, quality="HQ")
    return out.astype(np.float32, copy=False)


class StreamResampler:
    """Resample a stream of 1-D blocks from ``sr_in`` to ``sr_out`` with libsoxr's streaming resampler.

    The filter's state is carried between blocks, so the output does not depend on how the input
    was split and equals :func:`resample` of the whole signal. Each call returns what can be
    computed so far (libsoxr holds back a few ms of input); :meth:`flush` returns the rest, after
    which the total length is ``round(n_in * sr_out / sr_in)``, and starts a new stream.
    """

    def __init__(self, sr_in: int, sr_out: int) -> None:
        _check_rates(sr_in, sr_out)
        self.sr_in, self.sr_out = int(sr_in), int(sr_out)
        self._stream = None
        self.reset()

    @property
    def passthrough(self) -> bool:
        return self.sr_in == self.sr_out

    def reset(self) -> None:
        """Forget the stream so far: the next block starts a new one."""
        if not self.passthrough:
            self._stream = _soxr().ResampleStream(self.sr_in, self.sr_out, 1, dtype="float32", quality="HQ")

    def process(self, block: np.ndarray) -> np.ndarray:
        block = np.ascontiguousarray(block, dtype=np.float32).reshape(-1)
        if self.passthrough:
            return block
        return self._stream.resample_chunk(block)

    def flush(self) -> np.ndarray:
        """Return the remaining output and reset."""
        if self.passthrough:
            return np.zeros(0, dtype=np.float32)
        out = self._stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
        self.reset()
        return out


def to_mono(audio: np.ndarray) -> np.ndarray:
    """Average channels of a (frames, channels) array; 1-D input is returned as is."""
    return audio if audio.ndim == 1 else audio.mean(axis=1)


def read_audio(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Decode ``path`` as float32 at its own rate and channel count: ``(samples[, channels]), rate``.

    Raises AudioError for a missing, corrupt, truncated (data shorter than the header says,
    header only), empty or non-finite file, naming it. No level checks, no conversion.
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
    check_finite(audio, str(path), sr)
    return audio, int(sr)


def check_not_silent(audio: np.ndarray, where: str) -> None:
    """Refuse audio whose peak is below :data:`SILENCE_PEAK` (nothing a model could classify)."""
    peak = float(np.max(np.abs(audio)))
    if peak < SILENCE_PEAK:
        raise AudioError(f"{where}: silent audio (peak {peak:.2e} of full scale); expected speech")


def load_audio(path: str | os.PathLike, sample_rate: int = 16000, *, strict: bool = False) -> np.ndarray:
    """Read ``path`` as float32 mono at ``sample_rate``.

    Raises AudioError for a missing, corrupt, truncated, empty, non-finite or silent file. Stereo is
    downmixed and another rate is resampled, each with a logged notice; with ``strict=True``
    both are refused instead. Clipping above 1% of samples is logged, not refused.
    """
    path = Path(path)
    audio, sr = read_audio(path)
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
    check_not_silent(audio, str(path))
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
