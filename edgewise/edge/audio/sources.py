"""Audio sources for the edge pipeline: each yields float32 mono blocks at 16 kHz.

- :class:`WavFileSource` reads files through :func:`edgewise.audio.load_audio` (its checks and
  notices included);
- :class:`StdinSource` reads a pipe: raw s16le at a given rate, or a WAV stream;
- :class:`MicrophoneSource` captures with sounddevice (PortAudio). Its callback only copies the
  block into a bounded queue, never waits, and counts what it had to drop when the consumer
  falls behind.

Live sources at another rate go through a :class:`StreamResampler`; several channels are averaged.
"""

from __future__ import annotations

import logging
import os
import queue
import struct
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from edgewise.audio import StreamResampler, check_finite, load_audio, to_mono
from edgewise.errors import AudioError, MissingDependencyError

if TYPE_CHECKING:
    from edgewise.edge.audio.config import AudioInputConfig

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000  # what every source yields
BLOCK_SECONDS = 0.1  # default block length
# Capture as 16-bit PCM, what sound cards deliver natively: half the bytes of float32 in the
# callback, and ALSA's file plugin (the virtual capture device of the tests) skips data when its
# plug layer converts to float.
CAPTURE_DTYPE = "int16"


class AudioSource:
    """Iterable of float32 mono blocks at :data:`SAMPLE_RATE`; usable as a context manager."""

    sample_rate = SAMPLE_RATE

    def __iter__(self) -> Iterator[np.ndarray]:
        raise NotImplementedError

    def close(self) -> None:
        """Release the device or stream (idempotent)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _limit(blocks: Iterable[np.ndarray], max_samples: int | None) -> Iterator[np.ndarray]:
    """Pass blocks through until ``max_samples`` have gone by (the last one is cut to fit)."""
    sent = 0
    try:
        for block in blocks:
            if max_samples is not None and sent + block.size >= max_samples:
                yield block[: max_samples - sent]
                return
            sent += block.size
            if block.size:
                yield block
    finally:
        close = getattr(blocks, "close", None)
        if close is not None:
            close()  # a generator's own finally (closing the device) runs now, not at garbage collection


# --- files ------------------------------------------------------------------------------------


class WavFileSource(AudioSource):
    """Audio files in order, each read whole by ``load_audio`` and yielded in blocks.

    A block never spans two files. Use :meth:`files` to treat each file as its own stream; with
    ``on_error`` a file that cannot be used (missing, truncated, corrupt, non-finite, silent) is
    handed to it and skipped, so one bad file neither stops nor restarts the rest.
    ``check_files=False`` leaves missing files to that per-file handling instead of refusing the
    whole list up front.
    """

    def __init__(
        self,
        paths: str | os.PathLike | Iterable[str | os.PathLike],
        *,
        blocksize: int = 1600,
        check_files: bool = True,
    ) -> None:
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        self.paths = [Path(p) for p in paths]
        if not self.paths:
            raise AudioError("file source: no audio files given")
        missing = [str(p) for p in self.paths if not p.is_file()]
        if missing and check_files:
            raise AudioError(f"audio file(s) not found: {', '.join(missing)}")
        if blocksize <= 0:
            raise ValueError(f"blocksize must be positive, got {blocksize}")
        self.blocksize = blocksize

    def files(
        self, on_error: Callable[[Path, AudioError], None] | None = None
    ) -> Iterator[tuple[Path, np.ndarray]]:
        """Each file as (path, whole float32 mono 16 kHz signal), in order, each once.

        Without ``on_error`` an unusable file raises its AudioError; with it, the error is passed
        to ``on_error(path, error)`` and the next file follows.
        """
        for path in self.paths:
            try:
                audio = load_audio(path, SAMPLE_RATE)
            except AudioError as exc:
                if on_error is None:
                    raise
                on_error(path, exc)
                continue
            yield path, audio

    def __iter__(self) -> Iterator[np.ndarray]:
        for _, audio in self.files():
            for i in range(0, audio.size, self.blocksize):
                yield audio[i : i + self.blocksize]


# --- stdin ------------------------------------------------------------------------------------

_WAV_ENCODINGS = {  # (format tag, bits per sample) -> numpy dtype and scale to [-1, 1]
    (1, 16): ("<i2", 1 / 32768),
    (1, 32): ("<i4", 1 / 2147483648),
    (3, 32): ("<f4", 1.0),
}
_WAVE_FORMAT_EXTENSIBLE = 0xFFFE


@dataclass(frozen=True)
class StreamFormat:
    samplerate: int
    channels: int
    dtype: str
    scale: float

    @property
    def frame_bytes(self) -> int:
        return np.dtype(self.dtype).itemsize * self.channels


def _read_exact(stream: IO[bytes], n: int) -> bytes:
    """Read up to ``n`` bytes, looping over short reads; fewer only at end of stream."""
    chunks, got = [], 0
    while got < n:
        chunk = stream.read(n - got)
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _parse_wav_header(stream: IO[bytes], label: str) -> tuple[StreamFormat, int | None]:
    """Read the chunks after the 12 RIFF bytes up to 'data'; return the format and the data size."""
    fmt = None
    while True:
        chunk = _read_exact(stream, 8)
        if len(chunk) < 8:
            raise AudioError(f"{label}: WAV stream ended before its data chunk")
        chunk_id, size = struct.unpack("<4sI", chunk)
        if chunk_id == b"data":
            if fmt is None:
                raise AudioError(f"{label}: WAV stream has no 'fmt ' chunk before its data")
            # Writers to a pipe cannot know the length: 0 and 0xFFFFFFFF mean "until the end".
            return fmt, (None if size in (0, 0xFFFFFFFF) else size)
        body = _read_exact(stream, size + (size & 1))
        if chunk_id != b"fmt ":
            continue
        if len(body) < 16:
            raise AudioError(f"{label}: WAV 'fmt ' chunk is truncated")
        tag, channels, rate, _, _, bits = struct.unpack("<HHIIHH", body[:16])
        if tag == _WAVE_FORMAT_EXTENSIBLE and len(body) >= 26:
            tag = struct.unpack("<H", body[24:26])[0]
        if (tag, bits) not in _WAV_ENCODINGS or channels < 1 or rate < 1:
            raise AudioError(
                f"{label}: unsupported WAV encoding (format tag {tag}, {bits} bits, {channels} channels, "
                f"{rate} Hz); expected PCM 16/32-bit or float 32-bit, e.g. sox ... -t wav -e signed -b 16 -"
            )
        dtype, scale = _WAV_ENCODINGS[(tag, bits)]
        fmt = StreamFormat(rate, channels, dtype, scale)


class StdinSource(AudioSource):
    """Audio piped to this process: raw s16le (``samplerate``, ``channels``) or a WAV stream.

    ``format='auto'`` looks at the first bytes: a RIFF/WAVE header means WAV, anything else raw.
    A WAV stream's own rate and channel count override ``samplerate`` and ``channels``.
    """

    def __init__(
        self,
        stream: IO[bytes] | None = None,
        *,
        format: str = "auto",
        samplerate: int = SAMPLE_RATE,
        channels: int = 1,
        blocksize: int | None = None,
        duration_s: float | None = None,
    ) -> None:
        if format not in ("auto", "raw", "wav"):
            raise ValueError(f"stdin format must be 'auto', 'raw' or 'wav', got {format!r}")
        self._stream = stream
        self.format = format
        self.raw_format = StreamFormat(int(samplerate), int(channels), "<i2", 1 / 32768)
        self.blocksize = blocksize
        self.duration_s = duration_s
        self.label = "stdin"
        self.stream_format: StreamFormat | None = None  # known once reading has started

    def _open(self) -> tuple[IO[bytes], StreamFormat, bytes, int | None]:
        stream = self._stream if self._stream is not None else sys.stdin.buffer
        head = b"" if self.format == "raw" else _read_exact(stream, 12)
        is_wav = head[:4] == b"RIFF" and head[8:12] == b"WAVE"
        if self.format == "wav" and not is_wav:
            raise AudioError(f"{self.label}: expected a WAV stream (RIFF/WAVE header), got {head[:12]!r}")
        if is_wav:
            fmt, data_size = _parse_wav_header(stream, self.label)
            return stream, fmt, b"", data_size
        return stream, self.raw_format, head, None

    def __iter__(self) -> Iterator[np.ndarray]:
        max_samples = None if self.duration_s is None else int(round(self.duration_s * SAMPLE_RATE))
        return _limit(self._blocks(), max_samples)

    def _blocks(self) -> Iterator[np.ndarray]:
        stream, fmt, carry, remaining = self._open()
        self.stream_format = fmt
        resampler = StreamResampler(fmt.samplerate, SAMPLE_RATE)
        frames = self.blocksize or max(1, int(round(BLOCK_SECONDS * fmt.samplerate)))
        total = total_frames = 0
        while True:
            want = frames * fmt.frame_bytes - len(carry)
            if remaining is not None:
                want = min(want, remaining)
            data = carry + (_read_exact(stream, want) if want > 0 else b"")
            if remaining is not None:
                remaining -= len(data) - len(carry)
            usable = len(data) - len(data) % fmt.frame_bytes
            carry = data[usable:]
            if usable:
                total += usable
                samples = np.frombuffer(data[:usable], dtype=fmt.dtype).astype(np.float32) * fmt.scale
                samples = samples.reshape(-1, fmt.channels)
                if fmt.dtype == "<f4":  # only float WAV can carry NaN or Inf
                    where = f"{self.label}, block from {total_frames / fmt.samplerate:.2f} s"
                    check_finite(samples, where, fmt.samplerate)
                total_frames += samples.shape[0]
                block = to_mono(samples) if fmt.channels > 1 else samples[:, 0]
                yield resampler.process(block)
            if len(data) < frames * fmt.frame_bytes or remaining == 0:
                break
        if total == 0:
            raise AudioError(f"{self.label}: no audio received (empty input)")
        if carry:
            log.info("%s: ignored %d trailing bytes (less than one frame)", self.label, len(carry))
        yield resampler.flush()


# --- microphone -------------------------------------------------------------------------------


def _sounddevice():
    try:
        import sounddevice
    except OSError as exc:  # the PortAudio library itself is missing
        raise MissingDependencyError(
            f"microphone input needs the PortAudio library ({exc}); install with: apt-get install libportaudio2"
        ) from None
    except ImportError as exc:
        raise MissingDependencyError(
            f"microphone input needs sounddevice ({exc}); install with: pip install sounddevice"
        ) from None
    return sounddevice


@dataclass(frozen=True)
class InputDevice:
    index: int
    name: str
    hostapi: str
    max_input_channels: int
    default_samplerate: float
    is_default: bool

    def describe(self) -> str:
        mark = " (default)" if self.is_default else ""
        return (
            f"{self.index} '{self.name}'{mark} [{self.hostapi}, {self.max_input_channels} ch, "
            f"{self.default_samplerate:.0f} Hz]"
        )


def list_input_devices() -> list[InputDevice]:
    """Capture devices PortAudio can see (empty without a sound card)."""
    sd = _sounddevice()
    try:
        devices = sd.query_devices()
        hostapis = sd.query_hostapis()
    except sd.PortAudioError as exc:
        log.debug("PortAudio could not list devices: %s", exc)
        return []
    default_in = _default_input_index(sd)
    return [
        InputDevice(
            index=i,
            name=d["name"],
            hostapi=hostapis[d["hostapi"]]["name"],
            max_input_channels=d["max_input_channels"],
            default_samplerate=d["default_samplerate"],
            is_default=i == default_in,
        )
        for i, d in enumerate(devices)
        if d["max_input_channels"] > 0
    ]


def _default_input_index(sd: Any) -> int:
    try:
        return int(sd.default.device[0])
    except (TypeError, ValueError, IndexError):
        return -1


def _device_list_text(devices: list[InputDevice]) -> str:
    if not devices:
        return "no input devices found (no sound card, or none visible to PortAudio/ALSA)"
    return "available input devices: " + "; ".join(d.describe() for d in devices)


@dataclass
class CaptureStats:
    """What the microphone delivered and what was lost on the way."""

    blocks: int = 0
    frames: int = 0
    dropped_blocks: int = 0  # the queue was full: the consumer fell behind
    dropped_frames: int = 0
    input_overflows: int = 0  # PortAudio reported that the device's own buffer overflowed


class MicrophoneSource(AudioSource):
    """Capture from a sound card with sounddevice; blocks come out at 16 kHz mono.

    ``device`` is None (the default input), an index, or a name (a unique part of one).
    ``samplerate`` None opens the device at 16 kHz when it allows that, else at its default rate.
    ``blocksize`` is in frames at the device rate (default 0.1 s). Up to ``queue_blocks`` blocks
    wait for the consumer; beyond that new blocks are dropped and counted in :attr:`stats`.
    The device is checked when the source is made; it is opened by iterating (or :meth:`start`).
    ``latency`` is PortAudio's device buffer ("high" by default: fewer overflows, and blocks of
    0.1 s are the pace anyway).
    """

    def __init__(
        self,
        device: int | str | None = None,
        samplerate: int | None = None,
        blocksize: int | None = None,
        channels: int = 1,
        *,
        queue_blocks: int = 100,
        duration_s: float | None = None,
        latency: str | float = "high",
    ) -> None:
        self._sd = sd = _sounddevice()
        devices = list_input_devices()
        self.device = self._resolve(device, devices)
        info = next(d for d in devices if d.index == self.device)
        self.device_name = info.name
        if channels > info.max_input_channels:
            raise AudioError(
                f"audio input device '{info.name}' has {info.max_input_channels} input channel(s), "
                f"{channels} requested"
            )
        self.channels = channels
        self.samplerate = self._pick_rate(samplerate, info)
        self.blocksize = blocksize or max(1, int(round(BLOCK_SECONDS * self.samplerate)))
        self.latency = latency
        self.duration_s = duration_s
        self.stats = CaptureStats()
        self._queue: queue.Queue[np.ndarray] = queue.Queue(maxsize=queue_blocks)
        self._stream: Any = None
        self._sd_error = sd.PortAudioError

    def _resolve(self, device: int | str | None, devices: list[InputDevice]) -> int:
        listing = _device_list_text(devices)
        if not devices:
            raise AudioError(f"no audio input device: {listing}; use a file or stdin source instead")
        if isinstance(device, str) and device.strip().isdigit():
            device = int(device)
        if device is None:
            default = _default_input_index(self._sd)
            if default < 0 or all(d.index != default for d in devices):
                raise AudioError(f"no default audio input device; choose one by name or index: {listing}")
            return default
        if isinstance(device, int):
            if all(d.index != device for d in devices):
                raise AudioError(f"audio input device {device} not found; {listing}")
            return device
        try:
            return int(self._sd.query_devices(device, "input")["index"])
        except ValueError as exc:  # no match, or several
            reason = "matches several devices" if "ultiple" in str(exc) else "not found"
            raise AudioError(f"audio input device '{device}' {reason}; {listing}") from None

    def _pick_rate(self, samplerate: int | None, info: InputDevice) -> int:
        candidates = [samplerate] if samplerate else [SAMPLE_RATE, int(info.default_samplerate)]
        reason = ""
        for rate in candidates:
            try:
                self._sd.check_input_settings(
                    device=self.device, channels=self.channels, samplerate=rate, dtype=CAPTURE_DTYPE
                )
                return int(rate)
            except self._sd.PortAudioError as exc:
                reason = str(exc)
        raise AudioError(
            f"audio input device '{info.name}' cannot capture {self.channels} channel(s) at "
            f"{' or '.join(str(r) for r in candidates)} Hz ({reason})"
        )

    def _callback(self, indata: np.ndarray, frames: int, time: Any, status: Any) -> None:
        # Runs on PortAudio's thread: copy and hand over, never wait.
        if status.input_overflow:
            self.stats.input_overflows += 1
        try:
            self._queue.put_nowait(indata.copy())
        except queue.Full:
            self.stats.dropped_blocks += 1
            self.stats.dropped_frames += frames

    def start(self) -> None:
        """Open and start the capture stream (iteration does this itself)."""
        if self._stream is not None:
            return
        while not self._queue.empty():  # blocks left from an earlier run
            self._queue.get_nowait()
        try:
            self._stream = self._sd.InputStream(
                device=self.device,
                samplerate=self.samplerate,
                blocksize=self.blocksize,
                channels=self.channels,
                dtype=CAPTURE_DTYPE,
                latency=self.latency,
                callback=self._callback,
            )
            self._stream.start()
        except self._sd_error as exc:
            self._stream = None
            raise AudioError(
                f"audio input device '{self.device_name}': cannot start capture ({exc})"
            ) from None
        log.info(
            "capturing from '%s' at %d Hz, %d channel(s), %d-frame blocks",
            self.device_name,
            self.samplerate,
            self.channels,
            self.blocksize,
        )

    def close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is None:
            return
        try:
            stream.abort()
            stream.close()
        except self._sd_error as exc:
            log.debug("closing the capture stream: %s", exc)
        if self.stats.dropped_blocks or self.stats.input_overflows:
            log.warning(
                "'%s': %d block(s) (%.1f s) dropped because processing fell behind, %d device overflow(s)",
                self.device_name,
                self.stats.dropped_blocks,
                self.stats.dropped_frames / self.samplerate,
                self.stats.input_overflows,
            )

    def __iter__(self) -> Iterator[np.ndarray]:
        max_samples = None if self.duration_s is None else int(round(self.duration_s * SAMPLE_RATE))
        return _limit(self._blocks(), max_samples)

    def _blocks(self) -> Iterator[np.ndarray]:
        resampler = StreamResampler(self.samplerate, SAMPLE_RATE)
        self.start()
        try:
            while True:
                try:
                    data = self._queue.get(timeout=1.0)
                except queue.Empty:
                    if self._stream is None or not self._stream.active:
                        raise AudioError(
                            f"audio input device '{self.device_name}' stopped delivering audio"
                        ) from None
                    continue
                self.stats.blocks += 1
                self.stats.frames += data.shape[0]
                samples = data.astype(np.float32) * (1 / 32768)
                yield resampler.process(to_mono(samples) if samples.shape[1] > 1 else samples[:, 0])
        finally:
            self.close()


# --- from config ------------------------------------------------------------------------------


def open_source(config: AudioInputConfig, *, check_files: bool = True) -> AudioSource:
    """The source that ``config.source`` names, set up from the config.

    ``check_files=False``: a file source does not refuse missing files up front (the daemon reports
    each unusable file on its own and moves on).
    """
    if config.source == "file":
        return WavFileSource(
            config.files,
            blocksize=config.blocksize or int(BLOCK_SECONDS * SAMPLE_RATE),
            check_files=check_files,
        )
    if config.source == "stdin":
        return StdinSource(
            format=config.stdin_format,
            samplerate=config.samplerate or SAMPLE_RATE,
            channels=config.channels,
            blocksize=config.blocksize,
            duration_s=config.duration_s,
        )
    return MicrophoneSource(
        config.device,
        config.samplerate,
        config.blocksize,
        config.channels,
        queue_blocks=config.queue_blocks,
        duration_s=config.duration_s,
    )
