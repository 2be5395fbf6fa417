"""WavFileSource and StdinSource: whatever comes in, 16 kHz mono float32 blocks come out."""

import io
import json
import logging
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from edgewise.edge.audio.sources import StdinSource, WavFileSource
from edgewise.errors import AudioError
from tests.edge.audio.conftest import REPO, SR, assert_matches_known

PIPELINE = """
import json, sys
from edgewise.edge.audio import AudioInputConfig, UtteranceSegmenter, build_vad, open_source
config = AudioInputConfig(source="stdin", stdin_format=sys.argv[1], samplerate=int(sys.argv[2]),
                          channels=int(sys.argv[3]), vad="silero")
segmenter = UtteranceSegmenter.from_config(config, build_vad(config.vad, None, config.threshold))
source = open_source(config)
found = [[u.speech_start, u.speech_end] for u in segmenter.segment(source)]
print(json.dumps({"utterances": found, "rate": source.stream_format.samplerate}))
"""


def similarity(a, b):
    n = min(a.size, b.size)
    return float(np.dot(a[:n], b[:n]) / (np.linalg.norm(a[:n]) * np.linalg.norm(b[:n])))


def sox(*args):
    return subprocess.run(["sox", *map(str, args)], check=True, capture_output=True).stdout


# --- WavFileSource -----------------------------------------------------------------------------


def test_a_stereo_44k_file_comes_out_16k_mono(tmp_path, speech_track, caplog):
    stereo = tmp_path / "stereo44.wav"
    sox(speech_track.wav, "-r", 44100, "-c", 2, stereo)
    assert sf.info(str(stereo)).channels == 2 and sf.info(str(stereo)).samplerate == 44100
    with caplog.at_level(logging.INFO, logger="edgewise.audio"):
        blocks = list(WavFileSource(stereo, blocksize=1600))
    assert all(b.dtype == np.float32 and b.ndim == 1 and b.size <= 1600 for b in blocks)
    audio = np.concatenate(blocks)
    assert abs(audio.size - speech_track.audio.size) <= 2
    assert similarity(audio, speech_track.audio) > 0.99
    assert "downmixed to mono" in caplog.text and "resampled from 44100 Hz" in caplog.text


def test_files_are_kept_apart(tmp_path, speech_track):
    short = tmp_path / "short.wav"
    sox(speech_track.wav, short, "trim", 0, 0.25)  # 4000 samples
    source = WavFileSource([short, speech_track.wav], blocksize=3000)
    assert [b.size for b in source][:3] == [3000, 1000, 3000]  # no block spans two files
    assert [(p.name, a.size) for p, a in source.files()] == [
        ("short.wav", 4000),
        ("track.wav", speech_track.audio.size),
    ]


def test_missing_files_are_named_up_front(tmp_path, speech_track):
    with pytest.raises(AudioError, match=r"audio file\(s\) not found: .*gone\.wav"):
        WavFileSource([speech_track.wav, tmp_path / "gone.wav"])


def test_with_on_error_each_bad_file_is_reported_once_and_the_rest_still_come(tmp_path, speech_track):
    truncated = tmp_path / "truncated.wav"
    truncated.write_bytes(speech_track.wav.read_bytes()[:5000])
    gone = tmp_path / "gone.wav"
    source = WavFileSource([truncated, speech_track.wav, gone, speech_track.wav], check_files=False)
    errors = []
    good = [p for p, _ in source.files(on_error=lambda p, e: errors.append((p, str(e))))]
    assert good == [speech_track.wav, speech_track.wav]
    assert [p for p, _ in errors] == [truncated, gone]
    assert "truncated wav" in errors[0][1] and "not found" in errors[1][1]
    with pytest.raises(AudioError, match="truncated wav"):  # without a handler the first bad file raises
        list(source.files())


# --- StdinSource -------------------------------------------------------------------------------


def test_raw_s16le_at_8k_is_resampled(speech_track):
    raw = sox(speech_track.wav, "-t", "raw", "-e", "signed", "-b", 16, "-r", 8000, "-")
    audio = np.concatenate(list(StdinSource(io.BytesIO(raw), format="raw", samplerate=8000)))
    assert abs(audio.size - speech_track.audio.size) <= 2
    assert similarity(audio, speech_track.audio) > 0.95  # 8 kHz keeps only the band below 4 kHz


def test_a_wav_stream_sets_its_own_rate_and_channels(speech_track):
    wav = sox(speech_track.wav, "-r", 22050, "-c", 2, "-t", "wav", "-")
    source = StdinSource(io.BytesIO(wav), samplerate=44100, channels=1)  # overridden by the header
    audio = np.concatenate(list(source))
    assert (source.stream_format.samplerate, source.stream_format.channels) == (22050, 2)
    assert similarity(audio, speech_track.audio) > 0.99


def test_duration_limits_what_is_read(speech_track):
    raw = (speech_track.audio * 32767).astype("<i2").tobytes()
    audio = np.concatenate(list(StdinSource(io.BytesIO(raw), format="raw", duration_s=1.5)))
    assert audio.size == int(1.5 * SR)


def test_a_float_wav_stream_with_nan_is_refused_naming_where(speech_track):
    audio = speech_track.audio.copy()
    audio[20000] = np.nan
    buf = io.BytesIO()
    sf.write(buf, audio, SR, format="WAV", subtype="FLOAT")
    with pytest.raises(AudioError, match=r"stdin, block from 1\.20 s: non-finite audio: 1 NaN"):
        list(StdinSource(io.BytesIO(buf.getvalue())))


@pytest.mark.parametrize(
    ("data", "fmt", "message"),
    [
        (b"", "auto", "stdin: no audio received"),
        (b"\x00\x01" * 100, "wav", "stdin: expected a WAV stream"),
        (
            b"RIFF\x00\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00\x01\x00\x40\x1f\x00\x00\x40\x1f\x00\x00\x01\x00\x08\x00data",
            "auto",
            "stdin: unsupported WAV encoding",
        ),
    ],
    ids=["empty", "not-wav", "8-bit"],
)
def test_unusable_input_is_refused(data, fmt, message):
    with pytest.raises(AudioError, match=message):
        list(StdinSource(io.BytesIO(data), format=fmt))


@pytest.mark.parametrize(
    ("sox_out", "args"),
    [
        (["-t", "raw", "-e", "signed", "-b", "16", "-r", "22050", "-c", "2"], ["raw", "22050", "2"]),
        (["-r", "44100", "-c", "2", "-t", "wav"], ["auto", "16000", "1"]),
    ],
    ids=["raw-22k-stereo", "wav-44k-stereo"],
)
def test_a_real_pipe_into_a_real_process(sox_out, args, speech_track, silero_onnx):
    producer = subprocess.Popen(["sox", str(speech_track.wav), *sox_out, "-"], stdout=subprocess.PIPE)
    try:
        result = subprocess.run(
            [sys.executable, "-c", PIPELINE, *args],
            stdin=producer.stdout,
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=60,
        )
    finally:
        producer.stdout.close()
        producer.wait(timeout=10)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["rate"] == int(sox_out[sox_out.index("-r") + 1])
    assert_matches_known(out["utterances"], speech_track)
