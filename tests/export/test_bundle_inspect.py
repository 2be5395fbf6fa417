"""``edgewise bundle inspect`` tells the truth: it checks every artifact's sha256 (non-zero exit,
naming each bad one) and shows parity as recorded, "not checked" for the copied VAD.

The bundles here are written by the real BundleWriter with placeholder model bytes: inspect reads
manifests and hashes files, it never runs a model.
"""

from __future__ import annotations

import hashlib
import json

import pytest

from edgewise.bundle import BundleWriter, load_bundle, sha256_file, write_archive
from edgewise.cli import main
from tests.core.test_bundle import CREATED, FEAT, LABELS, ONNX, ONNX_INT8, tensor

VAD = b"silero vad graph " * 40
# What edgewise.export.pipeline._add_vad records for the Silero model it copies unchanged.
VAD_PARITY = {"checked": False, "reason": "a third-party model shipped unchanged; not derived from the run"}


def write_bundle(out, *, int8_passed: bool = True):
    with BundleWriter(
        out,
        name="ser-tiny",
        version="1.0.0",
        task="ser",
        labels=LABELS,
        preprocessing={"log_mel": FEAT},
        created=CREATED,
    ) as w:
        w.add_model(
            "classifier",
            inputs=[tensor("features", ["batch", "time", 8])],
            outputs=[tensor("logits", ["batch", 4])],
        )
        w.add_artifact(
            "classifier",
            ONNX,
            "models/ser.fp32.onnx",
            format="onnx",
            precision="fp32",
            runtime="onnxruntime",
            parity={"max_abs_diff": 1e-6, "tolerance": 1e-4, "passed": True},
        )
        w.add_artifact(
            "classifier",
            ONNX_INT8,
            "models/ser.int8.onnx",
            format="onnx",
            precision="int8",
            runtime="onnxruntime",
            parity={"max_abs_diff": 0.45, "tolerance": 0.234, "passed": int8_passed},
        )
        w.add_model(
            "vad", inputs=[tensor("input", ["batch", "samples"])], outputs=[tensor("output", ["batch", 1])]
        )
        w.add_artifact(
            "vad",
            VAD,
            "models/vad.silero.onnx",
            format="onnx",
            precision="fp32",
            runtime="onnxruntime",
            parity=VAD_PARITY,
        )
        return w.finish()


def row(text: str, path: str) -> str:
    return next(line for line in text.splitlines() if path in line)


def test_a_good_bundle_passes_and_the_copied_vad_is_not_checked_rather_than_failed(tmp_path, capsys):
    folder = write_bundle(tmp_path / "out")
    for target in (folder, folder.with_name(folder.name + ".tar.gz")):
        assert main(["bundle", "inspect", str(target)]) == 0
        out = capsys.readouterr().out
        assert "integrity:  all 3 artifact(s) match their recorded size and sha256" in out
        assert row(out, "vad.silero.onnx").endswith(f"not checked ({VAD_PARITY['reason']})")
        assert row(out, "ser.int8.onnx").endswith("passed, max|diff| 0.45 <= 0.23")
        assert "FAILED" not in out


def test_a_failed_parity_gate_is_still_shown_as_failed(tmp_path, capsys):
    folder = write_bundle(tmp_path / "out", int8_passed=False)  # written with --no-gate
    assert main(["bundle", "inspect", str(folder)]) == 0  # the files match: that is inspect's check
    assert row(capsys.readouterr().out, "ser.int8.onnx").endswith("FAILED, max|diff| 0.45 <= 0.23")


def test_corrupted_artifacts_fail_inspect_naming_each_with_both_hashes(tmp_path, capsys):
    folder = write_bundle(tmp_path / "out")
    int8 = folder / "models" / "ser.int8.onnx"
    data = bytearray(int8.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one flipped byte
    int8.write_bytes(bytes(data))
    with (folder / "models" / "vad.silero.onnx").open("ab") as fh:
        fh.write(b"!")
    archive = write_archive(folder, tmp_path / "corrupt.tar.gz")
    for target, args in ((folder, []), (archive, []), (folder, ["--json"])):
        assert main(["bundle", "inspect", str(target), *args]) == 2
        captured = capsys.readouterr()
        err = captured.err
        assert f"{target}: 2 artifact(s) do not match the manifest" in err and "Traceback" not in err
        expected = hashlib.sha256(ONNX_INT8).hexdigest()
        assert (
            f"sha256 mismatch for artifact 'models/ser.int8.onnx' of model 'classifier': manifest says {expected}, file has {sha256_file(int8)}"
            in err
        )
        assert (
            f"size mismatch for artifact 'models/vad.silero.onnx' of model 'vad': manifest says {len(VAD)} bytes, file has {len(VAD) + 1}"
            in err
        )
        if args:
            assert json.loads(captured.out)["name"] == "ser-tiny"  # the manifest is still printed
        else:
            assert "integrity:  FAILED: 2 of 3 artifact(s) do not match the manifest" in captured.out


@pytest.mark.parametrize("kind", ["missing", "outside"])
def test_a_missing_or_escaping_artifact_fails_inspect(tmp_path, capsys, kind):
    folder = write_bundle(tmp_path / "out")
    target = folder / "models" / "ser.fp32.onnx"
    target.unlink()
    if kind == "outside":
        (tmp_path / "elsewhere.onnx").write_bytes(ONNX)
        target.symlink_to(tmp_path / "elsewhere.onnx")
    assert main(["bundle", "inspect", str(folder)]) == 2
    err = capsys.readouterr().err
    assert (
        "ser.fp32.onnx" in err and ("is missing" if kind == "missing" else "leads outside the bundle") in err
    )
    assert load_bundle(folder, check_artifacts=False).manifest.name == "ser-tiny"
