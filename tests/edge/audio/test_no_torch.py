"""Running the Silero VAD on a device must not pull in torch (nor the silero_vad package, whose
__init__ imports torch). That no device module imports torch or the device libraries on import
is checked for every module in tests/edge/test_no_torch.py."""

from tests.edge.audio.conftest import run_python

USE_SILERO = """
import sys
import numpy as np
from edgewise.edge.audio import build_vad, find_silero_vad_onnx
assert find_silero_vad_onnx() is not None, 'silero-vad not installed'
vad = build_vad('silero')
assert type(vad).__name__ == 'SileroVAD', type(vad)
vad.probabilities(np.zeros(16000, dtype=np.float32))
print(sorted(m for m in ('torch', 'silero_vad') if m in sys.modules))
"""


def test_running_the_silero_vad_does_not_import_torch_or_the_silero_package(silero_onnx):
    result = run_python(USE_SILERO)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", result.stdout


def test_the_check_can_fail(silero_onnx):
    # Guards the test above: importing the pip package's module does load torch.
    result = run_python("import sys, silero_vad; print('torch' in sys.modules)")
    assert result.returncode == 0 and result.stdout.strip() == "True", result.stdout + result.stderr
