"""The reference sets export writes for the device's parity check (edgewise/export/reference.py)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from edgewise.edge.reference import read_reference
from edgewise.edge.windows import WindowSpec, run_windowed
from edgewise.export.reference import attach_references
from tests.conftest import require_module

torch = require_module("torch")

MELS = 4


class MeanLinear(torch.nn.Module):
    """(batch, time, 4) -> mean over time -> (batch, 3): cheap, and windowing changes its output."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(MELS, 3)

    def forward(self, x):
        return self.linear(x.mean(dim=1) + x[:, :1].mean(dim=1))


def _made(model, kind: str, tolerance: float, offset: float = 0.0, window: WindowSpec | None = None):
    """An exported artifact as the pipeline hands it over; its runner is the model (plus ``offset``)."""

    def runner_factory(path, threads, variant, win):
        def run(x):
            with torch.no_grad():
                out = model(torch.from_numpy(np.ascontiguousarray(x))).numpy() + offset
            return out

        if win is None:
            return run
        return lambda x: run_windowed(run, x, win)

    row = SimpleNamespace(
        manifest_format="tflite" if kind == "window" else "onnx",
        dynamic_shapes=kind != "window",
        runner=runner_factory,
    )
    extra = {"window": window.to_dict()} if window else {}
    parity = SimpleNamespace(allowed=tolerance, failures=[], device_reference=None)
    return SimpleNamespace(
        variant=SimpleNamespace(row=row, label=kind), path="unused", extra=extra, parity=parity
    )


def test_one_file_per_fitting_policy_and_a_miss_here_fails_the_gate(tmp_path):
    torch.manual_seed(0)
    model = MeanLinear().eval()
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal((1, n, MELS)).astype(np.float32) for n in (400, 260)]
    window = WindowSpec(frames=40, hop=20)
    made = [
        _made(model, "whole", 1e-4),
        _made(model, "whole", 1e-4, offset=0.5),  # an artifact whose kernels are off
        _made(model, "window", 1e-4, window=window),
    ]
    files = attach_references(model, inputs, made, tmp_path, window)
    assert sorted(files) == ["models/ser.reference.npz", "models/ser.reference.window-40-20.npz"]
    whole, windowed = (read_reference(files[k]) for k in sorted(files))
    assert [x.shape[1] for x in whole[0]] == [60, 100, 25] == made[0].extra["reference"]["frames"]
    with torch.no_grad():
        np.testing.assert_allclose(whole[1][2], model(torch.from_numpy(whole[0][2])).numpy()[0], atol=1e-6)
    assert np.abs(whole[1] - windowed[1]).max() > 1e-3  # the windowed expectation is another one
    assert made[0].extra["reference"]["path"] == made[1].extra["reference"]["path"]
    assert made[0].extra["reference"]["export_check"]["passed"] and made[0].parity.failures == []
    assert made[2].extra["reference"]["export_check"]["passed"]
    check = made[1].extra["reference"]["export_check"]
    assert not check["passed"] and check["max_abs_diff"] == pytest.approx(0.5, abs=1e-5)
    assert made[1].parity.failures == [
        "device reference set (models/ser.reference.npz): logits differ from the bundle's reference "
        "(models/ser.reference.npz, 3 inputs) by 0.5 > 0.0001, the artifact's tolerance"
    ]
