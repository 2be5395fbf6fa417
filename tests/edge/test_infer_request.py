"""The ``infer`` command's arguments are decoded and checked before the model runs, and each
problem is named (these messages are what the command's ack carries)."""

from __future__ import annotations

import base64
import io
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf

from edgewise.edge.infer_request import decode_infer_audio, min_samples_of
from edgewise.errors import AudioError, ConfigError
from edgewise.features import LogMelConfig, num_frames

SR = 16000


def tone(seconds: float, sr: int = SR) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def pcm16_args(audio: np.ndarray, **extra) -> dict:
    raw = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()
    return {"pcm16_b64": base64.b64encode(raw).decode(), **extra}


def wav_args(audio: np.ndarray, sr: int = SR, subtype: str = "PCM_16") -> dict:
    buf = io.BytesIO()
    sf.write(buf, audio, sr, format="WAV", subtype=subtype)
    return {"wav_b64": base64.b64encode(buf.getvalue()).decode()}


def decode(args, **kw):
    return decode_infer_audio(args, max_seconds=kw.pop("max_seconds", 10.0), **kw)


def test_pcm16_at_16k_comes_back_as_float32():
    audio = decode(pcm16_args(tone(1.0), sample_rate=16000))
    assert audio.dtype == np.float32 and audio.shape == (16000,)
    np.testing.assert_allclose(audio, tone(1.0), atol=2 / 32768)


def test_pcm16_without_a_rate_is_16k_and_other_rates_are_resampled():
    assert decode(pcm16_args(tone(0.5))).shape == (8000,)
    assert decode(pcm16_args(tone(1.0, 44100), sample_rate=44100)).shape == (16000,)
    assert decode(pcm16_args(tone(1.0, 44100), sample_rate=44100.0)).shape == (16000,)  # JSON float


def test_a_stereo_wav_at_another_rate_becomes_mono_16k():
    stereo = np.stack([tone(1.0, 22050), tone(1.0, 22050)], axis=1)
    audio = decode(wav_args(stereo, 22050))
    assert audio.ndim == 1 and audio.shape == (16000,)


@pytest.mark.parametrize(
    ("rate", "message"),
    [
        (0, "args.sample_rate must be between 8000 and 384000 Hz, got 0"),
        (-16000, "must be between 8000 and 384000 Hz, got -16000"),
        (10**9, "must be between 8000 and 384000 Hz, got 1000000000"),
        (16000.5, "must be a whole number of Hz, got 16000.5"),
        ("16000", "must be a whole number of Hz, got '16000'"),
        (True, "must be a whole number of Hz, got True"),
        (None, "must be a whole number of Hz, got None"),
    ],
)
def test_a_bad_sample_rate_is_named(rate, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        decode(pcm16_args(tone(1.0), sample_rate=rate))


@pytest.mark.parametrize(
    ("args", "error", "message"),
    [
        ({}, ConfigError, "exactly one of args.wav_b64 .* got neither"),
        ({"wav_b64": "AAAA", "pcm16_b64": "AAAA"}, ConfigError, "got both"),
        ([1, 2], ConfigError, "args must be an object, got list"),
        ({"pcm16_b64": 12345}, ConfigError, "args.pcm16_b64 must be a base64 string, got int"),
        (
            {"pcm16_b64": "%%% not base64"},
            AudioError,
            "args.pcm16_b64 could not be decoded: not valid base64",
        ),
        ({"pcm16_b64": ""}, AudioError, r"args.pcm16_b64 holds nothing \(0 bytes\)"),
        ({"pcm16_b64": "AAAA"}, AudioError, "3 bytes, an odd number"),
        ({"wav_b64": base64.b64encode(b"not a wav at all").decode()}, AudioError, "not a readable WAV"),
        ({**wav_args(tone(1.0)), "sample_rate": 8000}, ConfigError, "sample_rate goes with pcm16_b64 only"),
    ],
    ids=[
        "none",
        "both",
        "not-a-mapping",
        "not-a-string",
        "bad-base64",
        "empty",
        "odd",
        "not-wav",
        "wav-rate",
    ],
)
def test_missing_or_malformed_arguments_are_named(args, error, message):
    with pytest.raises(error, match=message):
        decode(args)


def test_a_truncated_wav_is_refused_not_read_short():
    args = wav_args(tone(1.0))
    data = base64.b64decode(args["wav_b64"])
    with pytest.raises(AudioError, match="truncated wav: header declares 32000 bytes"):
        decode({"wav_b64": base64.b64encode(data[: len(data) // 2]).decode()})


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_samples_are_refused(bad):
    audio = tone(1.0)
    audio[8000] = bad
    with pytest.raises(
        AudioError, match=r"infer: audio: non-finite audio: .* the first at sample 8000 \(0.50 s\)"
    ):
        decode(wav_args(audio, subtype="FLOAT"))


def test_too_long_is_refused_before_decoding_and_too_short_names_the_minimum():
    with pytest.raises(AudioError, match=r"infer: 94.7 s of audio is over max_infer_seconds \(60\)"):
        decode({"pcm16_b64": "A" * 4_040_000}, max_seconds=60)  # 3 MB: refused from the length alone
    with pytest.raises(AudioError, match=r"2.0 s of audio is over max_infer_seconds \(1.5\)"):
        decode(wav_args(tone(2.0)), max_seconds=1.5)
    with pytest.raises(
        AudioError, match=r"infer: 10 ms of audio is too short; the model needs at least 20 ms"
    ):
        decode(pcm16_args(tone(0.01)), min_samples=320)
    assert decode(pcm16_args(tone(0.02)), min_samples=320).size == 320


def test_the_minimum_comes_from_the_model_frames_and_the_hop():
    features = LogMelConfig()
    pipeline = SimpleNamespace(min_frames=5, features=features)
    need = min_samples_of(pipeline)
    assert num_frames(need, features) == 5 and num_frames(need - 1, features) == 4
    assert min_samples_of(SimpleNamespace(min_samples=1234)) == 1234
    assert min_samples_of(object()) == 0


def _peak_bytes_of(fn) -> tuple[BaseException | None, int]:
    """Run ``fn``; the exception it raised (or None) and the peak memory it traced (numpy arrays count)."""
    import tracemalloc

    tracemalloc.start()
    try:
        fn()
        error = None
    except BaseException as exc:  # noqa: BLE001 - returned to the test, which asserts on it
        error = exc
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return error, peak


def test_a_flac_file_is_refused_by_its_header_before_it_is_decoded():
    """A 10-minute FLAC of silence is a few KB; it is named as FLAC and never decoded (decoding
    would allocate 38 MB of float32)."""
    buf = io.BytesIO()
    sf.write(buf, np.zeros(SR * 600, np.float32), SR, format="FLAC")
    assert len(buf.getvalue()) < 100_000
    args = {"wav_b64": base64.b64encode(buf.getvalue()).decode()}
    error, peak = _peak_bytes_of(lambda: decode(args, max_seconds=3600))
    assert isinstance(error, AudioError)
    assert "args.wav_b64 is a FLAC file (FLAC (Free Lossless Audio Codec)), not WAV" in str(error)
    assert peak < 2_000_000, peak


def test_a_compressed_wav_declaring_more_than_the_limit_is_refused_before_decoding():
    """GSM 6.10 in a WAV: 5 minutes at 8 kHz in under 500 KB, refused from the header's length
    with less memory than the 9.6 MB its samples would take as float32."""
    buf = io.BytesIO()
    sf.write(buf, np.zeros(8000 * 300, np.float32), 8000, format="WAV", subtype="GSM610")
    args = {"wav_b64": base64.b64encode(buf.getvalue()).decode()}
    error, peak = _peak_bytes_of(lambda: decode(args, max_seconds=60))
    assert isinstance(error, AudioError)
    assert str(error) == "infer: 300.0 s of audio is over max_infer_seconds (60)"
    assert peak < 3_000_000, peak
    ok = io.BytesIO()
    sf.write(ok, tone(1.0, 8000), 8000, format="WAV", subtype="GSM610")
    audio = decode({"wav_b64": base64.b64encode(ok.getvalue()).decode()})
    assert 16000 <= audio.size <= 16640  # GSM 6.10 fills its last 320-sample block


def test_more_than_two_channels_are_refused_before_decoding():
    with pytest.raises(AudioError, match="args.wav_b64 has 3 channels; at most 2 .mono or stereo."):
        decode(wav_args(np.zeros((16000, 3), np.float32)))
