"""The audio of an ``infer`` command, decoded and checked before anything runs.

The daemon's ``infer`` command carries its audio in the payload, either as a whole WAV file (mono or
stereo; other containers such as FLAC or OGG are refused unread) or as raw PCM16 with its rate::

    {"action": "infer", "args": {"wav_b64": "<base64 of a .wav file>"}}
    {"action": "infer", "args": {"pcm16_b64": "<base64 of s16le mono>", "sample_rate": 16000}}

:func:`decode_infer_audio` turns ``args`` into float32 mono audio at 16 kHz or raises a
:class:`~edgewise.errors.ConfigError` (a missing or malformed argument) or an
:class:`~edgewise.errors.AudioError` (audio that cannot be used: undecodable, empty, non-finite,
too short for the model, too long), whose message says what is wrong; the daemon returns that
message in the command's ack. It is pure: no model, no daemon, no I/O.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

import numpy as np

from edgewise.audio import check_finite, check_wav_bytes, resample, to_mono
from edgewise.edge.command_args import decode_base64
from edgewise.errors import AudioError, ConfigError

SAMPLE_RATE = 16000  # what the pipelines take
MIN_SAMPLE_RATE = 8000  # the range a capture source accepts (AudioInputConfig.samplerate)
MAX_SAMPLE_RATE = 384000
AUDIO_KEYS = ("wav_b64", "pcm16_b64")
WAV_FORMATS = ("WAV", "WAVEX", "RF64")  # soundfile's names for the RIFF/WAVE containers
MAX_CHANNELS = 2  # an utterance for the model is mono or stereo; more is refused before decoding


def _b64(args: Mapping[str, Any], key: str) -> bytes:
    return decode_base64(args[key], f"infer: args.{key}", error=AudioError, type_error=ConfigError)


def _sample_rate(value: Any, where: str) -> int:
    """A whole number of Hz in [MIN_SAMPLE_RATE, MAX_SAMPLE_RATE] (16000.0 from JSON counts as whole)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"infer: {where} must be a whole number of Hz, got {value!r}")
    if not MIN_SAMPLE_RATE <= value <= MAX_SAMPLE_RATE:
        raise ConfigError(
            f"infer: {where} must be between {MIN_SAMPLE_RATE} and {MAX_SAMPLE_RATE} Hz, got {value}"
        )
    return value


def _check_length(n_samples: int, sample_rate: int, max_seconds: float, min_samples: int) -> None:
    seconds = n_samples / sample_rate
    if seconds > max_seconds:
        raise AudioError(f"infer: {seconds:.1f} s of audio is over max_infer_seconds ({max_seconds:g})")
    at_16k = int(round(n_samples * SAMPLE_RATE / sample_rate))
    if at_16k < min_samples:
        raise AudioError(
            f"infer: {seconds * 1000:.0f} ms of audio is too short; the model needs at least "
            f"{min_samples / SAMPLE_RATE * 1000:.0f} ms ({min_samples} samples at {SAMPLE_RATE} Hz)"
        )


def _decode_wav(data: bytes, max_seconds: float) -> tuple[np.ndarray, int]:
    """Read the header first (:func:`soundfile.info`), decode only a WAV file within the limits.

    libsndfile opens FLAC, OGG and a dozen more formats, and even a WAV may hold compressed audio
    (GSM 6.10, ADPCM, MP3): a few hundred KB can declare an hour. So the container, the channel
    count and the declared length are checked before a sample is decoded, which bounds the decoded
    array to ``max_seconds * rate * MAX_CHANNELS`` float32 samples.
    """
    import soundfile as sf

    where = "infer: args.wav_b64"
    check_wav_bytes(data, where)
    try:
        info = sf.info(io.BytesIO(data))
    except (RuntimeError, TypeError, ValueError, sf.LibsndfileError) as exc:
        raise AudioError(f"{where} is not a readable WAV file ({exc})") from None
    if info.format not in WAV_FORMATS:
        raise AudioError(
            f"{where} is a {info.format} file ({info.format_info}), not WAV; send a WAV file, or raw "
            "PCM16 in args.pcm16_b64"
        )
    sr = _sample_rate(int(info.samplerate), "the WAV file's sample rate")
    if not 1 <= info.channels <= MAX_CHANNELS:
        raise AudioError(
            f"{where} has {info.channels} channels; at most {MAX_CHANNELS} (mono or stereo) are accepted"
        )
    _check_length(int(info.frames), sr, max_seconds, 0)  # declared in the header: nothing decoded yet
    try:
        audio, _ = sf.read(io.BytesIO(data), dtype="float32", always_2d=False)
    except (RuntimeError, TypeError, ValueError, sf.LibsndfileError) as exc:
        raise AudioError(f"{where} is not a readable WAV file ({exc})") from None
    return audio, sr


def decode_infer_audio(
    args: Any, *, max_seconds: float, min_samples: int = 0, sample_rate_default: int = SAMPLE_RATE
) -> np.ndarray:
    """``args`` of an ``infer`` command -> float32 mono audio at 16 kHz, validated.

    ``max_seconds`` is the longest audio accepted, checked before the audio is decoded: from the
    payload's length for PCM16, from the header for a WAV file. ``min_samples`` is the fewest 16 kHz
    samples the model can classify (:func:`min_samples_of` a pipeline). ``pcm16_b64`` without ``sample_rate`` is taken as
    ``sample_rate_default``.
    """
    if not isinstance(args, Mapping):
        raise ConfigError(f"infer: args must be an object, got {type(args).__name__}")
    given = [k for k in AUDIO_KEYS if k in args]
    if len(given) != 1:
        what = "both" if given else "neither"
        raise ConfigError(
            f"infer needs exactly one of args.wav_b64 (a WAV file) or args.pcm16_b64 with "
            f"args.sample_rate; got {what}"
        )
    if given[0] == "wav_b64":
        if "sample_rate" in args:
            raise ConfigError("infer: args.sample_rate goes with pcm16_b64 only; a WAV file carries its own")
        audio, sr = _decode_wav(_b64(args, "wav_b64"), max_seconds)
    else:
        sr = _sample_rate(args.get("sample_rate", sample_rate_default), "args.sample_rate")
        b64 = args["pcm16_b64"]
        if isinstance(b64, str):  # bound the work before decoding: 4 base64 characters per 3 bytes
            _check_length(len(b64) * 3 // 4 // 2, sr, max_seconds, 0)
        raw = _b64(args, "pcm16_b64")
        if len(raw) % 2:
            raise AudioError(
                f"infer: args.pcm16_b64 holds {len(raw)} bytes, an odd number; PCM16 is 2 bytes a sample"
            )
        audio = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768
    if audio.size == 0:
        raise AudioError("infer: the audio holds no samples")
    check_finite(audio, "infer: audio", sr)
    audio = to_mono(audio) if audio.ndim > 1 else audio
    _check_length(audio.shape[0], sr, max_seconds, min_samples)
    if sr != SAMPLE_RATE:
        audio = resample(audio, sr, SAMPLE_RATE)
    return np.ascontiguousarray(audio, dtype=np.float32)


def min_samples_of(pipeline: Any) -> int:
    """The fewest 16 kHz samples ``pipeline`` can classify (0 when it does not say).

    A pipeline may declare ``min_samples``; an SER pipeline's comes from its model's
    ``min_frames`` (the manifest's ``extra.min_frames``) and its front-end's hop: ``n`` samples
    make ``1 + n // hop`` frames.
    """
    declared = getattr(pipeline, "min_samples", None)
    if isinstance(declared, int):
        return declared
    min_frames, features = getattr(pipeline, "min_frames", None), getattr(pipeline, "features", None)
    hop = getattr(features, "hop_length", None)
    if isinstance(min_frames, int) and isinstance(hop, int):
        return max(0, (min_frames - 1) * hop)
    return 0
