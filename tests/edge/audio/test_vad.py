"""SileroVAD against an independent reference, its state across calls, refusals; EnergyVAD; the fallback."""

import logging

import numpy as np
import pytest

from edgewise.edge.audio import vad as vad_module
from edgewise.edge.audio.vad import EnergyVAD, SileroVAD, build_vad, find_silero_vad_onnx
from edgewise.errors import ConfigError
from tests.conftest import require_module
from tests.edge.audio.conftest import SR


def window_labels(track, n_windows, hangover_s=0.25):
    """1 for windows inside a known sentence, 0 for silence, -1 for windows left out: those at a
    boundary and the ``hangover_s`` after each sentence (Silero stays high for a while)."""
    labels = np.zeros(n_windows, dtype=int)
    for a, b in track.bounds:
        first, last = a // 512, (b - 1) // 512
        labels[first : last + 1] = 1
        labels[first] = -1
        labels[last : last + 1 + int(hangover_s * SR) // 512] = -1
    return labels


def test_silero_matches_the_batched_sequence_model(silero_onnx, speech_track):
    # silero-vad also ships a batched model: frames of (64 context + 512) samples in one call, with
    # its own LSTM state. Same probabilities means SileroVAD carries state and context correctly.
    ort = require_module("onnxruntime")
    reference = silero_onnx.parent / "silero_vad_16k_sequence.onnx"
    if not reference.is_file():
        pytest.skip("this silero-vad release does not ship silero_vad_16k_sequence.onnx")
    audio = speech_track.audio[: speech_track.audio.size // 512 * 512]
    frames = audio.reshape(-1, 512)
    context = np.vstack([np.zeros((1, 64), np.float32), frames[:-1, -64:]])
    zeros = np.zeros((1, 1, 128), np.float32)
    session = ort.InferenceSession(str(reference), providers=["CPUExecutionProvider"])
    (expected, *_) = session.run(None, {"input": np.hstack([context, frames]), "h": zeros, "c": zeros})

    probs = SileroVAD(silero_onnx).probabilities(audio)
    assert probs.shape == (frames.shape[0],)
    np.testing.assert_allclose(probs, expected, atol=1e-5)


def test_silero_gives_the_same_probabilities_however_the_stream_is_split(silero_onnx, speech_track):
    audio = speech_track.audio
    whole = SileroVAD(silero_onnx).probabilities(audio)
    vad = SileroVAD(silero_onnx)
    pieces = [vad.probabilities(audio[i : i + 700]) for i in range(0, audio.size, 700)]
    np.testing.assert_array_equal(np.concatenate(pieces), whole)


def test_silero_reset_starts_a_new_stream(silero_onnx, speech_track):
    vad = SileroVAD(silero_onnx)
    first = vad.probabilities(speech_track.audio[:16000])
    vad.probabilities(speech_track.audio[16000:40000] + 0.0)  # moves the state on
    vad.reset()
    np.testing.assert_array_equal(vad.probabilities(speech_track.audio[:16000]), first)


@pytest.mark.parametrize(
    ("make", "speech_fraction"),
    [(lambda p: SileroVAD(p), 0.9), (lambda p: EnergyVAD(), 0.6)],  # measured: 0.95 and 0.76
    ids=["silero", "energy"],
)
def test_speech_windows_score_high_and_silence_low(make, speech_fraction, silero_onnx, speech_track):
    probs = make(silero_onnx).probabilities(speech_track.audio)
    labels = window_labels(speech_track, probs.size)
    silence, speech = probs[labels == 0], probs[labels == 1]
    assert np.all(silence < 0.35), np.round(silence, 2)
    assert np.mean(speech >= 0.5) > speech_fraction, np.round(speech, 2)  # words have short gaps


def test_energy_vad_adapts_to_a_louder_noise_floor():
    rng = np.random.default_rng(3)
    noise = (0.02 * rng.standard_normal(3 * SR)).astype(np.float32)  # -34 dBFS: above min_level_db
    tone = 0.3 * np.sin(2 * np.pi * 300 * np.arange(SR) / SR).astype(np.float32)
    audio = noise.copy()
    audio[SR : 2 * SR] += tone
    probs = EnergyVAD().probabilities(audio)
    assert np.all(probs[2:31] < 0.1) and np.all(probs[63:93] < 0.1), np.round(probs, 2)
    assert np.all(probs[32:61] > 0.9), np.round(probs, 2)


def test_a_missing_model_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.onnx: Silero VAD model file not found"):
        SileroVAD(tmp_path / "nope.onnx")


def test_a_corrupt_model_file_is_refused(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model" * 100)
    with pytest.raises(ConfigError, match=r"bad\.onnx: cannot load the VAD model"):
        SileroVAD(bad)


def test_a_model_with_another_interface_is_refused(silero_onnx):
    other = silero_onnx.parent / "silero_vad_16k_sequence.onnx"  # inputs input, h, c
    if not other.is_file():
        pytest.skip("no second Silero model to try")
    with pytest.raises(ConfigError, match=r"not a Silero VAD v5 model: inputs \['c', 'h', 'input'\]"):
        SileroVAD(other)


def test_threshold_out_of_range_is_refused(silero_onnx):
    with pytest.raises(ConfigError, match="threshold must be in"):
        SileroVAD(silero_onnx, threshold=1.2)


def test_find_silero_vad_onnx_returns_none_without_the_package(monkeypatch, silero_onnx):
    assert find_silero_vad_onnx() == silero_onnx and silero_onnx.name == "silero_vad.onnx"
    monkeypatch.setattr(vad_module.importlib.util, "find_spec", lambda name: None)
    assert find_silero_vad_onnx() is None


def test_build_vad_falls_back_to_energy_with_a_logged_reason(monkeypatch, caplog):
    monkeypatch.setattr(vad_module, "find_silero_vad_onnx", lambda: None)
    with caplog.at_level(logging.WARNING, logger="edgewise.edge.audio.vad"):
        vad = build_vad("silero", threshold=0.6)
    assert isinstance(vad, EnergyVAD) and vad.threshold == 0.6
    assert "no Silero VAD model" in caplog.text and "energy VAD" in caplog.text


def test_build_vad_uses_a_given_model_and_refuses_a_bad_one(silero_onnx, tmp_path):
    assert isinstance(build_vad("silero", silero_onnx), SileroVAD)
    assert build_vad("none") is None
    with pytest.raises(ConfigError, match="missing.onnx"):
        build_vad("silero", tmp_path / "missing.onnx")  # an explicit path is never silently replaced
