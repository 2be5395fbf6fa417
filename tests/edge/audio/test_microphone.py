"""MicrophoneSource through a virtual ALSA capture device, and the errors when there is no usable one.

PortAudio reads the ALSA configuration once, when it starts, so each case runs in its own process
with ``ALSA_CONFIG_PATH`` pointing at a config whose default capture device is ALSA's ``file``
plugin reading a raw s16le file (it delivers the file as fast as it is read, not in real time).
"""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from edgewise.edge.audio import sources
from edgewise.errors import MissingDependencyError
from tests.conftest import require_module
from tests.edge.audio.conftest import SR, assert_matches_known, run_python

require_module("sounddevice", exc_type=OSError)  # PortAudio (libportaudio2) must be installed

ALSA_CONF = """
pcm.nullin {{ type null }}
pcm.filein {{ type file  slave.pcm "nullin"  file "/dev/null"  infile "{raw}"  format "raw" }}
pcm.!default {{ type plug  slave {{ pcm "filein" format S16_LE }} }}
"""

CAPTURE = """
import json, sys, time
import numpy as np
from edgewise.edge.audio import MicrophoneSource, UtteranceSegmenter, build_vad
args = json.loads(sys.argv[1])
sleep = args.pop("sleep", 0)
mic = MicrophoneSource(**args)
blocks = []
for block in mic:
    blocks.append(block)
    time.sleep(sleep)
audio = np.concatenate(blocks)
np.save(sys.argv[2], audio)
utterances = UtteranceSegmenter(build_vad("silero"), speech_pad_s=0.05).segment([audio])
print(json.dumps({"rate": mic.samplerate, "stats": vars(mic.stats),
                  "utterances": [[u.speech_start, u.speech_end] for u in utterances]}))
"""


def virtual_mic(tmp_path: Path, pcm: np.ndarray) -> dict[str, str]:
    raw = tmp_path / "mic.raw"
    raw.write_bytes(np.asarray(pcm, dtype="<i2").tobytes())
    conf = tmp_path / "asound.conf"
    conf.write_text(ALSA_CONF.format(raw=raw))
    return {"ALSA_CONFIG_PATH": f"/usr/share/alsa/alsa.conf:{conf}"}


def capture(tmp_path, env, **kwargs):
    out = tmp_path / "captured.npy"
    result = run_python(CAPTURE, env=env, args=[json.dumps(kwargs), str(out)])
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout), np.load(out)


def to_pcm(audio):
    return np.round(np.clip(audio, -1, 1) * 32767).astype(np.int16)


def test_a_44k_stereo_device_gives_16k_mono_and_the_utterances(tmp_path, speech_track, silero_onnx):
    from edgewise.audio import resample

    at_44k = resample(speech_track.audio, SR, 44100)
    stereo = np.stack([at_44k, at_44k], axis=1)  # frames interleaved as ALSA does
    env = virtual_mic(tmp_path, to_pcm(stereo))
    seconds = speech_track.audio.size / SR
    out, audio = capture(tmp_path, env, samplerate=44100, channels=2, duration_s=seconds, queue_blocks=200)
    assert out["rate"] == 44100 and audio.size == speech_track.audio.size
    middle = slice(1000, -1000)
    assert np.max(np.abs(audio[middle] - speech_track.audio[middle])) < 0.1  # only the top band differs
    assert_matches_known(out["utterances"], speech_track)


def test_the_default_device_opens_at_16k_and_delivers_the_samples_exactly(
    tmp_path, speech_track, silero_onnx
):
    pcm = to_pcm(speech_track.audio)
    env = virtual_mic(tmp_path, pcm)
    out, audio = capture(tmp_path, env, duration_s=pcm.size / SR, queue_blocks=200)
    assert out["rate"] == SR  # the device allows 16 kHz: no resampling
    np.testing.assert_array_equal(audio, pcm.astype(np.float32) / 32768)


def test_a_full_queue_drops_blocks_counts_them_and_keeps_the_callback_going(
    tmp_path, speech_track, silero_onnx
):
    pcm = to_pcm(speech_track.audio)
    env = virtual_mic(tmp_path, pcm)
    out, audio = capture(tmp_path, env, blocksize=1600, queue_blocks=4, duration_s=1.0, sleep=0.01)
    stats = out["stats"]
    assert stats["dropped_blocks"] > 0 and stats["dropped_frames"] == 1600 * stats["dropped_blocks"]
    np.testing.assert_array_equal(audio[:6400], pcm[:6400] / 32768)  # what was queued came through intact


def test_an_unknown_device_name_lists_the_devices_there_are(tmp_path, speech_track):
    env = virtual_mic(tmp_path, to_pcm(speech_track.audio))
    code = "from edgewise.edge.audio import MicrophoneSource\nMicrophoneSource('no such mic')"
    result = run_python(code, env=env)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("edgewise.errors.AudioError: audio input device 'no such mic' not found;")
    assert "available input devices:" in last and "'default' (default)" in last


def test_no_sound_card_is_a_clear_error(tmp_path):
    if any(Path("/proc/asound").glob("card[0-9]*")):
        pytest.skip("this machine has a sound card")
    env = {"ALSA_CONFIG_PATH": "/usr/share/alsa/alsa.conf"}  # the system config, without a virtual device
    code = (
        "from edgewise.edge.audio import MicrophoneSource, list_input_devices\n"
        "print(list_input_devices(), flush=True)\n"
        "MicrophoneSource()"
    )
    result = run_python(code, env=env)
    assert result.returncode == 1 and result.stdout.strip() == "[]"
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("edgewise.errors.AudioError: no audio input device: no input devices found")


def test_without_portaudio_the_error_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "sounddevice", None)  # import now fails
    with pytest.raises(MissingDependencyError, match="pip install sounddevice"):
        sources.MicrophoneSource()
    with pytest.raises(MissingDependencyError):
        sources.list_input_devices()
