"""Device parity for a voice: each TTS graph carries a graph reference set, checked on install.

The voice is the session's tts bundle (:func:`tests.conftest.tts_bundle`, ONNX and TFLite), whose
export attached the reference sets (:func:`edgewise.export.reference.attach_graph_references`).
Real onnxruntime and LiteRT, real installs and the real ``edge-deploy`` on this machine; the
altered bundles are re-signed with a real key.
"""

from __future__ import annotations

import json
import math
import platform
import shutil
from pathlib import Path

import numpy as np
import pytest

from edgewise.bundle import generate_keypair, load_bundle, sha256_file, sign_manifest
from edgewise.devices import RuntimeChoice, load_profile
from edgewise.edge.install import DeviceParityError, install_bundle
from edgewise.edge.reference import (
    DEVICE_PARITY,
    GRAPH_REFERENCE,
    GraphReferenceSet,
    OutputCheck,
    ReferenceSet,
    ReferenceSetError,
    check_artifacts,
    output_diff,
    read_graph_reference,
    write_graph_reference,
)

from .deploy.conftest import run_cli

ROLES = ("tts_encoder", "tts_flow", "vocoder")
FP32 = {role: f"models/{role}.fp32.onnx" for role in ROLES}
# the int8 voice quantizes the flow and the vocoder (its encoder is the fp32 graph)
INT8 = {role: f"models/{role}.int8-dynamic.onnx" for role in ("tts_flow", "vocoder")}
# the TFLite voice: the flow and the vocoder at a fixed length (its encoder is the ONNX fp32 graph)
TFLITE = {role: f"models/{role}.fp32.tflite" for role in ("tts_flow", "vocoder")}
TFLITE8 = {role: f"models/{role}.int8-dynamic.tflite" for role in ("tts_flow", "vocoder")}
ALL = [*FP32.values(), *INT8.values(), *TFLITE.values(), *TFLITE8.values()]


# --------------------------------------------------------------------------------------------------
# The file and the comparison (no bundle)


def test_a_graph_reference_file_keeps_names_dtypes_and_cases(tmp_path):
    cases = [
        {"ids": np.arange(7, dtype=np.int64)[None], "boundary": np.ones((1, 7), np.float32)},
        {"ids": np.arange(4, dtype=np.int64)[None], "boundary": np.zeros((1, 4), np.float32)},
    ]
    expected = [
        {"mu": np.full((1, n, 3), n, np.float32), "logd": np.zeros((1, n), np.float32)} for n in (7, 4)
    ]
    path = write_graph_reference(tmp_path / "r.npz", cases, expected)
    got_cases, got_expected = read_graph_reference(path)
    assert [list(c) for c in got_cases] == [["ids", "boundary"]] * 2
    assert got_cases[0]["ids"].dtype == np.int64 and got_cases[1]["ids"].tolist() == [[0, 1, 2, 3]]
    assert [e["mu"].shape for e in got_expected] == [(1, 7, 3), (1, 4, 3)]
    assert got_expected[1]["mu"][0, 0, 0] == 4
    # a single-input reference file is not a graph's, and garbage is neither
    np.savez(
        tmp_path / "ser.npz", input_0=np.zeros((1, 5, 4), np.float32), logits=np.zeros((1, 3), np.float32)
    )
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    for bad in ("ser.npz", "junk.npz"):
        with pytest.raises(ReferenceSetError, match=rf"{bad}: not a graph reference set"):
            read_graph_reference(tmp_path / bad)
    with pytest.raises(ValueError, match="same inputs and outputs"):
        write_graph_reference(tmp_path / "x.npz", cases, [expected[0], {"mu": expected[1]["mu"]}])


def test_a_circular_output_is_compared_on_the_circle():
    phase = np.array([3.1, -3.1, 0.5], np.float32)
    assert output_diff(phase + 2 * np.pi, phase, "circular") < 1e-5
    assert output_diff(phase + 2 * np.pi, phase, "abs") == pytest.approx(2 * np.pi, rel=1e-6)
    # pi - 0.04 and -(pi - 0.04) are 0.08 apart on the circle, not 6.2
    assert output_diff(np.array([np.pi - 0.04]), np.array([-np.pi + 0.04]), "circular") == pytest.approx(0.08)
    with pytest.raises(ValueError, match="compare 'relative'"):
        OutputCheck("phase", 0.1, "relative")


# --------------------------------------------------------------------------------------------------
# A voice bundle with graph reference sets


@pytest.fixture(scope="module")
def fleet_key(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tts-fleet-key")
    generate_keypair(folder / "fleet.key", folder / "fleet.pub")
    return folder / "fleet.key", folder / "fleet.pub"


@pytest.fixture(scope="module")
def voice(tts_bundle) -> Path:
    """The session's tts bundle: the export attached a graph reference set to every artifact."""
    with load_bundle(tts_bundle) as bundle:
        arts = sorted(a.path for a in bundle.artifacts())
        refs = {a.extra["reference"]["version"] for a in bundle.artifacts()}
    assert arts == sorted(ALL), f"the export now makes {arts}"
    assert refs == {GRAPH_REFERENCE}
    return tts_bundle


def copy_voice(voice: Path, dest: Path) -> Path:
    shutil.copytree(voice, dest)
    return dest


def alter_expected(bundle: Path, role: str, output: str, delta: float, key: Path) -> None:
    """Add ``delta`` to one expected output of a role's reference set, record the new file in the
    manifest and sign it again: a reference the device's kernels cannot meet."""
    rel = f"models/{role}.reference.npz"
    cases, expected = read_graph_reference(bundle / rel)
    for out in expected:
        out[output] = out[output] + delta
    write_graph_reference(bundle / rel, cases, expected)
    manifest = json.loads((bundle / "manifest.json").read_text())
    for art in manifest["models"][role]["artifacts"]:
        art["extra"]["reference"].update(
            sha256=sha256_file(bundle / rel), size_bytes=(bundle / rel).stat().st_size
        )
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    sign_manifest(bundle, key)


def edit_manifest(bundle: Path, key: Path, edit) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    edit(manifest)
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    sign_manifest(bundle, key)


@pytest.mark.slow
def test_installing_a_voice_checks_every_graph_output_here(voice, tmp_path, capsys):
    root = tmp_path / "root"
    rc, out, err = run_cli(capsys, "--device", "local", "--root", root, voice)
    assert rc == 0, err
    record = json.loads((root / "models" / "tts-tiny" / "1.0.0" / DEVICE_PARITY).read_text())
    assert record["verdict"] == "ok" and record["summary"] == f"{len(ALL)} passed"
    for path in ALL:
        result = record["artifacts"][path]
        assert result["status"] == "passed", result
        assert result["in_profile"] and result["machine"] == platform.machine()
        for name, o in result["outputs"].items():
            assert 0 <= o["max_abs_diff"] <= o["tolerance"] == result["tolerance"][name]
        worst = result["worst_output"]
        assert result["max_abs_diff"] == result["outputs"][worst]["max_abs_diff"]
        assert result["export"]["machine"] == platform.machine() and result["export"]["passed"]
        assert f"tts-tiny/1.0.0: device parity: {path} on {platform.machine()}: max |diff| on {worst} " in out
    vocoder = record["artifacts"][FP32["vocoder"]]
    assert set(vocoder["outputs"]) == {"log_mag", "phase"}
    assert vocoder["outputs"]["phase"]["compare"] == "circular"
    assert vocoder["outputs"]["log_mag"]["compare"] == "abs"
    assert record["artifacts"][FP32["tts_flow"]]["tolerance"] == {"v": 1e-3}  # fp32: GRAPH_ATOL
    assert record["artifacts"][INT8["tts_flow"]]["tolerance"]["v"] > 1e-3  # int8: measured
    assert record["artifacts"][TFLITE["tts_flow"]]["tolerance"] == {"v": 1e-3}  # padded and masked: exact
    assert "ai-edge-litert" in record["artifacts"][TFLITE["vocoder"]]["backend"]


@pytest.mark.slow
def test_a_graph_failing_its_reference_here_is_never_picked(voice, tmp_path, fleet_key):
    from edgewise.edge.pipelines.tts import TTSPipeline

    key, pub = fleet_key
    bundle = copy_voice(voice, tmp_path / "b")
    # 10x the fp32 tolerance; inside the int8 artifact's (its measured margin is at least 0.05)
    alter_expected(bundle, "tts_flow", "v", 0.01, key)
    profile = load_profile("x86-local").model_copy(  # the ONNX voice: fp32 first, then int8
        update={
            "task_runtimes": {
                "tts": [
                    RuntimeChoice(format="onnx", precision="fp32"),
                    RuntimeChoice(format="onnx", precision="int8", quant="dynamic"),
                ]
            }
        }
    )
    installed = install_bundle(tmp_path / "root", bundle, public_key=pub, profile=profile)
    record = json.loads((installed / DEVICE_PARITY).read_text())
    failed = record["artifacts"][FP32["tts_flow"]]
    assert failed["status"] == "failed" and failed["max_abs_diff"] > failed["tolerance"]["v"]
    assert "output v differs from the bundle's reference (models/tts_flow.reference.npz" in failed["reason"]
    assert record["artifacts"][INT8["tts_flow"]]["status"] == "passed"
    assert record["verdict"] == "ok"
    pipeline = TTSPipeline.from_bundle(installed, profile, public_key=pub)
    try:
        picked = {role: rt.artifact.path for role, rt in pipeline.runtimes.items()}
        assert picked == {
            "tts_encoder": FP32["tts_encoder"],
            "tts_flow": INT8["tts_flow"],
            "vocoder": FP32["vocoder"],
        }
        skipped = pipeline.runtimes["tts_flow"].skipped[0]
        assert skipped.startswith(
            f"onnx fp32 ({FP32['tts_flow']}): failed the device parity check at install"
        )
        assert f"max |diff| on v {failed['max_abs_diff']:.3g} > 0.001" in skipped
        audio = pipeline.synthesize("Ready.").audio
        assert audio.size > 0 and np.isfinite(audio).all()
    finally:
        pipeline.close()


@pytest.mark.slow
def test_when_every_artifact_of_a_graph_fails_here_the_voice_is_refused(voice, tmp_path, fleet_key, capsys):
    key, pub = fleet_key
    bundle = copy_voice(voice, tmp_path / "b")
    alter_expected(bundle, "vocoder", "log_mag", 5.0, key)
    root = tmp_path / "root"
    rc, out, err = run_cli(capsys, "--device", "local", "--root", root, "--key", pub, bundle)
    assert rc == 2
    assert (
        "tts-tiny/1.0.0 is refused: every artifact x86-local could run fails the device parity check" in err
    )
    assert (
        f"{FP32['vocoder']}: max |diff| on log_mag " in err
        and f"{INT8['vocoder']}: max |diff| on log_mag" in err
    )
    assert "tts_flow" not in err.split("is refused:")[1]  # the other graphs passed
    assert not (root / "models" / "tts-tiny" / "1.0.0").exists()
    with pytest.raises(DeviceParityError, match="every artifact this device could run"):
        install_bundle(tmp_path / "root2", bundle, public_key=pub)


@pytest.mark.slow
def test_the_vocoder_phase_is_graded_on_the_circle(voice, tmp_path, fleet_key):
    key, pub = fleet_key
    wrapped = copy_voice(voice, tmp_path / "wrapped")
    alter_expected(wrapped, "vocoder", "phase", 2 * math.pi, key)  # the same angles
    with load_bundle(wrapped, public_key=pub) as bundle:
        results = check_artifacts(bundle, load_profile("x86-local"))
    for path in (FP32["vocoder"], TFLITE["vocoder"]):
        assert results[path]["status"] == "passed"
        assert results[path]["outputs"]["phase"]["max_abs_diff"] < 1e-3
    off = copy_voice(voice, tmp_path / "off")
    alter_expected(off, "vocoder", "phase", 0.5, key)
    with load_bundle(off, public_key=pub) as bundle:
        results = check_artifacts(bundle, load_profile("x86-local"))
    for path in (FP32["vocoder"], INT8["vocoder"], TFLITE["vocoder"], TFLITE8["vocoder"]):
        result = results[path]
        assert result["status"] == "failed" and result["worst_output"] == "phase"
        assert result["outputs"]["phase"]["max_abs_diff"] == pytest.approx(0.5, abs=0.2)
        assert result["outputs"]["log_mag"]["passed"]
        assert "output phase differs" in result["reason"] and "(on the circle)" in result["reason"]


@pytest.mark.slow
def test_a_swapped_or_unreadable_reference_fails_the_artifact(voice, tmp_path, fleet_key):
    key, pub = fleet_key
    bundle = copy_voice(voice, tmp_path / "b")

    def swap(manifest):  # the vocoder fp32 artifact claims the flow's reference set
        arts = {a["path"]: a for m in manifest["models"].values() for a in m["artifacts"]}
        arts[FP32["vocoder"]]["extra"]["reference"] = arts[FP32["tts_flow"]]["extra"]["reference"]
        arts[INT8["tts_flow"]]["extra"]["reference"]["version"] = 3
        arts[INT8["vocoder"]]["extra"]["reference"]["outputs"][1]["compare"] = "spectral"

    edit_manifest(bundle, key, swap)
    with load_bundle(bundle, public_key=pub) as opened:
        results = check_artifacts(opened, load_profile("x86-local"))
        flow_art = next(a for a in opened.artifacts("tts_flow") if a.precision == "fp32")
        graph = GraphReferenceSet.from_artifact(opened, flow_art)
        with pytest.raises(
            ReferenceSetError, match="a graph reference set \\(version 2\\), not a single-input"
        ):
            ReferenceSet.from_artifact(opened, flow_art)  # what TensorRT engines are checked with
    assert graph.single_io is False and [o.name for o in graph.outputs] == ["v"]
    swapped = results[FP32["vocoder"]]
    assert swapped["status"] == "failed"
    assert "the graph takes ['mel'] -> ['log_mag', 'phase']" in swapped["reason"]
    assert "has inputs ['mu', 't', 'x'] and outputs ['v']" in swapped["reason"]
    newer = results[INT8["tts_flow"]]
    assert newer["status"] == "failed" and "version 3 is not one this edgewise reads" in newer["reason"]
    unknown = results[INT8["vocoder"]]
    assert unknown["status"] == "failed" and "compare 'spectral'" in unknown["reason"]
    assert results[FP32["tts_encoder"]]["status"] == "passed"


@pytest.mark.slow
def test_the_check_runs_a_voice_as_the_profile_runs_tts(voice, tmp_path):
    """A profile's ``task_runtimes.tts`` decides which artifacts it runs (not its SER list)."""
    profile = tmp_path / "tts-int8-only.yaml"
    profile.write_text(
        "name: tts-int8-only\ndescription: a test profile\narch: x86_64\nthreads: 1\n"
        f"memory_budget_mb: 512\ninstall_root: {tmp_path / 'root'}\n"
        "runtimes:\n  - {format: tflite, precision: fp32}\n"
        "task_runtimes:\n  tts:\n    - {format: onnx, precision: int8, quant: dynamic}\n"
    )
    with load_bundle(voice) as bundle:
        results = check_artifacts(bundle, load_profile(profile))
    for role in INT8:
        assert results[INT8[role]]["in_profile"] is True and results[INT8[role]]["status"] == "passed"
    for role in ROLES:
        assert results[FP32[role]]["in_profile"] is False
    assert results[INT8["vocoder"]]["reference"] == "models/vocoder.reference.npz"
    assert results[INT8["vocoder"]]["reference_sha256"] == sha256_file(voice / "models/vocoder.reference.npz")
