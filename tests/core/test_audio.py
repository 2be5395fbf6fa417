"""load_audio: what it refuses (naming the file) and what it fixes (with a notice)."""

import logging

import numpy as np
import pytest
import soundfile as sf

from edgewise.audio import StreamResampler, check_finite, load_audio, read_audio, resample, write_wav
from edgewise.errors import AudioError


def tone(seconds=0.5, sr=16000, freq=220.0, amp=0.3):
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_reads_mono_16k(tmp_path):
    path = write_wav(tmp_path / "a.wav", tone(), 16000)
    audio = load_audio(path)
    assert audio.dtype == np.float32 and audio.shape == (8000,)
    np.testing.assert_allclose(audio, tone(), atol=1 / 32767)


def test_truncated_wav_is_refused(tmp_path):
    path = write_wav(tmp_path / "t.wav", tone(1.0), 16000)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(AudioError, match=r"t\.wav: truncated wav"):
        load_audio(path)


def test_header_only_wav_is_refused(tmp_path):
    path = write_wav(tmp_path / "h.wav", tone(1.0), 16000)
    path.write_bytes(path.read_bytes()[:44])  # the header promises 32000 bytes of audio, none follow
    with pytest.raises(
        AudioError, match=r"h\.wav: truncated wav: header declares 32000 bytes of audio, file holds 0"
    ):
        load_audio(path)


@pytest.mark.parametrize(
    ("bad", "counts"), [(np.nan, "2 NaN and 0 infinite"), (np.inf, "0 NaN and 2 infinite")]
)
def test_non_finite_samples_are_refused_naming_the_file_and_where(tmp_path, bad, counts):
    audio = tone(1.0)
    audio[[4000, 12000]] = bad
    path = tmp_path / "nf.wav"
    sf.write(path, audio, 16000, subtype="FLOAT")
    message = rf"nf\.wav: non-finite audio: {counts} sample\(s\), the first at sample 4000 \(0\.25 s\)"
    with pytest.raises(AudioError, match=message):
        load_audio(path)
    with pytest.raises(AudioError, match=message):
        read_audio(path)


def test_check_finite_passes_finite_audio_and_names_the_place_otherwise():
    check_finite(tone(), "here")  # no error
    stereo = np.zeros((10, 2), dtype=np.float32)
    stereo[7, 1] = -np.inf
    with pytest.raises(
        AudioError,
        match=r"^stream: non-finite audio: 0 NaN and 1 infinite sample\(s\), the first at sample 7;",
    ):
        check_finite(stereo, "stream")


def test_corrupt_file_is_refused(tmp_path):
    path = tmp_path / "c.wav"
    path.write_bytes(b"this is not audio at all" * 10)
    with pytest.raises(AudioError, match=r"c\.wav: cannot decode"):
        load_audio(path)


def test_missing_file(tmp_path):
    with pytest.raises(AudioError, match="not found"):
        load_audio(tmp_path / "nope.wav")


def test_empty_and_silent(tmp_path):
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, dtype=np.float32), 16000, subtype="PCM_16")
    with pytest.raises(AudioError, match=r"empty\.wav: empty audio"):
        load_audio(empty)
    silent = write_wav(tmp_path / "silent.wav", np.zeros(16000, dtype=np.float32), 16000)
    with pytest.raises(AudioError, match=r"silent\.wav: silent audio"):
        load_audio(silent)


def test_stereo_is_downmixed_with_notice_or_refused_when_strict(tmp_path, caplog):
    stereo = np.stack([tone(), tone(freq=330.0)], axis=1)
    path = tmp_path / "st.wav"
    sf.write(path, stereo, 16000, subtype="PCM_16")
    with caplog.at_level(logging.INFO):
        audio = load_audio(path)
    assert audio.ndim == 1 and "downmixed" in caplog.text
    with pytest.raises(AudioError, match="expected mono audio, got 2 channels"):
        load_audio(path, strict=True)


def test_other_rate_is_resampled_with_notice_or_refused_when_strict(tmp_path, caplog):
    path = write_wav(tmp_path / "r.wav", tone(1.0, sr=22050), 22050)
    with caplog.at_level(logging.INFO):
        audio = load_audio(path, 16000)
    assert audio.shape == (16000,) and "resampled from 22050" in caplog.text
    with pytest.raises(AudioError, match="expected 16000 Hz, got 22050 Hz"):
        load_audio(path, 16000, strict=True)


def test_clipped_audio_is_reported(tmp_path, caplog):
    path = write_wav(tmp_path / "clip.wav", np.clip(tone(amp=3.0), -1, 1), 16000)
    with caplog.at_level(logging.WARNING):
        load_audio(path)
    assert "clip.wav" in caplog.text and "clipped" in caplog.text


def test_resample_keeps_a_tone_and_length():
    x = tone(1.0, sr=22050, freq=440.0)
    y = resample(x, 22050, 16000)
    assert y.shape == (16000,)
    spectrum = np.abs(np.fft.rfft(y))
    assert abs(np.argmax(spectrum) - 440) <= 1  # 1 Hz bins for a 1 s signal


@pytest.mark.parametrize(("sr_in", "n"), [(44100, 1000), (48000, 7), (8000, 1), (22050, 22050)])
def test_resample_length_is_the_rounded_ratio(sr_in, n):
    y = resample(np.random.default_rng(0).standard_normal(n).astype(np.float32), sr_in, 16000)
    assert y.dtype == np.float32 and y.shape == (round(n * 16000 / sr_in),)


def test_the_stream_and_the_whole_signal_resample_alike():
    """One implementation (libsoxr): blocks through StreamResampler give resample() of the whole."""
    x = tone(1.0, sr=44100, freq=440.0)
    r = StreamResampler(44100, 16000)
    streamed = np.concatenate([*(r.process(x[i : i + 441]) for i in range(0, x.size, 441)), r.flush()])
    np.testing.assert_allclose(streamed, resample(x, 44100, 16000), atol=1e-6)


@pytest.mark.parametrize("rates", [(0, 16000), (16000, -1)])
def test_resample_refuses_a_rate_that_is_not_positive(rates):
    with pytest.raises(ValueError, match="sample rates must be positive"):
        resample(tone(), *rates)
    with pytest.raises(ValueError, match="sample rates must be positive"):
        StreamResampler(*rates)


def test_write_wav_leaves_no_temp_files(tmp_path):
    write_wav(tmp_path / "x.wav", tone(), 16000)
    assert [p.name for p in tmp_path.iterdir()] == ["x.wav"]
