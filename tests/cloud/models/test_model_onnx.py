"""The merged tiny models export to ONNX with dynamic batch and time and match PyTorch."""

from __future__ import annotations

import pytest
import torch

from edgewise.cloud.models import ARCHS, HRFConfig, ModelConfig, build_model, reparameterize_model
from tests.conftest import require_module

require_module("onnx")
require_module("onnxscript")
ort = require_module("onnxruntime")

# torch.export warns about its own deprecated pytree API; nothing in this repo to fix.
pytestmark = pytest.mark.filterwarnings("ignore:.*LeafSpec.*:FutureWarning")


@pytest.mark.parametrize("arch", list(ARCHS))
def test_merged_model_exports_with_dynamic_batch_and_time(arch, tmp_path, randomize):
    model = randomize(build_model(ModelConfig(arch=arch, hrf=HRFConfig()))).eval()
    merged = reparameterize_model(model)
    path = tmp_path / f"{arch}.onnx"
    example = torch.randn(2, 157, 64)  # batch >= 2, or the exporter fixes the batch dim to 1
    dynamic = {"x": {0: torch.export.Dim("batch", max=256), 1: torch.export.Dim("time", min=16, max=8000)}}
    torch.onnx.export(merged, (example,), str(path), dynamo=True, dynamic_shapes=dynamic)

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    gen = torch.Generator().manual_seed(3)
    for batch, length in [(3, 101), (1, 37), (4, 299)]:
        x = torch.randn(batch, length, 64, generator=gen)
        with torch.no_grad():
            expected = model(x).numpy()  # the unmerged training-form model
        (logits,) = session.run(None, {input_name: x.numpy()})
        assert logits.shape == (batch, 4)
        torch.testing.assert_close(torch.from_numpy(logits), torch.from_numpy(expected), atol=1e-4, rtol=1e-3)
