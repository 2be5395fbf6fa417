"""edge-deploy with a TTS bundle: the task registry picks its roles, profile order and smoke test."""

from __future__ import annotations

import shutil

import pytest

from edgewise.bundle import load_bundle
from edgewise.devices import load_profile
from edgewise.edge.deploy.preflight import WrongRuntime, _runnable, check_runtime_match, task_roles

from .conftest import current_key, run_cli, state

pytestmark = pytest.mark.slow
KEY = "tts-tiny/1.0.0"


@pytest.fixture
def signed_tts(tmp_path, tts_bundle):
    from edgewise.bundle import generate_keypair, sign_manifest

    generate_keypair(tmp_path / "fleet.key", tmp_path / "fleet.pub")
    bundle = shutil.copytree(tts_bundle, tmp_path / "tts-tiny-1.0.0")
    sign_manifest(bundle, tmp_path / "fleet.key")
    return bundle, tmp_path / "fleet.pub"


def test_a_signed_voice_is_installed_spoken_once_and_made_current(capsys, tmp_path, signed_tts):
    bundle, pub = signed_tts
    root = tmp_path / "root"
    rc, out, err = run_cli(capsys, "--device", "local", "--root", root, bundle, "--key", pub)
    assert rc == 0, err
    # ONNX fp32 x 3 and int8 x 2 (the flow and the vocoder), TFLite fp32 and int8 x 2 (the same two)
    assert f"{KEY}: verified (9 artifacts, signature verified)" in out
    assert f"{KEY}: x86-local prefers onnx fp32 (models/tts_encoder.fp32.onnx)" in out
    # the smoke test of a voice says a sentence with all three graphs
    runs = next(line for line in out.splitlines() if ": runs here: " in line)
    for graph in ("tts_encoder.fp32.onnx", "tts_flow.int8-dynamic.tflite", "vocoder.int8-dynamic.tflite"):
        assert graph in runs
    assert "'Ready.' (" in runs and " s of audio) in " in runs
    assert current_key(root) == KEY and state(root)["last_good"] == KEY


def test_every_role_of_the_task_must_have_an_artifact_the_device_runs(tts_bundle):
    with load_bundle(tts_bundle) as bundle:
        assert task_roles(bundle) == ["tts_encoder", "tts_flow", "vocoder"]
        pairs = check_runtime_match(bundle, load_profile("rpi5"))
        # the Pi's tts order: TFLite int8 first, where the bundle has the graph (the encoder, the
        # first role, is ONNX fp32 in every voice)
        assert [choice.describe() for choice, _ in pairs] == ["onnx fp32"]
        flow = _runnable(bundle, load_profile("rpi5"), "tts_flow")
        assert [c.describe() for c, _ in flow] == [
            "tflite int8 (dynamic)",
            "onnx int8 (dynamic)",
            "tflite fp32",
            "onnx fp32",
        ]
        profile = load_profile("x86-local").model_copy(
            update={"task_runtimes": {"tts": [load_profile("rpi5").runtimes[0]]}}  # tflite int8 only
        )
        # the TFLite voice has no encoder of its own: a device that runs only TFLite cannot speak
        with pytest.raises(WrongRuntime, match="the bundle's 'tts_encoder' model has onnx fp32") as exc:
            check_runtime_match(bundle, profile)
        assert "runs tflite int8 (dynamic)" in str(exc.value)
