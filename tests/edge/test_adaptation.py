"""Speaker-adaptive SER in the device pipeline: the bundle's head, per-speaker state, persistence.

The bundle (``adapt_bundle``) is the tiny tone-corpus run with a head fitted by ``edgewise train
ser-adapter`` and exported to ONNX: everything here runs the real pipeline in onnxruntime.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from edgewise.bundle import IntegrityError, load_bundle, sha256_file
from edgewise.devices import load_profile
from edgewise.edge.adaptation import AdaptationConfig, SpeakerAdaptation
from edgewise.edge.pipelines.ser import SERPipeline
from edgewise.errors import ConfigError
from edgewise.speaker_adapt import AdapterHead


def tone(f0: float, seconds: float = 1.0, seed: int = 0) -> np.ndarray:
    t = np.arange(int(16000 * seconds)) / 16000
    noise = np.random.default_rng(seed).normal(0, 0.01, t.size)
    return (0.3 * np.sin(2 * np.pi * f0 * t) + noise).astype(np.float32)


def open_pipeline(bundle, state_dir, **config) -> SERPipeline:
    pipe = SERPipeline.from_bundle(bundle, load_profile("x86-local"), threads=1)
    assert pipe.enable_adaptation(AdaptationConfig(**config), state_dir)
    return pipe


def test_the_fitted_run_records_what_it_was_fitted_on(adapt_bundle):
    head = AdapterHead.load(adapt_bundle.parent / "run" / "speaker_adapter.json")
    assert head.fitted["train_speakers"] == 6
    assert 0.0 <= head.fitted["val"]["ua_heard_0"] <= 1.0
    manifest = json.loads((adapt_bundle / "manifest.json").read_text())
    record = manifest["preprocessing"]["speaker_adaptation"]
    assert record["file"]["path"] == "ser/speaker_adapter.json"
    assert record["prior_weight"] == head.prior_weight


def test_heard_counts_per_speaker_and_unadapted_result_is_the_plain_models(adapt_bundle, tmp_path):
    plain = SERPipeline.from_bundle(adapt_bundle, load_profile("x86-local"), threads=1)
    pipe = open_pipeline(adapt_bundle, tmp_path, speaker="given")
    heard = [pipe.classify(tone(200 + 10 * i, seed=i), speaker="alice").adaptation["heard"] for i in range(3)]
    assert heard == [0, 1, 2]
    result = pipe.classify(tone(300), speaker="bob")
    assert result.adaptation["heard"] == 0 and result.adaptation["speaker"] == "bob"
    expected = plain.classify(tone(300))
    assert result.adaptation["unadapted"] == {
        "label": expected.label,
        "probabilities": expected.probabilities,
    }
    assert result.latency_ms >= result.frontend_ms + result.model_ms + result.adaptation["ms"] - 1e-6
    assert sum(result.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert pipe.describe()["adaptation"]["speakers"]["alice"]["heard"] == 3


def test_adaptation_moves_the_scores_once_a_speaker_is_known(adapt_bundle, tmp_path):
    pipe = open_pipeline(adapt_bundle, tmp_path)
    first = pipe.classify(tone(220)).probabilities
    for i in range(15):  # the device's one speaker, always at a much higher pitch
        pipe.classify(tone(380, seed=i + 1))
    again = pipe.classify(tone(220)).probabilities
    assert max(abs(first[k] - again[k]) for k in first) > 1e-3


def test_device_mode_counts_everything_for_one_speaker_given_mode_counts_only_named(adapt_bundle, tmp_path):
    device = open_pipeline(adapt_bundle, tmp_path / "device")
    device.classify(tone(200))
    second = device.classify(tone(210)).adaptation
    assert second["speaker"] == "device" and second["heard"] == 1
    assert device.adaptation.describe()["speakers"]["device"]["heard"] == 2
    given = open_pipeline(adapt_bundle, tmp_path / "given", speaker="given")
    result = given.classify(tone(200))
    assert result.adaptation["speaker"] is None and result.adaptation["heard"] == 0
    assert given.adaptation.describe()["speakers"] == {}


def test_state_survives_a_restart_and_resets(adapt_bundle, tmp_path):
    pipe = open_pipeline(adapt_bundle, tmp_path, speaker="given")
    for i in range(4):
        pipe.classify(tone(200, seed=i), speaker="alice")
    pipe.classify(tone(300), speaker="bob")
    again = open_pipeline(adapt_bundle, tmp_path, speaker="given")
    assert again.classify(tone(200), speaker="alice").adaptation["heard"] == 4
    assert again.adaptation.reset("alice") == ["alice"]
    state = json.loads((tmp_path / "ser-tiny.json").read_text())
    assert sorted(state["speakers"]) == ["bob"]
    with pytest.raises(ConfigError, match="no statistics for speaker 'carol'; known: \\['bob'\\]"):
        again.adaptation.reset("carol")
    assert again.adaptation.reset() == ["bob"]
    assert json.loads((tmp_path / "ser-tiny.json").read_text())["speakers"] == {}


def test_an_unusable_state_file_is_set_aside_and_the_device_starts_afresh(adapt_bundle, tmp_path, caplog):
    (tmp_path / "ser-tiny.json").write_text('{"format": "edgewise-speaker-state/1", "head_sha256": ')
    pipe = open_pipeline(adapt_bundle, tmp_path)
    assert pipe.classify(tone(200)).adaptation["heard"] == 0
    assert (tmp_path / "ser-tiny.bad").is_file()
    assert "unusable speaker statistics" in caplog.text


def test_statistics_of_another_head_are_not_used(adapt_bundle, tmp_path):
    pipe = open_pipeline(adapt_bundle, tmp_path)
    pipe.classify(tone(200))
    state = json.loads((tmp_path / "ser-tiny.json").read_text())
    state["head_sha256"] = "0" * 64
    (tmp_path / "ser-tiny.json").write_text(json.dumps(state))
    assert open_pipeline(adapt_bundle, tmp_path).classify(tone(200)).adaptation["heard"] == 0


def test_the_least_recently_heard_speaker_is_forgotten_beyond_max_speakers(adapt_bundle, tmp_path):
    pipe = open_pipeline(adapt_bundle, tmp_path, speaker="given", max_speakers=2)
    for name in ("a", "b", "c"):
        pipe.classify(tone(200), speaker=name)
    assert sorted(pipe.adaptation.describe()["speakers"]) == ["b", "c"]


def test_a_tampered_head_file_is_refused(adapt_bundle, tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(adapt_bundle, copy)
    head = json.loads((copy / "ser" / "speaker_adapter.json").read_text())
    head["bias"] = [b + 1.0 for b in head["bias"]]
    (copy / "ser" / "speaker_adapter.json").write_text(json.dumps(head))
    pipe = SERPipeline.from_bundle(copy, load_profile("x86-local"), threads=1)
    with pytest.raises(IntegrityError, match="speaker_adapter.json: (size|sha256) mismatch"):
        pipe.enable_adaptation(AdaptationConfig(), tmp_path / "state")


def test_a_bundle_without_a_head_classifies_without_adaptation(ser_bundle, tmp_path, caplog):
    pipe = SERPipeline.from_bundle(ser_bundle, load_profile("x86-local"), threads=1)
    assert pipe.enable_adaptation(AdaptationConfig(), tmp_path) is False
    assert "has no speaker adapter" in caplog.text
    assert "adaptation" not in pipe.classify(tone(200)).to_dict()


def test_head_labels_must_be_the_bundles(adapt_bundle, tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(adapt_bundle, copy)
    head = AdapterHead.load(copy / "ser" / "speaker_adapter.json")
    head.labels = list(reversed(head.labels))
    path = head.save(copy / "ser" / "speaker_adapter.json")
    bundle = load_bundle(copy)
    record = bundle.manifest.preprocessing["speaker_adaptation"]["file"]  # as if signed this way
    record["sha256"], record["size_bytes"] = sha256_file(path), path.stat().st_size
    with pytest.raises(ConfigError, match="labels .* are not the bundle's"):
        SpeakerAdaptation.from_bundle(bundle, AdaptationConfig(), tmp_path / "state")


def test_ser_adapter_cli_refuses_an_unfinished_run(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "edgewise", "train", "ser-adapter", str(tmp_path), "--data", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0
    assert "not a finished run (no model.safetensors)" in proc.stderr
    assert "Traceback" not in proc.stderr
