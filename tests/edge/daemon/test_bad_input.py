"""Bad audio cannot hurt the daemon: a real daemon process, a real Mosquitto, real files and pipes.

Each unusable input is one ``error`` event that names it (or one failed ack that says what is
wrong), is never counted as an inference, and the daemon carries on with the next input.
"""

from __future__ import annotations

import base64
import io
import shutil
import subprocess
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.edge.daemon.conftest import TOPICS, ack_for, command
from tests.edge.daemon.test_daemon import pcm16

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


def float_wav(audio: np.ndarray) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, audio, 16000, format="WAV", subtype="FLOAT")
    return buf.getvalue()


def bad_files(folder: Path, track) -> dict[str, Path]:
    """Unusable files, each broken in a different way, keyed by what is wrong with it."""
    data = track.wav.read_bytes()
    with_nan = track.audio.copy()
    with_nan[20000] = np.nan
    files = {
        "truncated": (folder / "truncated.wav", data[: len(data) // 2]),  # cut in the middle of the data
        "header-only": (folder / "header_only.wav", data[:44]),
        "non-finite": (folder / "nan.wav", float_wav(with_nan)),
    }
    for path, content in files.values():
        path.write_bytes(content)
    return {**{k: p for k, (p, _) in files.items()}, "missing": folder / "gone.wav"}


def test_each_bad_file_is_one_error_and_every_good_file_is_classified_once(
    root, broker, subscribe, daemons, speech_track, tmp_path
):
    folder = tmp_path / "audio"
    folder.mkdir()
    good, good2 = folder / "good.wav", folder / "good2.wav"
    shutil.copy(speech_track.wav, good)
    shutil.copy(speech_track.wav, good2)
    bad = bad_files(folder, speech_track)
    files = [good, *bad.values(), good2]
    sub = subscribe(broker, TOPICS)
    d = daemons(
        root, broker, {"source": "file", "files": [str(f) for f in files]}, exit_when_input_ends=True
    ).start()
    try:
        code = d.proc.wait(timeout=60)  # before the fix it looped over the first files forever
    except subprocess.TimeoutExpired:
        raise AssertionError(
            f"the daemon did not exit at the end of its files:\n{d.output()[-3000:]}"
        ) from None
    assert code == 0, d.output()[-3000:]

    def totals(ps):
        reports = [p for p in ps if p.type == "telemetry"]
        return sum(p.inferences for p in reports), sum(p.inference_errors for p in reports)

    payloads = sub.wait_for(lambda ps: totals(ps) == (6, 4), timeout=20)
    time.sleep(0.5)  # anything late (a file classified twice) would arrive now
    payloads = sub.payloads()
    events = [p for p in payloads if p.type == "event"]
    assert Counter(Path(e.source.name).name for e in events) == {"good.wav": 3, "good2.wav": 3}
    assert len({e.id for e in events}) == 6
    errors = [p for p in payloads if p.type == "error"]
    assert [e.code for e in errors] == ["audio"] * 4
    named = {Path(e.detail["source"]["name"]).name: e.message for e in errors}
    assert set(named) == {p.name for p in bad.values()}  # one error per bad file, in the file order
    assert [Path(e.detail["source"]["name"]) for e in errors] == list(bad.values())
    assert "truncated wav" in named["truncated.wav"] and "truncated wav" in named["header_only.wav"]
    assert "non-finite audio: 1 NaN" in named["nan.wav"] and "not found" in named["gone.wav"]
    assert all(str(folder) in e.message for e in errors)
    assert totals(payloads) == (6, 4)  # bad files count as errors, never as inferences
    assert "Traceback" not in d.output()


def test_bad_infer_arguments_and_non_finite_audio_are_named_and_the_daemon_keeps_serving(
    root, broker, subscribe, daemons, speech_track, tmp_path
):
    with_inf = speech_track.audio.copy()
    with_inf[16000:16010] = np.inf
    stream = tmp_path / "stream.wav"
    stream.write_bytes(float_wav(with_inf))  # a float WAV stream on stdin (a file: no pipe to fill)
    sub = subscribe(broker, TOPICS)
    with stream.open("rb") as stdin:
        d = daemons(root, broker, {"source": "stdin"}).start(stdin=stdin)
    d.wait_health(lambda h: h["ok"])
    sub.wait_for(lambda ps: any(p.type == "status" and p.state == "online" for p in ps))
    errors = sub.wait_for(lambda ps: any(p.type == "error" for p in ps), timeout=30)
    error = next(p for p in errors if p.type == "error")
    assert error.code == "audio" and "stdin" in error.message
    assert "non-finite audio: 0 NaN and 10 infinite sample(s)" in error.message

    speech = speech_track.audio[speech_track.bounds[0][0] : speech_track.bounds[0][1]]
    b64 = base64.b64encode(pcm16(speech)).decode()
    with_nan = speech.copy()
    with_nan[100] = np.nan
    cases = {
        "rate0": (
            {"pcm16_b64": b64, "sample_rate": 0},
            "args.sample_rate must be between 8000 and 384000 Hz, got 0",
        ),
        "rate-": ({"pcm16_b64": b64, "sample_rate": -16000}, "got -16000"),
        "rate?": ({"pcm16_b64": b64, "sample_rate": "fast"}, "must be a whole number of Hz, got 'fast'"),
        "short": ({"pcm16_b64": base64.b64encode(pcm16(speech[:80])).decode()}, "5 ms of audio is too short"),
        "nan": ({"wav_b64": base64.b64encode(float_wav(with_nan)).decode()}, "non-finite audio: 1 NaN"),
        "none": ({}, "infer needs exactly one of args.wav_b64"),
    }
    for cmd_id, (args, _) in cases.items():
        command(broker, "infer", args, cmd_id)
    for cmd_id, (_, message) in cases.items():
        ack = ack_for(sub, cmd_id)
        assert ack.ok is False and message in ack.error, (cmd_id, ack.error)
        assert "Traceback" not in ack.error and "inference failed" not in ack.error

    command(broker, "infer", {"pcm16_b64": b64, "sample_rate": 16000}, "good")
    ack = ack_for(sub, "good")
    assert ack.ok and ack.result["label"] in ack.result["probabilities"]
    events = sub.wait_count("event", 1)
    assert [e.source.kind for e in events] == ["command"]  # only the good infer; nothing from stdin
    assert d.proc.poll() is None
    assert d.stop() == 0
