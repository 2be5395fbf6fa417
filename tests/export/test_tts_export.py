"""``edgewise export ACOUSTIC_RUN --vocoder VOCODER_RUN``: the tts bundle, its parity records, and
the gate that refuses to write one.

The bundle is the shared session fixture (:func:`tests.conftest.tts_bundle`: 30-step models, the
WER gate opened wide); one more export here forces a gate failure. Each export costs about a
minute on a 2-core machine, so there are no others.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from edgewise.cli import main

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

ROLES = ("tts_encoder", "tts_flow", "vocoder")


@pytest.fixture(scope="module")
def manifest(tts_bundle) -> dict:
    return json.loads((tts_bundle / "manifest.json").read_text())


def artifacts_of(manifest: dict, role: str) -> list[dict]:
    return manifest["models"][role]["artifacts"]


def onnx(arts: list[dict]) -> list[dict]:
    return [a for a in arts if a["format"] == "onnx"]


def test_the_bundle_is_a_tts_bundle_with_the_three_graphs(manifest):
    assert manifest["task"] == "tts"
    assert set(manifest["models"]) == set(ROLES)


@pytest.mark.parametrize("role", ROLES)
def test_each_graph_ships_each_format_fp32_and_int8_where_quantized_with_its_parity_record(
    manifest, tts_bundle, role
):
    from edgewise.export.tts import INT8_ROLES, TFLITE_ROLES

    arts = artifacts_of(manifest, role)
    formats = ["onnx", "tflite"] if role in TFLITE_ROLES else ["onnx"]
    precisions = ["fp32", "int8"] if role in INT8_ROLES else ["fp32"]
    assert sorted((a["format"], a["precision"]) for a in arts) == [
        (f, p) for f in formats for p in precisions
    ]
    for a in arts:
        assert (tts_bundle / a["path"]).is_file()
        parity = a["parity"]
        assert parity["checked"] is True and parity["passed"] is True
        assert isinstance(parity["max_abs_diff"], float) and parity["max_abs_diff"] >= 0
        e2e = parity["end_to_end"]
        assert e2e["wer"] >= 0 and "wer_increase" in e2e
        assert e2e["sentences"] >= 1


@pytest.mark.parametrize("role", ["tts_flow", "vocoder"])
def test_tflite_graphs_are_fixed_length_with_a_mask_and_match_pytorch(manifest, role):
    from edgewise.edge.pipelines.tts import fixed_graph_frames

    tts = manifest["preprocessing"]["tts"]
    frames = fixed_graph_frames(tts["decoder_window"], tts["vocoder_context"])
    for a in [a for a in artifacts_of(manifest, role) if a["format"] == "tflite"]:
        graph = a["extra"]["graph"]
        assert graph["frames"] == frames and graph["mask_input"] == "mask" and graph["inputs"][-1] == "mask"
        assert graph["context"] == (tts["decoder_window"] if role == "tts_flow" else tts["vocoder_context"])
        frame_inputs = ["x", "mu"] if role == "tts_flow" else ["mel"]
        assert a["fixed_shape"] == {n: [1, frames, tts["mel"]["n_mels"]] for n in frame_inputs}
        assert a["runtime"] == "litert" and a["path"].endswith(".tflite")
        if a["precision"] == "fp32":
            assert a["parity"]["max_abs_diff"] < 1e-3


def test_the_tflite_voice_runs_the_onnx_encoder_and_says_so(manifest):
    (flow,) = [
        a for a in artifacts_of(manifest, "tts_flow") if (a["format"], a["precision"]) == ("tflite", "int8")
    ]
    assert flow["parity"]["end_to_end"]["graphs"] == {
        "tts_encoder": "onnx fp32",
        "tts_flow": "tflite int8",
        "vocoder": "tflite int8",
    }


def test_the_int8_voice_runs_the_encoder_in_fp32_and_says_so(manifest):
    """The encoder sets the durations; the int8 voice keeps it fp32 and its gate record names the
    graph of each role it ran."""
    from edgewise.export.tts import INT8_ROLES

    assert "tts_encoder" not in INT8_ROLES
    (flow,) = [a for a in onnx(artifacts_of(manifest, "tts_flow")) if a["precision"] == "int8"]
    e2e = flow["parity"]["end_to_end"]
    assert e2e["graphs"] == {"tts_encoder": "onnx fp32", "tts_flow": "onnx int8", "vocoder": "onnx int8"}
    (fp32,) = [a for a in onnx(artifacts_of(manifest, "tts_flow")) if a["precision"] == "fp32"]
    # the same encoder graph: the int8 voice gets the fp32 voice's durations on every sentence
    assert e2e["same_durations"] == fp32["parity"]["end_to_end"]["same_durations"]


def test_unknown_int8_graphs_are_refused_before_any_work(tts_runs, tmp_path, capsys):
    acoustic, vocoder = tts_runs
    out = tmp_path / "out"
    cmd = ["export", str(acoustic), "--vocoder", str(vocoder), "--out", str(out), "--int8-graphs", "flow"]
    assert main(cmd) == 2
    err = capsys.readouterr().err
    assert "['flow']" in err and "tts_encoder, tts_flow, vocoder" in err and "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize("role", ROLES)
def test_fp32_graphs_match_pytorch_within_1e_3(manifest, role):
    for fp32 in [a for a in artifacts_of(manifest, role) if a["precision"] == "fp32"]:
        assert fp32["parity"]["max_abs_diff"] < 1e-3


def test_fp32_end_to_end_mel_matches_pytorch_with_the_same_noise(manifest):
    fp32s = [a for a in artifacts_of(manifest, "tts_flow") if a["precision"] == "fp32"]
    assert len(fp32s) == 2  # the ONNX and the TFLite voice
    for fp32 in fp32s:
        e2e = fp32["parity"]["end_to_end"]
        assert e2e["same_durations"] >= 1  # the device's rounded durations agreed on some sentence
        assert e2e["mel_mean_abs_diff"] is not None and e2e["mel_mean_abs_diff"] <= 0.05


def test_preprocessing_says_what_the_device_needs_to_speak(manifest):
    tts = manifest["preprocessing"]["tts"]
    assert tts["mel"]["sample_rate"] == 22050 and tts["mel"]["hop"] == 256
    assert len(tts["mel_mean"]) == len(tts["mel_std"]) == tts["mel"]["n_mels"]
    assert tts["phonemizer"]["backend"] in ("piper", "espeak-ng")
    assert "_" in tts["phoneme_id_map"] and len(tts["phoneme_id_map"]) > 50
    assert isinstance(tts["steps"], int) and tts["steps"] >= 1


def test_bundle_verify_accepts_the_tts_bundle(tts_bundle, capsys):
    assert main(["bundle", "verify", str(tts_bundle)]) == 0
    assert main(["bundle", "verify", str(tts_bundle.with_name(tts_bundle.name + ".tar.gz"))]) == 0


def test_a_tts_run_without_its_vocoder_is_refused_naming_vocoder(tts_runs, tmp_path, capsys):
    acoustic, _ = tts_runs
    assert main(["export", str(acoustic), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--vocoder" in err and str(acoustic) in err
    assert list(tmp_path.iterdir()) == []


def test_a_vocoder_run_alone_is_refused_saying_to_export_the_acoustic_run(tts_runs, tmp_path, capsys):
    _, vocoder = tts_runs
    assert main(["export", str(vocoder), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "vocoder run" in err and "ACOUSTIC_RUN --vocoder" in err
    assert list(tmp_path.iterdir()) == []


def test_a_run_whose_corpus_is_gone_is_refused_pointing_at_data(tts_runs, tmp_path, capsys):
    acoustic, vocoder = tts_runs
    moved = tmp_path / "moved-run"
    shutil.copytree(acoustic, moved, ignore=shutil.ignore_patterns("checkpoints"))
    info = json.loads((moved / "model.json").read_text())
    info["provenance"]["corpus"] = str(tmp_path / "gone")
    (moved / "model.json").write_text(json.dumps(info))
    out = tmp_path / "out"
    assert main(["export", str(moved), "--vocoder", str(vocoder), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "gone") in err and "--data" in err and "Traceback" not in err
    assert not out.exists() or list(out.iterdir()) == []


def test_reference_noise_is_extended_when_the_device_durations_are_longer():
    from edgewise.export.tts import _fit

    noise = np.ones((10, 4), np.float32)
    assert _fit(noise, 8) is noise
    longer = _fit(noise, 25)
    assert longer.shape == (25, 4) and longer.dtype == np.float32
    np.testing.assert_array_equal(longer[:10], noise)  # the frames the reference used are kept


def test_a_failed_gate_writes_no_bundle_and_names_the_graphs(tts_runs, tmp_path, monkeypatch, capsys):
    """The gate cannot be made to fail honestly in a test (a WER increase of 0 may pass by chance),
    so its tolerance is tightened to zero in-process: every fp32 graph then fails the gate."""
    import edgewise.export.tts as tts_export

    monkeypatch.setattr(tts_export, "GRAPH_ATOL", {"fp32": 0.0, "int8": None})
    acoustic, vocoder = tts_runs
    out = tmp_path / "out"
    cmd = ["-q", "export", str(acoustic), "--vocoder", str(vocoder), "--out", str(out)]
    cmd += ["--precision", "fp32", "--wer-sentences", "2", "--max-wer-increase", "100", "--threads", "1"]
    assert main(cmd) == 2
    err = capsys.readouterr().err
    assert "export refused" in err and "no bundle was written" in err
    assert "end to end not checked" in err  # a graph failure stops before the costly WER check
    for role in ROLES:
        assert f"{role} fp32: max |diff|" in err
    assert "Traceback" not in err
    assert not out.exists() or list(out.iterdir()) == []


@pytest.mark.parametrize("role", ROLES)
def test_every_artifact_carries_its_device_reference_set(manifest, tts_bundle, role):
    from edgewise.bundle import sha256_file

    for a in artifacts_of(manifest, role):
        ref = a["extra"]["reference"]
        assert ref["version"] == 2 and ref["path"] == f"models/{role}.reference.npz"
        assert sha256_file(tts_bundle / ref["path"]) == ref["sha256"]
        assert ref["export_check"]["passed"] is True
