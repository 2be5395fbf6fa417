"""`edgewise bundle inspect|verify|sign|keygen` on an exported bundle."""

from __future__ import annotations

import json
import shutil

import pytest

from edgewise.bundle import load_bundle
from edgewise.cli import main

pytestmark = pytest.mark.slow  # they share the session's export


def test_inspect_summarizes_models_artifacts_and_parity(exported, capsys):
    folder, archive = exported
    for target in (folder, archive):
        assert main(["bundle", "inspect", str(target)]) == 0
        text = capsys.readouterr().out
        assert text.startswith("ser-tiny 1.0.0  task ser") and f"bundle:     {target}" in text
        assert "model classifier: features [batch, time, 64] float32 -> logits [batch, 4] float32" in text
        for stem in ("fp32", "fp16", "int8-dynamic", "int8-static"):
            assert f"models/ser.{stem}.onnx" in text
        assert text.count("passed, max|diff|") == 4 and "not signed" in text
        assert "integrity:  all 5 artifact(s) match" in text and "FAILED" not in text
        vad = next(line for line in text.splitlines() if "models/vad.silero.onnx" in line)
        assert vad.endswith("not checked (a third-party model shipped unchanged; not derived from the run)")
    assert main(["bundle", "inspect", str(folder), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["name"] == "ser-tiny"


def test_verify_accepts_the_bundle_and_detects_a_tampered_artifact(exported, tmp_path, capsys):
    folder, archive = exported
    assert main(["bundle", "verify", str(folder)]) == 0
    assert main(["bundle", "verify", str(archive)]) == 0
    assert "5 artifact(s) match their sha256" in capsys.readouterr().out
    copy = tmp_path / folder.name
    shutil.copytree(folder, copy)
    target = copy / "models" / "ser.int8-dynamic.onnx"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one flipped byte
    target.write_bytes(bytes(data))
    assert main(["bundle", "verify", str(copy)]) == 2
    err = capsys.readouterr().err
    assert "sha256 mismatch" in err and "ser.int8-dynamic.onnx" in err and "Traceback" not in err


def test_keygen_sign_and_verify_with_the_right_and_the_wrong_key(exported, tmp_path, capsys):
    folder, _ = exported
    copy = tmp_path / "signed" / folder.name
    shutil.copytree(folder, copy)
    shutil.copy(folder.with_name(folder.name + ".tar.gz"), copy.with_name(folder.name + ".tar.gz"))
    assert main(["bundle", "keygen", "--out", str(tmp_path / "k" / "release")]) == 0
    assert main(["bundle", "keygen", "--out", str(tmp_path / "k" / "other")]) == 0
    assert main(["bundle", "keygen", "--out", str(tmp_path / "k" / "release")]) == 2  # never overwrite a key
    assert (tmp_path / "k" / "release.key").stat().st_mode & 0o077 == 0
    assert main(["bundle", "sign", str(copy), "--key", str(tmp_path / "k" / "release.key")]) == 0
    assert "rewrote" in capsys.readouterr().out
    archive = copy.with_name(folder.name + ".tar.gz")
    for target in (copy, archive):  # the archive was rewritten with the signature in it
        assert main(["bundle", "verify", str(target), "--key", str(tmp_path / "k" / "release.pub")]) == 0
        assert main(["bundle", "verify", str(target), "--key", str(tmp_path / "k" / "other.pub")]) == 2
    assert "wrong key" in capsys.readouterr().err
    with load_bundle(archive, public_key=tmp_path / "k" / "release.pub") as bundle:
        assert bundle.signature_verified
    assert main(["bundle", "sign", str(archive), "--key", str(tmp_path / "k" / "release.key")]) == 2
