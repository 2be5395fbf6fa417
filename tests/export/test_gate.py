"""The parity gate refuses an artifact beyond tolerance: exit 2 and no bundle, unless --no-gate."""

from __future__ import annotations

import numpy as np
import pytest

from edgewise.bundle import load_bundle
from edgewise.cli import main
from edgewise.export.formats import Tolerance
from edgewise.export.parity import ReferenceSet, check_parity, format_report


@pytest.mark.slow
def test_an_impossible_tolerance_fails_the_export_and_leaves_nothing(tiny_run, tmp_path, capsys):
    out = tmp_path / "bundles"
    code = main(
        ["-q", "export", str(tiny_run), "--out", str(out), "--threads", "1", "--tolerance", "fp32=1e-12"]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "[FAIL] output 'logits': max |diff|" in err and "allowed 1e-12" in err
    assert "models/ser.fp32.onnx" in err and "no bundle was written" in err
    assert not out.exists() or not any(out.iterdir())  # no bundle, no archive, no temporary folder


@pytest.mark.slow
def test_no_gate_writes_the_failure_into_the_manifest_and_signs(tiny_run, tmp_path, capsys):
    key = tmp_path / "keys" / "release"
    assert main(["bundle", "keygen", "--out", str(key)]) == 0
    out = tmp_path / "bundles"
    args = ["-q", "export", str(tiny_run), "--out", str(out), "--threads", "1", "--version", "2.0.0-rc.1"]
    args += ["--no-gate", "--max-ua-drop", "fp32=0", "--tolerance", "fp32=1e-12", "--sign-key", f"{key}.key"]
    assert main(args) == 0
    bundle = load_bundle(out / "ser-tiny-2.0.0-rc.1", public_key=f"{key}.pub")
    (art,) = bundle.artifacts("classifier")
    assert art.parity["passed"] is False and art.parity["tolerance"] == 1e-12
    assert any("max |diff|" in f for f in art.parity["failures"])
    assert bundle.manifest.provenance["parity_gate"] == "off (--no-gate)"
    capsys.readouterr()
    assert main(["bundle", "verify", str(out / "ser-tiny-2.0.0-rc.1"), "--key", f"{key}.pub"]) == 0
    text = capsys.readouterr().out
    assert "signature: verified" in text and "failed parity gate: models/ser.fp32.onnx" in text


class _Scaled:
    """A stand-in runtime whose logits are the reference times a factor (and the wrong batch shape)."""

    def __init__(self, reference: ReferenceSet, factor: float, drop_batch: bool = False) -> None:
        self.lookup = {x.tobytes(): y for x, y in zip(reference.inputs, reference.logits)}
        self.reference, self.factor, self.drop_batch = reference, factor, drop_batch

    def __call__(self, x):
        if x.shape[0] > 1:
            out = self.reference.batch_logits * self.factor
            return out[:1] if self.drop_batch else out
        return self.lookup[x.tobytes()][None] * self.factor


def _reference() -> ReferenceSet:
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal((1, 20 + i, 8)).astype(np.float32) for i in range(8)]
    logits = np.eye(4, dtype=np.float32)[np.arange(8) % 4] * 2.0 - 0.5
    batch = np.concatenate([x[:, :19] for x in inputs[:3]])
    return ReferenceSet(inputs, np.arange(8) % 4, ("a", "b", "c", "d"), logits, batch, logits[:3] + 0.1)


def test_gate_reports_the_output_the_difference_and_the_tolerance():
    ref = _reference()
    ok = check_parity(_Scaled(ref, 1.0), ref, Tolerance(1e-4), artifact="m/ok.onnx", label="onnx fp32")
    assert ok.passed and ok.max_abs_diff == 0.0 and ok.metric == ok.reference_metric == 1.0
    off = check_parity(_Scaled(ref, 1.1), ref, Tolerance(0.01), artifact="m/off.onnx", label="onnx fp16")
    assert not off.passed and off.max_abs_diff == pytest.approx(0.15)
    assert off.top1_agreement == 1.0  # scaled logits keep their argmax: only the diff check fails
    flipped = check_parity(_Scaled(ref, -1.0), ref, Tolerance(10.0), artifact="m/neg.onnx", label="onnx int8")
    assert not flipped.passed and any("UA dropped" in f for f in flipped.failures)
    shape = check_parity(
        _Scaled(ref, 1.0, drop_batch=True), ref, Tolerance(1e-4), artifact="m/b.onnx", label="x"
    )
    assert (
        not shape.passed and shape.dynamic["max_abs_diff"] is None and shape.to_manifest()["passed"] is False
    )
    report = format_report([ok, off, flipped, shape])
    assert report.startswith("parity gate: 1 of 4 artifacts within tolerance")
    assert (
        "onnx fp16: m/off.onnx" in report
        and "[FAIL] output 'logits': max |diff| 0.15 (allowed 0.01" in report
    )
